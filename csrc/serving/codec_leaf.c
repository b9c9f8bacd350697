/*
 * codec_leaf.c - what the v2 (codec_v2.c) and v1 (codec_v1.c) codecs share: the datatype
 * names, the checks and store loops for the leaves of JSON data, the request free, the
 * small helpers of a parse, and the element text both encoders write.
 */
#define _POSIX_C_SOURCE 200809L
#include "serving/codec_leaf.h"
#include "runtime/tensor.h"

#include <float.h>
#include <math.h>
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
    return bt_error_set(err, BT_ERR_TYPE, "unsupported datatype '%.64s': expected one of %s", name,
                        SUPPORTED_DATATYPES);
}

size_t bt_codec_elem_size(DLDataType dtype)
{
    return bt_codec_datatype_name(dtype) ? dtype.bits / 8u : 0;
}

/* ------------------------------------------------------------------ requests */

void bt_codec_tensor_release(DLManagedTensor *t)
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
        bt_codec_tensor_release(req->inputs[i].tensor);
    }
    free(req->inputs);
    for (size_t i = 0; i < req->n_outputs; i++)
        free(req->outputs[i].name);
    free(req->outputs);
    free(req->id);
    free(req);
}

/* ------------------------------------------------------------------ JSON -> elements */

void bt_leaf_rule_init(leaf_rule *r, DLDataType dt, const char *what)
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
        case 0:
            r->hi = 255;
            break;
        case 8:
            r->lo = INT8_MIN;
            r->hi = INT8_MAX;
            break;
        case 16:
            r->lo = INT16_MIN;
            r->hi = INT16_MAX;
            break;
        case 32:
            r->lo = INT32_MIN;
            r->hi = INT32_MAX;
            break;
        default:
            r->lo = -(JSON_EXACT_LIMIT - 1);
            r->hi = JSON_EXACT_LIMIT - 1;
            break;
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
        return bt_error_set(err, BT_ERR_TYPE, "%s: expected true/false for BOOL data, got %s", what,
                            type == cJSON_Number ? "a number" : "a non-boolean value");
    if (type != cJSON_Number)
        return bt_error_set(err, BT_ERR_TYPE, "%s: expected numbers for %s data, got %s", what,
                            r->dname,
                            type == cJSON_String                        ? "a string"
                            : type == cJSON_True || type == cJSON_False ? "a boolean"
                            : type == cJSON_NULL                        ? "null"
                            : type == cJSON_Object                      ? "an object"
                                                                        : "a list");
    double d = v->valuedouble;
    if (r->cls == LEAF_FLOAT)
        return bt_error_set(err, BT_ERR_VALUE, "%s: %g is out of range for %s", what, d, r->dname);
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

int bt_leaf_ragged(const leaf_rule *r, bt_error *err)
{
    return bt_error_set(err, BT_ERR_VALUE,
                        "%s: instances are not all the same shape (ragged lists)", r->what);
}

/* A list met at the given depth of the data: descend, unless too deep or (flat) not
 * allowed there. */
static int check_nested(const cJSON *list, const leaf_rule *r, int depth, int flat, int64_t *count,
                        bt_error *err)
{
    if (flat)
        return bt_leaf_ragged(r, err);
    if (depth >= BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_VALUE, "%s: data is nested deeper than %d levels", r->what,
                            BT_CODEC_MAX_NDIM);
    return bt_leaf_check_run(list->child, r, depth + 1, 0, count, err);
}

/* Whether leaf c passes r's checks (leaf_error says why one does not). */
static inline int leaf_ok(const cJSON *c, const leaf_rule *r)
{
    int type = c->type & 0xFF;
    if (type == cJSON_Number)
        return bt_leaf_number_ok(c->valuedouble, r);
    return r->cls == LEAF_BOOL && (type == cJSON_True || type == cJSON_False);
}

/* Checks the values of the sibling list starting at c (all at the given depth), adding
 * the number of leaves to *count. Nested lists are walked (or refused when flat). */
