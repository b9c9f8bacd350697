/*
 * codec.c - Open Inference Protocol v2 and KServe v1 bodies <-> DLPack tensors.
 *
 * JSON is parsed with cJSON (through jsonutil.h, which adds what a strict parser would
 * check). Its arrays are linked lists, so they are walked with ->child / ->next, never
 * indexed. Responses are written directly into a bt_buf (numbers with printf, strings
 * escaped here) because building a cJSON tree of every output element would cost more
 * than the forward of a small model.
 */
#define _POSIX_C_SOURCE 200809L
#include "serving/codec.h"
#include "serving/json_body.h"
#include "runtime/tensor.h"
#include "berth/dtypes.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ dtypes */

typedef struct dtype_entry {
    const char *name;
    uint8_t code;
    uint8_t bits;
} dtype_entry;

static const dtype_entry DTYPES[] = {
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH) {DATATYPE, CODE, BITS},
    BERTH_DTYPES(BT_ROW)
#undef BT_ROW
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])
#define BT_DATATYPE_LISTED(NAME, DATATYPE, CODE, BITS, NPY, TORCH) DATATYPE ", "
#define SUPPORTED_DATATYPES BERTH_DTYPES(BT_DATATYPE_LISTED) "BF16 (binary data only)"

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

const char *bt_codec_datatype_name(DLDataType dtype)
{
    if (dtype.lanes != 1)
        return NULL;
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].code == dtype.code && DTYPES[i].bits == dtype.bits)
            return DTYPES[i].name;
    return NULL;
}

int bt_codec_datatype_parse(const char *name, DLDataType *out, bt_error *err)
{
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (strcmp(DTYPES[i].name, name) == 0) {
            out->code = DTYPES[i].code;
            out->bits = DTYPES[i].bits;
            out->lanes = 1;
            return 0;
        }
    }
    return bt_error_set(err, BT_ERR_TYPE, "unsupported datatype '%.64s': expected one of %s",
                        name, SUPPORTED_DATATYPES);
}

size_t bt_codec_elem_size(DLDataType dtype)
{
    return bt_codec_datatype_name(dtype) ? dtype.bits / 8u : 0;
}

/* ------------------------------------------------------------------ tensors */

static void tensor_release(DLManagedTensor *t)
{
    if (t && t->deleter)
        t->deleter(t);
}

void bt_infer_request_free(bt_infer_request *req)
{
    if (!req)
        return;
    for (size_t i = 0; i < req->n_inputs; i++) {
        free(req->inputs[i].name);
        tensor_release(req->inputs[i].tensor);
    }
    free(req->inputs);
    for (size_t i = 0; i < req->n_outputs; i++)
        free(req->outputs[i].name);
    free(req->outputs);
    free(req->id);
    free(req);
}


/* ------------------------------------------------------------------ JSON -> elements */

/* cJSON keeps every number as a double, which carries integers exactly only while
 * |v| < 2^53 (the interoperable range of RFC 7493, I-JSON). */
#define JSON_EXACT_LIMIT 9007199254740992.0 /* 2^53 */

/* How the leaves of one input's data are checked: class and range, worked out once per
 * input rather than from the datatype at every leaf. */
typedef enum leaf_class { LEAF_BOOL, LEAF_INT, LEAF_FLOAT } leaf_class;

typedef struct leaf_rule {
    leaf_class cls;
    DLDataType dt;
    const char *dname; /* "FP32" */
    double lo, hi;     /* LEAF_INT: the accepted range; LEAF_FLOAT: hi is the largest magnitude */
    const char *what;  /* "input 'x'", for messages */
} leaf_rule;

static void leaf_rule_init(leaf_rule *r, DLDataType dt, const char *what)
{
    r->dt = dt;
    r->dname = bt_codec_datatype_name(dt);
    r->what = what;
    r->lo = 0;
    if (dt.code == BERTH_DL_BOOL) {
        r->cls = LEAF_BOOL;
        r->hi = 1;
    } else if (dt.code == kDLFloat) {
        r->cls = LEAF_FLOAT;
        r->hi = dt.bits == 64 ? DBL_MAX : dt.bits == 32 ? (double)FLT_MAX : 65504.0;
    } else {
        r->cls = LEAF_INT;
        switch (dt.code == kDLUInt ? 0 : dt.bits) {
        case 0: r->hi = 255; break;
        case 8: r->lo = INT8_MIN; r->hi = INT8_MAX; break;
        case 16: r->lo = INT16_MIN; r->hi = INT16_MAX; break;
        case 32: r->lo = INT32_MIN; r->hi = INT32_MAX; break;
        default: r->lo = -(JSON_EXACT_LIMIT - 1); r->hi = JSON_EXACT_LIMIT - 1; break;
        }
    }
}

