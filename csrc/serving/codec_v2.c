/*
 * codec_v2.c - the Open Inference Protocol v2 body <-> DLPack tensors: an infer request
 * (JSON tensors, or the binary tensor data extension after an
 * Inference-Header-Content-Length header) and the infer response. The leaf rules it
 * shares with v1 are in codec_leaf.c.
 */
#include "runtime/tensor.h"
#include "serving/codec_leaf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* BF16 travels only on the wire: the shim's dtype table has no bfloat16, so a BF16 input
 * becomes float32 (exact: bfloat16 is float32's upper half) before it meets the model. */
#define BF16_NAME "BF16"

static void bf16_to_float32(const char *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        uint32_t x = (uint32_t)h << 16;
        memcpy(&dst[i], &x, 4);
    }
}

/* ------------------------------------------------------------------ parameters, outputs */

/* The top-level "parameters": binary_data_output. */
static int parse_v2_parameters(const cJSON *root, bt_infer_request *req, bt_error *err)
{
    const cJSON *params, *bdo;
    if (bt_codec_get_key(root, "parameters", BODY, &params, err) != 0)
        return -1;
    if (!params)
        return 0;
    if (bt_json_type(params) != cJSON_Object)
        return bt_error_set(err, BT_ERR_TYPE, "'parameters' must be an object, got %s",
                            bt_json_kind(params));
    if (bt_codec_get_key(params, "binary_data_output", "'parameters'", &bdo, err) != 0)
        return -1;
    if (bdo) {
        if (!cJSON_IsBool(bdo))
            return bt_error_set(err, BT_ERR_TYPE,
                                "parameters.binary_data_output must be true or false, got %s",
                                bt_json_kind(bdo));
        req->binary_data_output = cJSON_IsTrue(bdo);
    }
    return 0;
}

/* Parses element i of "outputs" (its name and parameters.binary_data) into
 * req->outputs[i]. */
static int parse_v2_output(const cJSON *o, size_t i, bt_infer_request *req, bt_error *err)
{
    char where[64];
    if (bt_json_type(o) != cJSON_Object)
        return bt_error_set(err, BT_ERR_TYPE, "outputs[%zu] must be an object, got %s", i,
                            bt_json_kind(o));
    snprintf(where, sizeof where, "outputs[%zu]", i);
    const cJSON *name, *op;
    if (bt_codec_get_key(o, "name", where, &name, err) != 0)
        return -1;
    if (bt_json_type(name) != cJSON_String)
        return bt_error_set(err, BT_ERR_VALUE, "outputs[%zu] needs a string 'name'", i);
    if (!bt_json_utf8_valid(name->valuestring))
        return bt_error_set(err, BT_ERR_VALUE, "outputs[%zu].name is not valid UTF-8", i);
    req->outputs[i].binary = -1;
    if (bt_codec_get_key(o, "parameters", where, &op, err) != 0)
        return -1;
    if (op) {
        if (bt_json_type(op) != cJSON_Object)
            return bt_error_set(err, BT_ERR_TYPE,
                                "outputs[%zu].parameters must be an object, got %s", i,
                                bt_json_kind(op));
        snprintf(where, sizeof where, "outputs[%zu].parameters", i);
        const cJSON *bd;
        if (bt_codec_get_key(op, "binary_data", where, &bd, err) != 0)
            return -1;
        if (bd) {
            if (!cJSON_IsBool(bd))
                return bt_error_set(err, BT_ERR_TYPE,
                                    "outputs[%zu].parameters.binary_data must be true or "
                                    "false, got %s",
                                    i, bt_json_kind(bd));
            req->outputs[i].binary = cJSON_IsTrue(bd);
        }
    }
    req->outputs[i].name = bt_codec_dup_str(name->valuestring, err);
    if (!req->outputs[i].name)
        return -1;
    req->n_outputs = i + 1;
    return 0;
}

