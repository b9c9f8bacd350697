/*
 * codec_v1.c - KServe v1 bodies <-> DLPack tensors: {"instances": [...]} in, whose
 * values take their dtypes from the model's inputs (bt_v1_hint), and {"predictions":
 * [...]} out. The leaf rules it shares with v2 are in codec_leaf.c.
 */
#include "runtime/tensor.h"
#include "serving/codec_leaf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the request */

/* Shape of the first element path of v (descending into first elements). */
static int infer_shape(const cJSON *v, int64_t *shape, int *ndim, const char *what, bt_error *err)
{
    *ndim = 0;
    while (bt_json_type(v) == cJSON_Array) {
        if (*ndim >= BT_CODEC_MAX_NDIM - 1)
            return bt_error_set(err, BT_ERR_VALUE, "%s is nested deeper than %d levels", what,
                                BT_CODEC_MAX_NDIM - 1);
        size_t n = bt_json_size(v);
        shape[(*ndim)++] = (int64_t)n;
        if (n == 0)
            break;
        v = v->child;
    }
    return 0;
}

/* Checks v is a rectangular array of the given shape (dims depth..ndim) with valid
 * leaves. A list of the wrong length is reported as ragged even when an element before
 * the end is also wrong, as when lengths were compared first. */
static int check_rect(const cJSON *v, const int64_t *shape, int ndim, int depth, const leaf_rule *r,
                      bt_error *err)
{
    int64_t n = 0;
    if (depth == ndim) {
        if (bt_json_type(v) == cJSON_Array)
            return bt_leaf_ragged(r, err);
        cJSON one = bt_leaf_alone(v);
        return bt_leaf_check_run(&one, r, depth, 1, &n, err);
    }
    if (bt_json_type(v) != cJSON_Array)
        return bt_leaf_ragged(r, err);
    int rc = 0;
    if (depth == ndim - 1) {
        rc = bt_leaf_check_run(v->child, r, depth + 1, 1, &n, err); /* a list here is ragged */
    } else {
        for (const cJSON *c = v->child; c && rc == 0; c = c->next, n++)
            rc = check_rect(c, shape, ndim, depth + 1, r, err);
    }
    if ((rc != 0 || n != shape[depth]) && (int64_t)bt_json_size(v) != shape[depth])
        return bt_leaf_ragged(r, err);
    return rc;
}

/* Instance i's value for input hint h: the instance itself, or its member named after
 * the input when instances are keyed (NULL with err set when absent or duplicated). */
static const cJSON *instance_value(const cJSON *inst, size_t i, int keyed, const char *name,
                                   bt_error *err)
{
    if (!keyed)
        return inst;
    char where[64];
    snprintf(where, sizeof where, "instances[%zu]", i);
    const cJSON *v;
    if (bt_codec_get_key(inst, name, where, &v, err) != 0)
        return NULL;
    if (!v)
        bt_error_set(err, BT_ERR_VALUE, "instances[%zu] has no input '%.64s'", i, name);
    return v;
}

/* Checks keyed instances: every one an object, every key one of the model's inputs. */
static int v1_check_keys(const cJSON *inst, const bt_v1_hint *hints, size_t n_hints, bt_error *err)
{
    size_t i = 0;
    for (const cJSON *o = inst->child; o; o = o->next, i++) {
        if (bt_json_type(o) != cJSON_Object)
            return bt_error_set(err, BT_ERR_VALUE,
                                "instances[%zu] is %s but instances[0] is an object", i,
                                bt_json_kind(o));
        for (const cJSON *m = o->child; m; m = m->next) {
            size_t h = 0;
            while (h < n_hints && strcmp(hints[h].name, m->string) != 0)
                h++;
            if (h < n_hints)
                continue;
            if (!bt_json_utf8_valid(m->string))
                return bt_error_set(err, BT_ERR_VALUE,
                                    "instances[%zu] has a key that is not valid UTF-8", i);
            return bt_error_set(err, BT_ERR_VALUE, "instances[%zu] has unknown input '%.64s'", i,
                                m->string);
        }
    }
    return 0;
}

/* The shape of input name's tensor: the number of instances, then the shape of its value
 * in the first instance, which every instance's value is checked against (rule). */