/* An integral double as text: every digit while that stays short, else %g. */
static const char *int_text(char *buf, size_t size, double d)
{
    snprintf(buf, size, fabs(d) < 1e21 ? "%.0f" : "%g", d);
    return buf;
}

/* The error for a leaf that failed the fast checks (the slow path: all the dispatch). */
static int leaf_error(const cJSON *v, const leaf_rule *r, bt_error *err)
{
    int type = bt_json_type(v);
    const char *what = r->what;
    if (type == cJSON_Number && !isfinite(v->valuedouble))
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s: a number in 'data' does not fit in a double (it overflows to "
                            "%sinfinity); JSON numbers must be finite",
                            what, v->valuedouble < 0 ? "-" : "");
    if (r->cls == LEAF_BOOL)
        return bt_error_set(err, BT_ERR_TYPE, "%s: expected true/false for BOOL data, got %s",
                            what, type == cJSON_Number ? "a number" : "a non-boolean value");
    if (type != cJSON_Number)
        return bt_error_set(err, BT_ERR_TYPE, "%s: expected numbers for %s data, got %s", what,
                            r->dname,
                            type == cJSON_String                         ? "a string"
                            : type == cJSON_True || type == cJSON_False ? "a boolean"
                            : type == cJSON_NULL                         ? "null"
                            : type == cJSON_Object                       ? "an object"
                                                                         : "a list");
    double d = v->valuedouble;
    if (r->cls == LEAF_FLOAT)
        return bt_error_set(err, BT_ERR_VALUE, "%s: %g is out of range for %s", what, d,
                            r->dname);
    if (d != floor(d))
        return bt_error_set(err, BT_ERR_TYPE, "%s: expected integers for %s data, got %g", what,
                            r->dname, d);
    char num[40];
    if (r->dt.bits == 64 && fabs(d) >= JSON_EXACT_LIMIT)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s: %s cannot be carried exactly by a JSON number (|value| >= 2^53, "
                            "see RFC 7493); send INT64 data this large with the binary tensor "
                            "data extension",
                            what, int_text(num, sizeof num, d));
    return bt_error_set(err, BT_ERR_VALUE, "%s: %s is out of range for %s", what,
                        int_text(num, sizeof num, d), r->dname);
}

static int ragged(const leaf_rule *r, bt_error *err)
{
    return bt_error_set(err, BT_ERR_VALUE,
                        "%s: instances are not all the same shape (ragged lists)", r->what);
}

static int check_run(const cJSON *c, const leaf_rule *r, int depth, int flat, int64_t *count,
                     bt_error *err);

/* A list met at the given depth of the data: descend, unless too deep or (flat) not
 * allowed there. */
static int check_nested(const cJSON *list, const leaf_rule *r, int depth, int flat,
                        int64_t *count, bt_error *err)
{
    if (flat)
        return ragged(r, err);
    if (depth >= BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_VALUE, "%s: data is nested deeper than %d levels",
                            r->what, BT_CODEC_MAX_NDIM);
    return check_run(list->child, r, depth + 1, 0, count, err);
}

/* Whether leaf c passes r's checks (leaf_error says why one does not). */
static inline int leaf_ok(const cJSON *c, const leaf_rule *r)
{
    int type = c->type & 0xFF;
    double d = c->valuedouble;
    switch (r->cls) {
    case LEAF_FLOAT:
        return type == cJSON_Number && fabs(d) <= r->hi; /* false for inf */
    case LEAF_INT:
        /* in range first, so the cast is defined; the cast then tests integrality */
        return type == cJSON_Number && d >= r->lo && d <= r->hi && d == (double)(int64_t)d;
    default:
        return type == cJSON_True || type == cJSON_False ||
               (type == cJSON_Number && (d == 0 || d == 1));
    }
}

/* Checks the values of the sibling list starting at c (all at the given depth), adding
 * the number of leaves to *count. Nested lists are walked (or refused when flat). */