/* Parses the "outputs" list and top-level "parameters" shared by v2 requests. */
static int parse_v2_outputs(const cJSON *root, bt_infer_request *req, bt_error *err)
{
    const cJSON *outs;
    if (parse_v2_parameters(root, req, err) != 0 ||
        bt_codec_get_key(root, "outputs", BODY, &outs, err) != 0)
        return -1;
    if (!outs)
        return 0;
    if (bt_json_type(outs) != cJSON_Array)
        return bt_error_set(err, BT_ERR_TYPE, "'outputs' must be a list, got %s",
                            bt_json_kind(outs));
    size_t n = bt_json_size(outs);
    if (n > BT_CODEC_MAX_TENSORS)
        return bt_error_set(err, BT_ERR_VALUE, "'outputs' lists %zu tensors; at most %d allowed", n,
                            BT_CODEC_MAX_TENSORS);
    if (n == 0)
        return 0;
    req->outputs = calloc(n, sizeof *req->outputs);
    if (!req->outputs)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    size_t i = 0;
    for (const cJSON *o = outs->child; o; o = o->next, i++)
        if (parse_v2_output(o, i, req, err) != 0)
            return -1;
    return 0;
}

/* ------------------------------------------------------------------ inputs */

/* A shape entry or byte count: 0 with *out set when v is an integral number in
 * [0, 2^53); otherwise -1 and *why says what is wrong ("a string", "1.5", ...). */