static int v1_input_shape(const cJSON *inst, size_t n_inst, int keyed, const char *name,
                          const leaf_rule *rule, int64_t *shape, int *ndim, bt_error *err)
{
    const cJSON *first = instance_value(inst->child, 0, keyed, name, err);
    if (!first)
        return -1;
    shape[0] = (int64_t)n_inst;
    if (infer_shape(first, shape + 1, ndim, rule->what, err) != 0)
        return -1;
    size_t i = 0;
    for (const cJSON *o = inst->child; o; o = o->next, i++) {
        const cJSON *v = instance_value(o, i, keyed, name, err);
        if (!v || check_rect(v, shape + 1, *ndim, 0, rule, err) != 0)
            return -1;
    }
    return 0;
}

/* The tensor of the model input hint describes: its value in every instance, stacked
 * along a leading dimension; FP32 unless the hint gives a dtype the protocol carries. */
static int v1_input_tensor(const cJSON *inst, size_t n_inst, int keyed, const bt_v1_hint *hint,
                           DLManagedTensor **out, bt_error *err)
{
    char what[160];
    snprintf(what, sizeof what, "input '%.64s'", hint->name);
    DLDataType dt = {kDLFloat, 32, 1};
    if (hint->has_dtype && bt_codec_datatype_name(hint->dtype))
        dt = hint->dtype;
    leaf_rule rule;
    bt_leaf_rule_init(&rule, dt, what);
    int64_t shape[BT_CODEC_MAX_NDIM];
    int ndim;
    if (v1_input_shape(inst, n_inst, keyed, hint->name, &rule, shape, &ndim, err) != 0)
        return -1;
    DLManagedTensor *t = bt_tensor_new(dt, ndim + 1, shape, err);
    if (!t)
        return -1;
    store_fn store = bt_leaf_store_for(dt);
    char *dst = t->dl_tensor.data;
    size_t i = 0;
    for (const cJSON *o = inst->child; o; o = o->next, i++) {
        const cJSON *v = instance_value(o, i, keyed, hint->name, err);
        if (!v) { /* cannot happen: found by the check above */
            bt_codec_tensor_release(t);
            return -1;
        }
        cJSON one = bt_leaf_alone(v);
        dst = store(&one, dst);
    }
    *out = t;
    return 0;
}

int bt_codec_parse_v1(const char *body, size_t len, const bt_v1_hint *hints, size_t n_hints,
                      bt_infer_request **out, bt_error *err)
{
    *out = NULL;
    cJSON *root = bt_codec_parse_body(body, len, err);
    if (!root)
        return -1;
    bt_infer_request *req = NULL;
    int rc = -1;
    const cJSON *inst = NULL;
    if (bt_json_type(root) == cJSON_Object &&
        bt_codec_get_key(root, "instances", BODY, &inst, err) != 0)
        goto done;
    if (bt_json_type(inst) != cJSON_Array || !inst->child) {
        bt_error_set(err, BT_ERR_VALUE,
                     "request body must be {\"instances\": [...]} with at "
                     "least one instance");
        goto done;
    }
    if (n_hints == 0 || n_hints > BT_CODEC_MAX_TENSORS) {
        bt_error_set(err, BT_ERR_VALUE, "the model's inputs are unknown");
        goto done;
    }
    size_t n_inst = bt_json_size(inst);
    int keyed = bt_json_type(inst->child) == cJSON_Object;
    if (!keyed && n_hints != 1) {
        bt_error_set(err, BT_ERR_VALUE,
                     "the model takes %zu inputs: send each instance as an object keyed by "
                     "input name",
                     n_hints);
        goto done;
    }
    if (keyed && v1_check_keys(inst, hints, n_hints, err) != 0)
        goto done;
    req = bt_codec_request_new(err);
    if (!req)
        goto done;
    req->inputs = calloc(n_hints, sizeof *req->inputs);
    if (!req->inputs) {
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t h = 0; h < n_hints; h++) {
        if (v1_input_tensor(inst, n_inst, keyed, &hints[h], &req->inputs[h].tensor, err) != 0)
            goto done;
        req->inputs[h].name = bt_codec_dup_str(hints[h].name, err);
        req->n_inputs = h + 1;
        if (!req->inputs[h].name)
            goto done;
    }
    rc = 0;
    *out = req;
    req = NULL;
done:
    bt_infer_request_free(req);
    bt_json_release(root);
    return rc;
}