static int check_run(const cJSON *c, const leaf_rule *r, int depth, int flat, int64_t *count,
                     bt_error *err)
{
    int64_t n = 0;
    for (; c; c = c->next) {
        if (leaf_ok(c, r))
            n++;
        else if ((c->type & 0xFF) == cJSON_Array) {
            if (check_nested(c, r, depth, flat, count, err) != 0)
                return -1;
        } else
            return leaf_error(c, r, err);
    }
    *count += n;
    return 0;
}

/* Store loops, one per dtype: the leaves of checked data, in row-major order, written
 * from dst on; each returns the end of what it wrote. */
#define DEFINE_STORE(NAME, CTYPE, CONVERT)                                                 \
    static char *NAME(const cJSON *c, char *dst)                                          \
    {                                                                                     \
        for (; c; c = c->next) {                                                          \
            if ((c->type & 0xFF) == cJSON_Array) {                                        \
                dst = NAME(c->child, dst);                                                \
                continue;                                                                 \
            }                                                                             \
            CTYPE x = CONVERT(c);                                                         \
            memcpy(dst, &x, sizeof x);                                                    \
            dst += sizeof x;                                                              \
        }                                                                                 \
        return dst;                                                                       \
    }

#define CONV_BOOL(c)                                                                       \
    ((uint8_t)(((c)->type & 0xFF) == cJSON_True ||                                        \
               (((c)->type & 0xFF) == cJSON_Number && (c)->valuedouble != 0)))
#define CONV_U8(c) ((uint8_t)(c)->valuedouble)
#define CONV_I8(c) ((int8_t)(c)->valuedouble)
#define CONV_I16(c) ((int16_t)(c)->valuedouble)
#define CONV_I32(c) ((int32_t)(c)->valuedouble)
#define CONV_I64(c) ((int64_t)(c)->valuedouble)
#define CONV_F16(c) bt_float_to_half((float)(c)->valuedouble)
#define CONV_F32(c) ((float)(c)->valuedouble)
#define CONV_F64(c) ((c)->valuedouble)

DEFINE_STORE(store_bool, uint8_t, CONV_BOOL)
DEFINE_STORE(store_u8, uint8_t, CONV_U8)
DEFINE_STORE(store_i8, int8_t, CONV_I8)
DEFINE_STORE(store_i16, int16_t, CONV_I16)
DEFINE_STORE(store_i32, int32_t, CONV_I32)
DEFINE_STORE(store_i64, int64_t, CONV_I64)
DEFINE_STORE(store_f16, uint16_t, CONV_F16)
DEFINE_STORE(store_f32, float, CONV_F32)
DEFINE_STORE(store_f64, double, CONV_F64)

typedef char *(*store_fn)(const cJSON *, char *);

/* The store loop of a supported dtype. */
static store_fn store_for(DLDataType dt)
{
    if (dt.code == BERTH_DL_BOOL)
        return store_bool;
    if (dt.code == kDLUInt)
        return store_u8;
    if (dt.code == kDLFloat)
        return dt.bits == 16 ? store_f16 : dt.bits == 32 ? store_f32 : store_f64;
    return dt.bits == 8 ? store_i8 : dt.bits == 16 ? store_i16 : dt.bits == 32 ? store_i32
                                                                            : store_i64;
}

/* v as a one-element sibling list: its own ->next runs on into its parent's members. */
static cJSON alone(const cJSON *v)
{
    cJSON one = *v;
    one.next = NULL;
    return one;
}

static char *dup_str(const char *s, bt_error *err)
{
    char *d = strdup(s);
    if (!d)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    return d;
}

#define BODY "the request body"