static int json_size_value(const cJSON *v, int64_t *out, char *why, size_t why_size)
{
    if (bt_json_type(v) != cJSON_Number) {
        snprintf(why, why_size, "%s", bt_json_kind(v));
        return -1;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) {
        snprintf(why, why_size, "%g", d);
        return -1;
    }
    if (d < 0) {
        snprintf(why, why_size, "a negative integer");
        return -1;
    }
    if (d >= JSON_EXACT_LIMIT) {
        snprintf(why, why_size,
                 "%.0f, which is not below 2^53 (the largest integer a JSON "
                 "number carries exactly)",
                 d);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

/* What the header fields of one element of "inputs" declare: its name, datatype and
 * shape, checked before any of its data is looked at. */
typedef struct v2_input_decl {
    char what[160];       /* "input 'x'", for messages */
    const char *name;     /* in the request's JSON */
    const char *datatype; /* as sent ("BF16" included), for messages */
    DLDataType dt;        /* what the tensor holds: FP32 for BF16 */
    int bf16;             /* BF16 on the wire */
    size_t ndim;
    int64_t shape[BT_CODEC_MAX_NDIM];
    int64_t numel; /* wrapped when overflow is set */
    int overflow;  /* the shape has more than INT64_MAX elements */
} v2_input_decl;

/* The input's "name": a UTF-8 string that no earlier input has. */
static int v2_input_name(const cJSON *in, size_t i, const char *where, const bt_infer_request *req,
                         v2_input_decl *d, bt_error *err)
{
    const cJSON *jname;
    if (bt_codec_get_key(in, "name", where, &jname, err) != 0)
        return -1;
    if (bt_json_type(jname) != cJSON_String)
        return bt_error_set(err, BT_ERR_VALUE, "inputs[%zu] needs a string 'name'%s", i,
                            jname ? ", got another type" : "");
    d->name = jname->valuestring;
    if (!bt_json_utf8_valid(d->name))
        return bt_error_set(err, BT_ERR_VALUE, "inputs[%zu].name is not valid UTF-8", i);
    for (size_t k = 0; k < i; k++)
        if (strcmp(req->inputs[k].name, d->name) == 0)
            return bt_error_set(err, BT_ERR_VALUE, "input '%.64s' appears twice", d->name);
    snprintf(d->what, sizeof d->what, "input '%.64s'", d->name);
    return 0;
}

/* The input's "datatype": a supported one, or BF16 (held as FP32). */
static int v2_input_datatype(const cJSON *in, const char *where, v2_input_decl *d, bt_error *err)
{
    const cJSON *jdt;
    if (bt_codec_get_key(in, "datatype", where, &jdt, err) != 0)
        return -1;
    if (bt_json_type(jdt) != cJSON_String)
        return bt_error_set(err, BT_ERR_VALUE, "%s needs a string 'datatype' (one of %s)", d->what,
                            SUPPORTED_DATATYPES);
    if (!bt_json_utf8_valid(jdt->valuestring))
        return bt_error_set(err, BT_ERR_VALUE, "%s: 'datatype' is not valid UTF-8", d->what);
    d->datatype = jdt->valuestring;
    d->bf16 = strcmp(d->datatype, BF16_NAME) == 0;
    if (d->bf16) {
        d->dt.code = kDLFloat;
        d->dt.bits = 32;
        d->dt.lanes = 1;
    } else if (bt_codec_datatype_parse(d->datatype, &d->dt, err) != 0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        return bt_error_set(err, BT_ERR_TYPE, "%s: %s", d->what, msg);
    }
    return 0;
}

/* The input's "shape": at most BT_CODEC_MAX_NDIM sizes, each an integer in [0, 2^53).
 * Their product may overflow (d->overflow); the data then cannot match it. */
static int v2_input_shape(const cJSON *in, const char *where, v2_input_decl *d, bt_error *err)
{
    const cJSON *jshape;
    if (bt_codec_get_key(in, "shape", where, &jshape, err) != 0)
        return -1;
    if (bt_json_type(jshape) != cJSON_Array)
        return bt_error_set(err, BT_ERR_VALUE, "%s needs a 'shape' list of non-negative integers",
                            d->what);
    d->ndim = bt_json_size(jshape);
    if (d->ndim > BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_VALUE, "%s: shape has %zu dimensions; at most %d allowed",
                            d->what, d->ndim, BT_CODEC_MAX_NDIM);
    d->numel = 1;
    d->overflow = 0;
    size_t k = 0;
    for (const cJSON *e = jshape->child; e; e = e->next, k++) {
        char why[128];
        if (json_size_value(e, &d->shape[k], why, sizeof why) != 0)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: shape[%zu] must be a non-negative integer, got %s", d->what, k,
                                why);
        if (__builtin_mul_overflow(d->numel, d->shape[k], &d->numel))
            d->overflow = 1;
    }
    return 0;
}

/* The tensor of an input sent as binary tensor data: the parameters.binary_data_size
 * bytes at bin + *bin_off, which must be exactly what the shape and datatype need.
 * Advances *bin_off past them. */
static int v2_input_from_binary(const cJSON *bsize, const v2_input_decl *d, const char *bin,
                                size_t bin_len, size_t *bin_off, DLManagedTensor **out,
                                bt_error *err)
{
    int64_t isize;
    char why[128];
    if (json_size_value(bsize, &isize, why, sizeof why) != 0)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s: parameters.binary_data_size must be a non-negative integer",
                            d->what);
    uint64_t size = (uint64_t)isize;
    uint64_t expect;
    size_t esize = d->bf16 ? 2u : d->dt.bits / 8u; /* bytes per element on the wire */
    if (d->overflow || __builtin_mul_overflow((uint64_t)d->numel, (uint64_t)esize, &expect))
        return bt_error_set(err, BT_ERR_VALUE, "%s: shape %s has too many elements", d->what,
                            bt_shape_str((char[256]){0}, 256, d->shape, (int)d->ndim));
    if (size != expect)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s: binary_data_size is %llu bytes but shape %s of %s needs "
                            "%llu bytes",
                            d->what, (unsigned long long)size,
                            bt_shape_str((char[256]){0}, 256, d->shape, (int)d->ndim), d->datatype,
                            (unsigned long long)expect);
    if (size > bin_len - *bin_off)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s: binary_data_size is %llu bytes but only %zu bytes of binary "
                            "data remain after the JSON header",
                            d->what, (unsigned long long)size, bin_len - *bin_off);
    DLManagedTensor *t = bt_tensor_new(d->dt, (int)d->ndim, d->shape, err);
    if (!t)
        return -1;
    if (d->bf16)
        bf16_to_float32(bin + *bin_off, t->dl_tensor.data, (size_t)d->numel);
    else if (size)
        memcpy(t->dl_tensor.data, bin + *bin_off, (size_t)size);
    *bin_off += (size_t)size;
    *out = t;
    return 0;
}

/* The tensor of an input whose "data" text is at *fast (codec_data.c), parsed straight
 * into it. -1 when the text is not the simple case: the caller then parses the body the
 * cJSON way. The shape is bounded by the text first: every number takes 2 bytes. */
static int v2_input_from_text(const cJSON *data, const v2_input_decl *d, const bt_text_span *fast,
                              DLManagedTensor **out, bt_error *err)
{
    leaf_rule rule;
    bt_leaf_rule_init(&rule, d->dt, d->what);
    if (bt_json_type(data) != cJSON_Array || data->child || d->bf16 || d->overflow ||
        rule.cls == LEAF_BOOL || d->numel > (int64_t)(fast->len / 2))
        return bt_error_set(err, BT_ERR_VALUE, "%s: not for the fast path", d->what);
    DLManagedTensor *t = bt_tensor_new(d->dt, (int)d->ndim, d->shape, err);
    if (!t)
        return -1;
    if (!bt_data_parse(fast->at, fast->len, &rule, d->numel, t->dl_tensor.data)) {
        bt_codec_tensor_release(t);
        return bt_error_set(err, BT_ERR_VALUE, "%s: not for the fast path", d->what);
    }
    *out = t;
    return 0;
}