/* ------------------------------------------------------------------ the response */

/* Writes the sub-array of t at dims [dim..) starting at row-major position *pos. */
static void append_nested(bt_buf *b, const DLTensor *t, int dim, int64_t *pos, int contig)
{
    size_t esize = t->dtype.bits / 8u;
    if (dim == t->ndim) {
        bt_codec_append_elem(b, bt_codec_elem_at(t, *pos, contig, esize), t->dtype);
        (*pos)++;
        return;
    }
    bt_buf_append(b, "[", 1);
    for (int64_t i = 0; i < t->shape[dim]; i++) {
        if (i)
            bt_buf_append(b, ",", 1);
        append_nested(b, t, dim + 1, pos, contig);
    }
    bt_buf_append(b, "]", 1);
}

/* The JSON lists append_nested writes for all rows of t (INT64_MAX past int64). An
 * empty output can still have huge dimensions, [1e13, 0] say: rows of empty lists that
 * cost nothing to hold and hours to write. */
static int64_t nested_lists(const DLTensor *t)
{
    int64_t total = 0, prod = 1;
    for (int d = 0; d + 1 < t->ndim && prod > 0; d++)
        if (__builtin_mul_overflow(prod, t->shape[d], &prod) ||
            __builtin_add_overflow(total, prod, &total))
            return INT64_MAX;
    return total;
}

int bt_codec_encode_v1(bt_buf *out, const bt_output *outputs, size_t n, bt_error *err)
{
    if (n == 0)
        return bt_error_set(err, BT_ERR_MODEL, "the model returned no outputs");
    for (size_t i = 0; i < n; i++) {
        if (bt_codec_check_output(&outputs[i], err) != 0)
            return -1;
        const DLTensor *t = outputs[i].tensor;
        if (t->ndim < 1 || t->shape[0] != outputs[0].tensor->shape[0] ||
            outputs[0].tensor->ndim < 1)
            return bt_error_set(err, BT_ERR_MODEL,
                                "output '%.64s' has no leading dimension matching the instances",
                                outputs[i].name);
        /* Each level of nesting takes at most one list per number, so only zero-sized
         * dimensions can ask for more than numel * (ndim - 1) lists. */
        int64_t lists = nested_lists(t), levels = t->ndim > 1 ? t->ndim - 1 : 1;
        if (lists > BT_CODEC_MAX_V1_EMPTY_LISTS &&
            (lists - BT_CODEC_MAX_V1_EMPTY_LISTS) / levels > bt_numel(t)) {
            char shape[256];
            return bt_error_set(
                err, BT_ERR_VALUE, /* the client can ask through v2 */
                "output '%.64s' of shape %s holds %lld numbers but would take "
                "%s%lld nested JSON lists; ask for it through the v2 protocol, "
                "which sends it flat",
                outputs[i].name, bt_shape_str(shape, sizeof shape, t->shape, t->ndim),
                (long long)bt_numel(t), lists == INT64_MAX ? "over " : "", (long long)lists);
        }
    }
    int64_t rows = outputs[0].tensor->shape[0];
    bt_buf_puts(out, "{\"predictions\":[");
    if (n == 1) {
        int64_t pos = 0;
        const DLTensor *t = outputs[0].tensor;
        int contig = bt_is_contiguous(t);
        for (int64_t r = 0; r < rows; r++) {
            if (r)
                bt_buf_append(out, ",", 1);
            append_nested(out, t, 1, &pos, contig);
        }
    } else {
        for (int64_t r = 0; r < rows; r++) {
            bt_buf_puts(out, r ? ",{" : "{");
            for (size_t i = 0; i < n; i++) {
                const DLTensor *t = outputs[i].tensor;
                int64_t pos = r * (bt_numel(t) / rows);
                if (i)
                    bt_buf_append(out, ",", 1);
                bt_buf_json_string(out, outputs[i].name);
                bt_buf_append(out, ":", 1);
                append_nested(out, t, 1, &pos, bt_is_contiguous(t));
            }
            bt_buf_append(out, "}", 1);
        }
    }
    bt_buf_puts(out, "]}");
    if (out->oom)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory encoding the response");
    return 0;
}