/* The request body as JSON; NULL with err set otherwise. */
static cJSON *parse_body(const char *body, size_t len, bt_error *err)
{
    bt_json_error jerr;
    cJSON *root = bt_json_parse_body(body, len, &jerr);
    if (!root)
        bt_error_set(err, BT_ERR_VALUE, "request body is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
    return root;
}

/* obj's member key (NULL when absent); -1 with err set when the key appears twice. */
static int get_key(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                   bt_error *err)
{
    return bt_json_get(obj, key, where, out, BT_ERR_VALUE, err);
}

static bt_infer_request *request_new(bt_error *err)
{
    bt_infer_request *req = calloc(1, sizeof *req);
    if (!req)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    return req;
}

/* Parses the "outputs" list and top-level "parameters" shared by v2 requests. */
static int parse_v2_outputs(const cJSON *root, bt_infer_request *req, bt_error *err)
{
    const cJSON *params, *outs;
    if (get_key(root, "parameters", BODY, &params, err) != 0)
        return -1;
    if (params) {
        if (bt_json_type(params) != cJSON_Object)
            return bt_error_set(err, BT_ERR_TYPE, "'parameters' must be an object, got %s",
                                bt_json_kind(params));
        const cJSON *bdo;
        if (get_key(params, "binary_data_output", "'parameters'", &bdo, err) != 0)
            return -1;
        if (bdo) {
            if (!cJSON_IsBool(bdo))
                return bt_error_set(err, BT_ERR_TYPE,
                                    "parameters.binary_data_output must be true or false, got %s",
                                    bt_json_kind(bdo));
            req->binary_data_output = cJSON_IsTrue(bdo);
        }
    }
    if (get_key(root, "outputs", BODY, &outs, err) != 0)
        return -1;
    if (!outs)
        return 0;
    if (bt_json_type(outs) != cJSON_Array)
        return bt_error_set(err, BT_ERR_TYPE, "'outputs' must be a list, got %s",
                            bt_json_kind(outs));
    size_t n = bt_json_size(outs);
    if (n > BT_CODEC_MAX_TENSORS)
        return bt_error_set(err, BT_ERR_VALUE, "'outputs' lists %zu tensors; at most %d allowed",
                            n, BT_CODEC_MAX_TENSORS);
    if (n == 0)
        return 0;
    req->outputs = calloc(n, sizeof *req->outputs);
    if (!req->outputs)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    size_t i = 0;
    for (const cJSON *o = outs->child; o; o = o->next, i++) {
        char where[64];
        if (bt_json_type(o) != cJSON_Object)
            return bt_error_set(err, BT_ERR_TYPE, "outputs[%zu] must be an object, got %s", i,
                                bt_json_kind(o));
        snprintf(where, sizeof where, "outputs[%zu]", i);
        const cJSON *name, *op;
        if (get_key(o, "name", where, &name, err) != 0)
            return -1;
        if (bt_json_type(name) != cJSON_String)
            return bt_error_set(err, BT_ERR_VALUE, "outputs[%zu] needs a string 'name'", i);
        if (!bt_json_utf8_valid(name->valuestring))
            return bt_error_set(err, BT_ERR_VALUE, "outputs[%zu].name is not valid UTF-8", i);
        req->outputs[i].binary = -1;
        if (get_key(o, "parameters", where, &op, err) != 0)
            return -1;
        if (op) {
            if (bt_json_type(op) != cJSON_Object)
                return bt_error_set(err, BT_ERR_TYPE,
                                    "outputs[%zu].parameters must be an object, got %s", i,
                                    bt_json_kind(op));
            snprintf(where, sizeof where, "outputs[%zu].parameters", i);
            const cJSON *bd;
            if (get_key(op, "binary_data", where, &bd, err) != 0)
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
        req->outputs[i].name = dup_str(name->valuestring, err);
        if (!req->outputs[i].name)
            return -1;
        req->n_outputs = i + 1;
    }
    return 0;
}

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
        snprintf(why, why_size, "%.0f, which is not below 2^53 (the largest integer a JSON "
                                "number carries exactly)", d);
        return -1;
    }
    *out = (int64_t)d;
    return 0;
}