/* The tensor of an input sent in "data": every leaf is counted and checked before
 * anything is sized from the declared shape. fast: the text of the data when the body
 * was scanned for it (see v2_input_from_text), else NULL. */
static int v2_input_from_json(const cJSON *data, const v2_input_decl *d, const bt_text_span *fast,
                              DLManagedTensor **out, bt_error *err)
{
    if (fast && fast->at && data && !d->bf16)
        return v2_input_from_text(data, d, fast, out, err);
    if (!data)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s has no 'data' (and no parameters.binary_data_size)", d->what);
    if (d->bf16)
        return bt_error_set(err, BT_ERR_TYPE,
                            "%s: BF16 data must come as binary tensor data "
                            "(parameters.binary_data_size), not in 'data'",
                            d->what);
    leaf_rule rule;
    bt_leaf_rule_init(&rule, d->dt, d->what);
    cJSON top = bt_leaf_alone(data);
    int64_t count = 0;
    if (bt_leaf_check_run(&top, &rule, 0, 0, &count, err) != 0)
        return -1;
    if (d->overflow || count != d->numel)
        return bt_error_set(
            err, BT_ERR_VALUE, "%s: shape %s needs %s%lld elements but 'data' holds %lld", d->what,
            bt_shape_str((char[256]){0}, 256, d->shape, (int)d->ndim),
            d->overflow ? "more than " : "",
            d->overflow ? (long long)INT64_MAX : (long long)d->numel, (long long)count);
    DLManagedTensor *t = bt_tensor_new(d->dt, (int)d->ndim, d->shape, err);
    if (!t)
        return -1;
    bt_leaf_store_for(d->dt)(&top, t->dl_tensor.data);
    *out = t;
    return 0;
}

/* Parses one element of "inputs" into req->inputs[i]. *bin_off tracks the binary part;
 * fast: where its data's text is, or NULL (v2_input_from_json). */
static int parse_v2_input(const cJSON *in, size_t i, const char *bin, size_t bin_len,
                          size_t *bin_off, const bt_text_span *fast, bt_infer_request *req,
                          bt_error *err)
{
    char where[64];
    v2_input_decl d;
    if (bt_json_type(in) != cJSON_Object)
        return bt_error_set(err, BT_ERR_TYPE, "inputs[%zu] must be an object, got %s", i,
                            bt_json_kind(in));
    snprintf(where, sizeof where, "inputs[%zu]", i);
    if (v2_input_name(in, i, where, req, &d, err) != 0 ||
        v2_input_datatype(in, where, &d, err) != 0 || v2_input_shape(in, where, &d, err) != 0)
        return -1;

    const cJSON *data, *iparams, *bsize = NULL;
    if (bt_codec_get_key(in, "data", where, &data, err) != 0 ||
        bt_codec_get_key(in, "parameters", where, &iparams, err) != 0)
        return -1;
    if (iparams) {
        if (bt_json_type(iparams) != cJSON_Object)
            return bt_error_set(err, BT_ERR_TYPE, "%s: 'parameters' must be an object, got %s",
                                d.what, bt_json_kind(iparams));
        snprintf(where, sizeof where, "inputs[%zu].parameters", i);
        if (bt_codec_get_key(iparams, "binary_data_size", where, &bsize, err) != 0)
            return -1;
    }
    if (data && bsize)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s has both 'data' and parameters.binary_data_size; send one", d.what);

    DLManagedTensor *t = NULL;
    if (bsize ? v2_input_from_binary(bsize, &d, bin, bin_len, bin_off, &t, err) != 0
              : v2_input_from_json(data, &d, fast, &t, err) != 0)
        return -1;
    req->inputs[i].name = bt_codec_dup_str(d.name, err);
    if (!req->inputs[i].name) {
        bt_codec_tensor_release(t);
        return -1;
    }
    req->inputs[i].tensor = t;
    req->n_inputs = i + 1;
    return 0;
}