int bt_leaf_check_run(const cJSON *c, const leaf_rule *r, int depth, int flat, int64_t *count,
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
#define DEFINE_STORE(NAME, CTYPE, CONVERT)                                                         \
    static char *NAME(const cJSON *c, char *dst)                                                   \
    {                                                                                              \
        for (; c; c = c->next) {                                                                   \
            if ((c->type & 0xFF) == cJSON_Array) {                                                 \
                dst = NAME(c->child, dst);                                                         \
                continue;                                                                          \
            }                                                                                      \
            CTYPE x = CONVERT(c);                                                                  \
            memcpy(dst, &x, sizeof x);                                                             \
            dst += sizeof x;                                                                       \
        }                                                                                          \
        return dst;                                                                                \
    }

#define CONV_BOOL(c)                                                                               \
    ((uint8_t)(((c)->type & 0xFF) == cJSON_True ||                                                 \
               (((c)->type & 0xFF) == cJSON_Number && (c)->valuedouble != 0)))
#define CONV_U8(c)  ((uint8_t)(c)->valuedouble)
#define CONV_I8(c)  ((int8_t)(c)->valuedouble)
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

/* The store loop of a supported dtype. */
store_fn bt_leaf_store_for(DLDataType dt)
{
    if (dt.code == BERTH_DL_BOOL)
        return store_bool;
    if (dt.code == kDLUInt)
        return store_u8;
    if (dt.code == kDLFloat)
        return dt.bits == 16 ? store_f16 : dt.bits == 32 ? store_f32 : store_f64;
    return dt.bits == 8    ? store_i8
           : dt.bits == 16 ? store_i16
           : dt.bits == 32 ? store_i32
                           : store_i64;
}

/* ------------------------------------------------------------------ parse helpers */

char *bt_codec_dup_str(const char *s, bt_error *err)
{
    char *d = strdup(s);
    if (!d)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    return d;
}

/* The request body as JSON; NULL with err set otherwise. */
cJSON *bt_codec_parse_body(const char *body, size_t len, bt_error *err)
{
    bt_json_error jerr;
    cJSON *root = bt_json_parse_body(body, len, &jerr);
    if (!root)
        bt_error_set(err, BT_ERR_VALUE, "request body is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
    return root;
}

bt_infer_request *bt_codec_request_new(bt_error *err)
{
    bt_infer_request *req = calloc(1, sizeof *req);
    if (!req)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    return req;
}

/* ------------------------------------------------------------------ outputs */

/* Address of the element at row-major position linear. */
const char *bt_codec_elem_at(const DLTensor *t, int64_t linear, int contiguous, size_t esize)
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

void bt_codec_append_elem(bt_buf *b, const char *p, DLDataType dt)
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
        case 8: {
            int8_t x;
            memcpy(&x, p, 1);
            v = x;
            break;
        }
        case 16: {
            int16_t x;
            memcpy(&x, p, 2);
            v = x;
            break;
        }
        case 32: {
            int32_t x;
            memcpy(&x, p, 4);
            v = x;
            break;
        }
        default: {
            int64_t x;
            memcpy(&x, p, 8);
            v = x;
            break;
        }
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

int bt_codec_check_output(const bt_output *o, bt_error *err)
{
    if (!bt_codec_datatype_name(o->tensor->dtype))
        return bt_error_set(err, BT_ERR_MODEL,
                            "output '%.64s' has dtype %s, which the protocol cannot carry", o->name,
                            bt_dtype_name(o->tensor->dtype.code, o->tensor->dtype.bits));
    if (o->tensor->ndim > BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_MODEL, "output '%.64s' has too many dimensions", o->name);
    return 0;
}

void bt_codec_encode_error(bt_buf *out, const char *message)
{
    bt_buf_puts(out, "{\"error\":");
    bt_buf_json_string(out, message);
    bt_buf_puts(out, "}");
}