/* Parses one element of "inputs" into req->inputs[i]. *bin_off tracks the binary part. */
static int parse_v2_input(const cJSON *in, size_t i, const char *bin, size_t bin_len,
                          size_t *bin_off, bt_infer_request *req, bt_error *err)
{
    char what[160], where[64];
    if (bt_json_type(in) != cJSON_Object)
        return bt_error_set(err, BT_ERR_TYPE, "inputs[%zu] must be an object, got %s", i,
                            bt_json_kind(in));
    snprintf(where, sizeof where, "inputs[%zu]", i);
    const cJSON *jname, *jdt, *jshape, *data, *iparams, *bsize = NULL;
    if (get_key(in, "name", where, &jname, err) != 0)
        return -1;
    if (bt_json_type(jname) != cJSON_String)
        return bt_error_set(err, BT_ERR_VALUE, "inputs[%zu] needs a string 'name'%s", i,
                            jname ? ", got another type" : "");
    const char *name = jname->valuestring;
    if (!bt_json_utf8_valid(name))
        return bt_error_set(err, BT_ERR_VALUE, "inputs[%zu].name is not valid UTF-8", i);
    for (size_t k = 0; k < i; k++)
        if (strcmp(req->inputs[k].name, name) == 0)
            return bt_error_set(err, BT_ERR_VALUE, "input '%.64s' appears twice", name);
    snprintf(what, sizeof what, "input '%.64s'", name);

    if (get_key(in, "datatype", where, &jdt, err) != 0)
        return -1;
    if (bt_json_type(jdt) != cJSON_String)
        return bt_error_set(err, BT_ERR_VALUE, "%s needs a string 'datatype' (one of %s)", what,
                            SUPPORTED_DATATYPES);
    if (!bt_json_utf8_valid(jdt->valuestring))
        return bt_error_set(err, BT_ERR_VALUE, "%s: 'datatype' is not valid UTF-8", what);
    DLDataType dt;
    int bf16 = strcmp(jdt->valuestring, BF16_NAME) == 0;
    if (bf16) {
        dt.code = kDLFloat;
        dt.bits = 32;
        dt.lanes = 1;
    } else if (bt_codec_datatype_parse(jdt->valuestring, &dt, err) != 0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        return bt_error_set(err, BT_ERR_TYPE, "%s: %s", what, msg);
    }

    if (get_key(in, "shape", where, &jshape, err) != 0)
        return -1;
    if (bt_json_type(jshape) != cJSON_Array)
        return bt_error_set(err, BT_ERR_VALUE, "%s needs a 'shape' list of non-negative integers",
                            what);
    size_t ndim = bt_json_size(jshape);
    if (ndim > BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_VALUE, "%s: shape has %zu dimensions; at most %d allowed",
                            what, ndim, BT_CODEC_MAX_NDIM);
    int64_t shape[BT_CODEC_MAX_NDIM];
    int64_t numel = 1;
    int overflow = 0;
    size_t d = 0;
    for (const cJSON *e = jshape->child; e; e = e->next, d++) {
        char why[128];
        if (json_size_value(e, &shape[d], why, sizeof why) != 0)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: shape[%zu] must be a non-negative integer, got %s", what, d,
                                why);
        if (__builtin_mul_overflow(numel, shape[d], &numel))
            overflow = 1;
    }
    size_t esize = bf16 ? 2u : dt.bits / 8u; /* bytes per element on the wire */

    if (get_key(in, "data", where, &data, err) != 0 ||
        get_key(in, "parameters", where, &iparams, err) != 0)
        return -1;
    if (iparams) {
        if (bt_json_type(iparams) != cJSON_Object)
            return bt_error_set(err, BT_ERR_TYPE, "%s: 'parameters' must be an object, got %s",
                                what, bt_json_kind(iparams));
        snprintf(where, sizeof where, "inputs[%zu].parameters", i);
        if (get_key(iparams, "binary_data_size", where, &bsize, err) != 0)
            return -1;
    }
    if (data && bsize)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s has both 'data' and parameters.binary_data_size; send one", what);

    DLManagedTensor *t = NULL;
    if (bsize) {
        int64_t isize;
        char why[128];
        if (json_size_value(bsize, &isize, why, sizeof why) != 0)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: parameters.binary_data_size must be a non-negative integer",
                                what);
        uint64_t size = (uint64_t)isize;
        uint64_t expect;
        if (overflow || __builtin_mul_overflow((uint64_t)numel, (uint64_t)esize, &expect))
            return bt_error_set(err, BT_ERR_VALUE, "%s: shape %s has too many elements", what,
                                bt_shape_str((char[256]){0}, 256, shape, (int)ndim));
        if (size != expect)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: binary_data_size is %llu bytes but shape %s of %s needs "
                                "%llu bytes",
                                what, (unsigned long long)size,
                                bt_shape_str((char[256]){0}, 256, shape, (int)ndim),
                                jdt->valuestring, (unsigned long long)expect);
        if (size > bin_len - *bin_off)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: binary_data_size is %llu bytes but only %zu bytes of binary "
                                "data remain after the JSON header",
                                what, (unsigned long long)size, bin_len - *bin_off);
        t = bt_tensor_new(dt, (int)ndim, shape, err);
        if (!t)
            return -1;
        if (bf16)
            bf16_to_float32(bin + *bin_off, t->dl_tensor.data, (size_t)numel);
        else if (size)
            memcpy(t->dl_tensor.data, bin + *bin_off, (size_t)size);
        *bin_off += (size_t)size;
    } else {
        if (!data)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s has no 'data' (and no parameters.binary_data_size)", what);
        if (bf16)
            return bt_error_set(err, BT_ERR_TYPE,
                                "%s: BF16 data must come as binary tensor data "
                                "(parameters.binary_data_size), not in 'data'",
                                what);
        /* count and check every leaf before anything is sized from the declared shape */
        leaf_rule rule;
        leaf_rule_init(&rule, dt, what);
        cJSON top = alone(data);
        int64_t count = 0;
        if (check_run(&top, &rule, 0, 0, &count, err) != 0)
            return -1;
        if (overflow || count != numel)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: shape %s needs %s%lld elements but 'data' holds %lld", what,
                                bt_shape_str((char[256]){0}, 256, shape, (int)ndim),
                                overflow ? "more than " : "",
                                overflow ? (long long)INT64_MAX : (long long)numel,
                                (long long)count);
        t = bt_tensor_new(dt, (int)ndim, shape, err);
        if (!t)
            return -1;
        store_for(dt)(&top, t->dl_tensor.data);
    }
    req->inputs[i].name = dup_str(name, err);
    if (!req->inputs[i].name) {
        tensor_release(t);
        return -1;
    }
    req->inputs[i].tensor = t;
    req->n_inputs = i + 1;
    return 0;
}