/* The "inputs" list (n entries) into req->inputs; bin: the bin_len bytes of binary tensor
 * data after the JSON header, which the inputs' binary_data_size must add up to. spans:
 * where each input's data text is (bt_data_find), or NULL. */
static int parse_v2_inputs(const cJSON *inputs, size_t n, const char *bin, size_t bin_len,
                           const bt_text_span *spans, bt_infer_request *req, bt_error *err)
{
    req->inputs = calloc(n, sizeof *req->inputs);
    if (!req->inputs)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    size_t bin_off = 0;
    size_t i = 0;
    for (const cJSON *in = inputs->child; in; in = in->next, i++)
        if (parse_v2_input(in, i, bin, bin_len, &bin_off, spans ? &spans[i] : NULL, req, err) != 0)
            return -1;
    if (bin_off != bin_len)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%zu bytes follow the JSON header but the inputs' binary_data_size "
                            "add up to %zu",
                            bin_len, bin_off);
    return 0;
}

/* ------------------------------------------------------------------ the request */

/* The top-level "id": when given, a UTF-8 string, copied into req->id. */
static int parse_v2_id(const cJSON *root, bt_infer_request *req, bt_error *err)
{
    const cJSON *id;
    if (bt_codec_get_key(root, "id", BODY, &id, err) != 0)
        return -1;
    if (!id)
        return 0;
    if (bt_json_type(id) != cJSON_String)
        return bt_error_set(err, BT_ERR_TYPE, "'id' must be a string, got %s", bt_json_kind(id));
    if (!bt_json_utf8_valid(id->valuestring))
        return bt_error_set(err, BT_ERR_VALUE, "'id' is not valid UTF-8");
    req->id = bt_codec_dup_str(id->valuestring, err);
    return req->id ? 0 : -1;
}

/* The request whose JSON is the json_len bytes at json, with the bin_len bytes of binary
 * tensor data at bin; spans as parse_v2_inputs takes them. */
static int parse_v2_request(const char *json, size_t json_len, const char *bin, size_t bin_len,
                            const bt_text_span *spans, bt_infer_request **out, bt_error *err)
{
    cJSON *root = bt_codec_parse_body(json, json_len, err);
    if (!root)
        return -1;
    bt_infer_request *req = NULL;
    int rc = -1;
    if (bt_json_type(root) != cJSON_Object) {
        bt_error_set(err, BT_ERR_VALUE, "request body must be a JSON object, got %s",
                     bt_json_kind(root));
        goto done;
    }
    const cJSON *inputs;
    if (bt_codec_get_key(root, "inputs", BODY, &inputs, err) != 0)
        goto done;
    if (bt_json_type(inputs) != cJSON_Array || !inputs->child) {
        bt_error_set(err, BT_ERR_VALUE, "request needs a non-empty 'inputs' list%s%s",
                     inputs ? ", got " : "", inputs ? bt_json_kind(inputs) : "");
        goto done;
    }
    size_t n = bt_json_size(inputs);
    if (n > BT_CODEC_MAX_TENSORS) {
        bt_error_set(err, BT_ERR_VALUE, "'inputs' lists %zu tensors; at most %d allowed", n,
                     BT_CODEC_MAX_TENSORS);
        goto done;
    }
    req = bt_codec_request_new(err);
    if (!req || parse_v2_id(root, req, err) != 0 ||
        parse_v2_inputs(inputs, n, bin, bin_len, spans, req, err) != 0 ||
        parse_v2_outputs(root, req, err) != 0)
        goto done;
    rc = 0;
    *out = req;
    req = NULL;
done:
    bt_infer_request_free(req);
    bt_json_release(root);
    return rc;
}

static size_t fast_min_bytes = BT_CODEC_FAST_MIN_BYTES;

void bt_codec_set_fast_min_bytes(size_t bytes) { fast_min_bytes = bytes; }

/* The fast path (codec_data.c): the body's data lists are found in its text, the body
 * without them (each list left as "[]") goes through cJSON, and each list is parsed
 * straight into its tensor. 0 with *out set, or -1 for the cJSON path to take over, which
 * gives every error (so the skeleton's positions never reach a message). */