int bt_codec_parse_v2(const char *body, size_t len, long long header_len,
                      bt_infer_request **out, bt_error *err)
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
    cJSON *root = parse_body(body, json_len, err);
    if (!root)
        return -1;
    bt_infer_request *req = NULL;
    int rc = -1;
    if (bt_json_type(root) != cJSON_Object) {
        bt_error_set(err, BT_ERR_VALUE, "request body must be a JSON object, got %s",
                     bt_json_kind(root));
        goto done;
    }
    const cJSON *inputs, *id;
    if (get_key(root, "inputs", BODY, &inputs, err) != 0)
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
    req = request_new(err);
    if (!req)
        goto done;
    if (get_key(root, "id", BODY, &id, err) != 0)
        goto done;
    if (id) {
        if (bt_json_type(id) != cJSON_String) {
            bt_error_set(err, BT_ERR_TYPE, "'id' must be a string, got %s", bt_json_kind(id));
            goto done;
        }
        if (!bt_json_utf8_valid(id->valuestring)) {
            bt_error_set(err, BT_ERR_VALUE, "'id' is not valid UTF-8");
            goto done;
        }
        req->id = dup_str(id->valuestring, err);
        if (!req->id)
            goto done;
    }
    req->inputs = calloc(n, sizeof *req->inputs);
    if (!req->inputs) {
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    const char *bin = body + json_len;
    size_t bin_len = len - json_len;
    size_t bin_off = 0;
    size_t i = 0;
    for (const cJSON *in = inputs->child; in; in = in->next, i++)
        if (parse_v2_input(in, i, bin, bin_len, &bin_off, req, err) != 0)
            goto done;
    if (bin_off != bin_len) {
        bt_error_set(err, BT_ERR_VALUE,
                     "%zu bytes follow the JSON header but the inputs' binary_data_size add up "
                     "to %zu",
                     bin_len, bin_off);
        goto done;
    }
    if (parse_v2_outputs(root, req, err) != 0)
        goto done;
    rc = 0;
    *out = req;
    req = NULL;
done:
    bt_infer_request_free(req);
    bt_json_release(root);
    return rc;
}

/* ------------------------------------------------------------------ v1 */

/* Shape of the first element path of v (descending into first elements). */
static int infer_shape(const cJSON *v, int64_t *shape, int *ndim, const char *what,
                       bt_error *err)
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
static int check_rect(const cJSON *v, const int64_t *shape, int ndim, int depth,
                      const leaf_rule *r, bt_error *err)
{
    int64_t n = 0;
    if (depth == ndim) {
        if (bt_json_type(v) == cJSON_Array)
            return ragged(r, err);
        cJSON one = alone(v);
        return check_run(&one, r, depth, 1, &n, err);
    }
    if (bt_json_type(v) != cJSON_Array)
        return ragged(r, err);
    int rc = 0;
    if (depth == ndim - 1) {
        rc = check_run(v->child, r, depth + 1, 1, &n, err); /* a list here is ragged */
    } else {
        for (const cJSON *c = v->child; c && rc == 0; c = c->next, n++)
            rc = check_rect(c, shape, ndim, depth + 1, r, err);
    }
    if ((rc != 0 || n != shape[depth]) && (int64_t)bt_json_size(v) != shape[depth])
        return ragged(r, err);
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
    if (get_key(inst, name, where, &v, err) != 0)
        return NULL;
    if (!v)
        bt_error_set(err, BT_ERR_VALUE, "instances[%zu] has no input '%.64s'", i, name);
    return v;
}

int bt_codec_parse_v1(const char *body, size_t len, const bt_v1_hint *hints,
                      size_t n_hints, bt_infer_request **out, bt_error *err)
{
    *out = NULL;
    cJSON *root = parse_body(body, len, err);
    if (!root)
        return -1;
    bt_infer_request *req = NULL;
    int rc = -1;
    const cJSON *inst = NULL;
    if (bt_json_type(root) == cJSON_Object && get_key(root, "instances", BODY, &inst, err) != 0)
        goto done;
    if (bt_json_type(inst) != cJSON_Array || !inst->child) {
        bt_error_set(err, BT_ERR_VALUE, "request body must be {\"instances\": [...]} with at "
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
    if (keyed) {
        size_t i = 0;
        for (const cJSON *o = inst->child; o; o = o->next, i++) {
            if (bt_json_type(o) != cJSON_Object) {
                bt_error_set(err, BT_ERR_VALUE,
                             "instances[%zu] is %s but instances[0] is an object", i,
                             bt_json_kind(o));
                goto done;
            }
            for (const cJSON *m = o->child; m; m = m->next) {
                size_t h = 0;
                while (h < n_hints && strcmp(hints[h].name, m->string) != 0)
                    h++;
                if (h == n_hints) {
                    if (!bt_json_utf8_valid(m->string))
                        bt_error_set(err, BT_ERR_VALUE,
                                     "instances[%zu] has a key that is not valid UTF-8", i);
                    else
                        bt_error_set(err, BT_ERR_VALUE,
                                     "instances[%zu] has unknown input '%.64s'", i, m->string);
                    goto done;
                }
            }
        }
    }
    req = request_new(err);
    if (!req)
        goto done;
    req->inputs = calloc(n_hints, sizeof *req->inputs);
    if (!req->inputs) {
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t h = 0; h < n_hints; h++) {
        char what[160];
        snprintf(what, sizeof what, "input '%.64s'", hints[h].name);
        DLDataType dt = {kDLFloat, 32, 1};
        if (hints[h].has_dtype && bt_codec_datatype_name(hints[h].dtype))
            dt = hints[h].dtype;
        leaf_rule rule;
        leaf_rule_init(&rule, dt, what);
        const cJSON *first = instance_value(inst->child, 0, keyed, hints[h].name, err);
        if (!first)
            goto done;
        int64_t shape[BT_CODEC_MAX_NDIM];
        int ndim;
        shape[0] = (int64_t)n_inst;
        if (infer_shape(first, shape + 1, &ndim, what, err) != 0)
            goto done;
        size_t i = 0;
        for (const cJSON *o = inst->child; o; o = o->next, i++) {
            const cJSON *v = instance_value(o, i, keyed, hints[h].name, err);
            if (!v || check_rect(v, shape + 1, ndim, 0, &rule, err) != 0)
                goto done;
        }
        DLManagedTensor *t = bt_tensor_new(dt, ndim + 1, shape, err);
        if (!t)
            goto done;
        store_fn store = store_for(dt);
        char *dst = t->dl_tensor.data;
        i = 0;
        for (const cJSON *o = inst->child; o; o = o->next, i++) {
            const cJSON *v = instance_value(o, i, keyed, hints[h].name, err);
            if (!v) /* cannot happen: found by the check above */
                goto done;
            cJSON one = alone(v);
            dst = store(&one, dst);
        }
        req->inputs[h].tensor = t;
        req->inputs[h].name = dup_str(hints[h].name, err);
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

/* ------------------------------------------------------------------ encoding */

/* Address of the element at row-major position linear. */
static const char *elem_at(const DLTensor *t, int64_t linear, int contiguous, size_t esize)
{
    const char *base = (const char *)t->data + t->byte_offset;
    if (contiguous)
        return base + (size_t)linear * esize;
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t idx = linear % t->shape[d];
        linear /= t->shape[d];
        off += idx * t->strides[d];
    }
    return base + off * (int64_t)esize;
}

static void append_elem(bt_buf *b, const char *p, DLDataType dt)
{
    char s[40];
    int n;
    switch (dt.code) {
    case BERTH_DL_BOOL:
        bt_buf_puts(b, *(const uint8_t *)p ? "true" : "false");
        return;
    case kDLUInt:
        n = snprintf(s, sizeof s, "%u", (unsigned)*(const uint8_t *)p);
        break;
    case kDLInt: {
        long long v;
        switch (dt.bits) {
        case 8: { int8_t x; memcpy(&x, p, 1); v = x; break; }
        case 16: { int16_t x; memcpy(&x, p, 2); v = x; break; }
        case 32: { int32_t x; memcpy(&x, p, 4); v = x; break; }
        default: { int64_t x; memcpy(&x, p, 8); v = x; break; }
        }
        n = snprintf(s, sizeof s, "%lld", v);
        break;
    }
    default: {
        double v;
        const char *fmt = "%.9g";
        if (dt.bits == 64) {
            memcpy(&v, p, 8);
            fmt = "%.17g";
        } else if (dt.bits == 32) {
            float f;
            memcpy(&f, p, 4);
            v = f;
        } else {
            uint16_t h;
            memcpy(&h, p, 2);
            v = bt_half_to_float(h);
            fmt = "%.5g";
        }
        if (!isfinite(v)) {
            bt_buf_puts(b, "null"); /* JSON has no NaN or Infinity */
            return;
        }
        /* shortest text that reads back to the same value */
        if (dt.bits == 64) {
            n = snprintf(s, sizeof s, "%.15g", v);
            if (strtod(s, NULL) != v)
                n = snprintf(s, sizeof s, fmt, v);
        } else if (dt.bits == 32) {
            n = snprintf(s, sizeof s, "%.6g", v);
            if (strtof(s, NULL) != (float)v)
                n = snprintf(s, sizeof s, fmt, v);
        } else {
            n = snprintf(s, sizeof s, fmt, v);
        }
    }
    }
    bt_buf_append(b, s, (size_t)n);
}

static int check_output(const bt_output *o, bt_error *err)
{
    if (!bt_codec_datatype_name(o->tensor->dtype))
        return bt_error_set(err, BT_ERR_MODEL,
                            "output '%.64s' has dtype %s, which the protocol cannot carry",
                            o->name, bt_dtype_name(o->tensor->dtype.code, o->tensor->dtype.bits));
    if (o->tensor->ndim > BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_MODEL, "output '%.64s' has too many dimensions",
                            o->name);
    return 0;
}

int bt_codec_encode_v2(bt_buf *out, const char *model_name, const char *model_version,
                       const char *id, const bt_output *outputs, size_t n, size_t *json_len,
                       bt_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (check_output(&outputs[i], err) != 0)
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
            append_elem(out, elem_at(t, k, contig, esize), t->dtype);
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
                bt_buf_append(out, elem_at(t, k, 0, esize), esize);
        }
    }
    if (out->oom)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory encoding the response");
    return 0;
}

/* Writes the sub-array of t at dims [dim..) starting at row-major position *pos. */
static void append_nested(bt_buf *b, const DLTensor *t, int dim, int64_t *pos, int contig)
{
    size_t esize = t->dtype.bits / 8u;
    if (dim == t->ndim) {
        append_elem(b, elem_at(t, *pos, contig, esize), t->dtype);
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
        if (check_output(&outputs[i], err) != 0)
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
            return bt_error_set(err, BT_ERR_VALUE, /* the client can ask through v2 */
                                "output '%.64s' of shape %s holds %lld numbers but would take "
                                "%s%lld nested JSON lists; ask for it through the v2 protocol, "
                                "which sends it flat",
                                outputs[i].name,
                                bt_shape_str(shape, sizeof shape, t->shape, t->ndim),
                                (long long)bt_numel(t), lists == INT64_MAX ? "over " : "",
                                (long long)lists);
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

void bt_codec_encode_error(bt_buf *out, const char *message)
{
    bt_buf_puts(out, "{\"error\":");
    bt_buf_json_string(out, message);
    bt_buf_puts(out, "}");
}