static int parse_v2_fast(const char *body, size_t json_len, const char *bin, size_t bin_len,
                         bt_infer_request **out)
{
    bt_text_span spans[BT_CODEC_MAX_TENSORS];
    if (json_len < fast_min_bytes || !bt_data_find(body, json_len, spans, BT_CODEC_MAX_TENSORS))
        return -1;
    char *skeleton = malloc(json_len);
    if (!skeleton)
        return -1;
    const char *from = body;
    size_t len = 0;
    for (size_t k = 0; k < BT_CODEC_MAX_TENSORS; k++) {
        if (!spans[k].at)
            continue;
        memcpy(skeleton + len, from, (size_t)(spans[k].at - from));
        len += (size_t)(spans[k].at - from);
        memcpy(skeleton + len, "[]", 2);
        len += 2;
        from = spans[k].at + spans[k].len;
    }
    memcpy(skeleton + len, from, (size_t)(body + json_len - from));
    len += (size_t)(body + json_len - from);
    bt_error ignored = {BT_OK, ""};
    int rc = parse_v2_request(skeleton, len, bin, bin_len, spans, out, &ignored);
    free(skeleton);
    return rc;
}

int bt_codec_parse_v2(const char *body, size_t len, long long header_len, bt_infer_request **out,
                      bt_error *err)
{
    *out = NULL;
    size_t json_len = len;
    if (header_len >= 0) {
        if ((unsigned long long)header_len > len)
            return bt_error_set(err, BT_ERR_VALUE,
                                "Inference-Header-Content-Length is %lld but the body has only "
                                "%zu bytes",
                                header_len, len);
        json_len = (size_t)header_len;
    }
    if (parse_v2_fast(body, json_len, body + json_len, len - json_len, out) == 0)
        return 0;
    return parse_v2_request(body, json_len, body + json_len, len - json_len, NULL, out, err);
}

/* ------------------------------------------------------------------ the response */

int bt_codec_encode_v2(bt_buf *out, const char *model_name, const char *model_version,
                       const char *id, const bt_output *outputs, size_t n, size_t *json_len,
                       bt_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (bt_codec_check_output(&outputs[i], err) != 0)
            return -1;
    size_t start = out->len;
    bt_buf_puts(out, "{\"model_name\":");
    bt_buf_json_string(out, model_name);
    bt_buf_puts(out, ",\"model_version\":");
    bt_buf_json_string(out, model_version);
    if (id) {
        bt_buf_puts(out, ",\"id\":");
        bt_buf_json_string(out, id);
    }
    bt_buf_puts(out, ",\"outputs\":[");
    for (size_t i = 0; i < n; i++) {
        const DLTensor *t = outputs[i].tensor;
        size_t esize = t->dtype.bits / 8u;
        int64_t numel = bt_numel(t);
        if (i)
            bt_buf_puts(out, ",");
        bt_buf_puts(out, "{\"name\":");
        bt_buf_json_string(out, outputs[i].name);
        bt_buf_printf(out, ",\"datatype\":\"%s\",\"shape\":[", bt_codec_datatype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            bt_buf_printf(out, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        bt_buf_puts(out, "]");
        if (outputs[i].binary) {
            bt_buf_printf(out, ",\"parameters\":{\"binary_data_size\":%llu}}",
                          (unsigned long long)numel * esize);
            continue;
        }
        bt_buf_puts(out, ",\"data\":[");
        int contig = bt_is_contiguous(t);
        for (int64_t k = 0; k < numel; k++) {
            if (k)
                bt_buf_append(out, ",", 1);
            bt_codec_append_elem(out, bt_codec_elem_at(t, k, contig, esize), t->dtype);
        }
        bt_buf_puts(out, "]}");
    }
    bt_buf_puts(out, "]}");
    *json_len = out->len - start;
    for (size_t i = 0; i < n; i++) {
        if (!outputs[i].binary)
            continue;
        const DLTensor *t = outputs[i].tensor;
        size_t esize = t->dtype.bits / 8u;
        int64_t numel = bt_numel(t);
        if (bt_is_contiguous(t)) {
            bt_buf_append(out, (const char *)t->data + t->byte_offset, (size_t)numel * esize);
        } else {
            for (int64_t k = 0; k < numel; k++)
                bt_buf_append(out, bt_codec_elem_at(t, k, 0, esize), esize);
        }
    }
    if (out->oom)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory encoding the response");
    return 0;
}
