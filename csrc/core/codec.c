/*
 * codec.c - Open Inference Protocol v2 and KServe v1 bodies <-> DLPack tensors.
 *
 * JSON is parsed with jansson. Responses are written directly into a bt_buf (numbers with
 * printf, strings escaped here) because building a jansson tree of every output element
 * would cost more than the forward of a small model.
 */
#define _POSIX_C_SOURCE 200809L
#include "codec.h"
#include "tensor.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ buffers */

static int buf_reserve(bt_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void bt_buf_append(bt_buf *b, const void *data, size_t n)
{
    if (n == 0 || buf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void bt_buf_puts(bt_buf *b, const char *s) { bt_buf_append(b, s, strlen(s)); }

void bt_buf_printf(bt_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        bt_buf_append(b, small, (size_t)n);
        return;
    }
    if (buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void bt_buf_json_string(bt_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    bt_buf_append(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;
    for (; *p; p++) {
        unsigned char c = *p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        bt_buf_append(b, run, (size_t)(p - run));
        run = p + 1;
        switch (c) {
        case '"': bt_buf_append(b, "\\\"", 2); break;
        case '\\': bt_buf_append(b, "\\\\", 2); break;
        case '\n': bt_buf_append(b, "\\n", 2); break;
        case '\r': bt_buf_append(b, "\\r", 2); break;
        case '\t': bt_buf_append(b, "\\t", 2); break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            bt_buf_append(b, esc, 6);
        }
        }
    }
    bt_buf_append(b, run, (size_t)(p - run));
    bt_buf_append(b, "\"", 1);
}

void bt_buf_free(bt_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

/* ------------------------------------------------------------------ dtypes */

typedef struct dtype_entry {
    const char *name;
    uint8_t code;
    uint8_t bits;
} dtype_entry;

static const dtype_entry DTYPES[] = {
    {"BOOL", BERTH_DL_BOOL, 8}, {"UINT8", kDLUInt, 8},  {"INT8", kDLInt, 8},
    {"INT16", kDLInt, 16},      {"INT32", kDLInt, 32},  {"INT64", kDLInt, 64},
    {"FP16", kDLFloat, 16},     {"FP32", kDLFloat, 32}, {"FP64", kDLFloat, 64},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])
#define SUPPORTED_DATATYPES "BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, FP32, FP64"

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

/* ------------------------------------------------------------------ fp16 */

static uint16_t float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mant = x & 0x7fffffu;
    int exp = (int)((x >> 23) & 0xffu);
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0u));
    int e = exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        unsigned shift = (unsigned)(14 - e);
        uint32_t h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent rounds up correctly, to inf at the top */
    return (uint16_t)(sign | h);
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else {
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ffu;
            x = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* ------------------------------------------------------------------ JSON -> elements */

/* Converts one JSON leaf to dtype and stores it at dst (dst NULL: check only). */
static int store_leaf(const json_t *v, DLDataType dt, void *dst, const char *what,
                      bt_error *err)
{
    const char *dname = bt_codec_datatype_name(dt);
    if (dt.code == BERTH_DL_BOOL) {
        int bv;
        if (json_is_boolean(v))
            bv = json_is_true(v);
        else if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
            bv = (int)json_integer_value(v);
        else
            return bt_error_set(err, BT_ERR_TYPE, "%s: expected true/false for BOOL data, got %s",
                                what, json_is_number(v) ? "a number" : "a non-boolean value");
        if (dst)
            *(uint8_t *)dst = (uint8_t)bv;
        return 0;
    }
    if (!json_is_number(v))
        return bt_error_set(err, BT_ERR_TYPE, "%s: expected numbers for %s data, got %s", what,
                            dname,
                            json_is_string(v) ? "a string"
                            : json_is_boolean(v) ? "a boolean"
                            : json_is_null(v) ? "null"
                            : json_is_object(v) ? "an object"
                                                 : "a list");
    if (dt.code == kDLFloat) {
        double d = json_number_value(v);
        if (dt.bits == 64) {
            if (dst)
                memcpy(dst, &d, 8);
        } else if (dt.bits == 32) {
            if (fabs(d) > FLT_MAX)
                return bt_error_set(err, BT_ERR_VALUE, "%s: %g is out of range for FP32", what, d);
            float f = (float)d;
            if (dst)
                memcpy(dst, &f, 4);
        } else {
            if (fabs(d) > 65504.0)
                return bt_error_set(err, BT_ERR_VALUE, "%s: %g is out of range for FP16", what, d);
            uint16_t h = float_to_half((float)d);
            if (dst)
                memcpy(dst, &h, 2);
        }
        return 0;
    }
    /* integers */
    long long iv;
    if (json_is_integer(v)) {
        iv = json_integer_value(v);
    } else {
        double d = json_real_value(v);
        if (d != floor(d) || d < -9.2e18 || d > 9.2e18)
            return bt_error_set(err, BT_ERR_TYPE, "%s: expected integers for %s data, got %g",
                                what, dname, d);
        iv = (long long)d;
    }
    long long lo, hi;
    if (dt.code == kDLUInt) {
        lo = 0;
        hi = 255;
    } else {
        switch (dt.bits) {
        case 8: lo = INT8_MIN; hi = INT8_MAX; break;
        case 16: lo = INT16_MIN; hi = INT16_MAX; break;
        case 32: lo = INT32_MIN; hi = INT32_MAX; break;
        default: lo = INT64_MIN; hi = INT64_MAX; break;
        }
    }
    if (iv < lo || iv > hi)
        return bt_error_set(err, BT_ERR_VALUE, "%s: %lld is out of range for %s", what, iv, dname);
    if (dst) {
        switch (dt.bits) {
        case 8: { int8_t x = (int8_t)iv; if (dt.code == kDLUInt) *(uint8_t *)dst = (uint8_t)iv; else memcpy(dst, &x, 1); break; }
        case 16: { int16_t x = (int16_t)iv; memcpy(dst, &x, 2); break; }
        case 32: { int32_t x = (int32_t)iv; memcpy(dst, &x, 4); break; }
        default: { int64_t x = (int64_t)iv; memcpy(dst, &x, 8); break; }
        }
    }
    return 0;
}

/* Counts and type-checks the leaves of (possibly nested) data without storing them. */
static int count_leaves(const json_t *v, DLDataType dt, int depth, int64_t *count,
                        const char *what, bt_error *err)
{
    if (json_is_array(v)) {
        if (depth >= BT_CODEC_MAX_NDIM)
            return bt_error_set(err, BT_ERR_VALUE, "%s: data is nested deeper than %d levels",
                                what, BT_CODEC_MAX_NDIM);
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++)
            if (count_leaves(json_array_get(v, i), dt, depth + 1, count, what, err) != 0)
                return -1;
        return 0;
    }
    if (store_leaf(v, dt, NULL, what, err) != 0)
        return -1;
    (*count)++;
    return 0;
}

/* Stores the leaves of checked data in row-major order. */
static void store_leaves(const json_t *v, DLDataType dt, char **dst, size_t esize)
{
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++)
            store_leaves(json_array_get(v, i), dt, dst, esize);
        return;
    }
    store_leaf(v, dt, *dst, "", NULL);
    *dst += esize;
}

static char *dup_str(const char *s, bt_error *err)
{
    char *d = strdup(s);
    if (!d)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    return d;
}

/* The request body as JSON (duplicate keys refused); NULL with err set otherwise. */
static json_t *parse_body(const char *body, size_t len, bt_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        bt_error_set(err, BT_ERR_VALUE, "request body is not valid JSON: %s (line %d, column %d)",
                     jerr.text, jerr.line, jerr.column);
    return root;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static bt_infer_request *request_new(bt_error *err)
{
    bt_infer_request *req = calloc(1, sizeof *req);
    if (!req)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    return req;
}

/* Parses the "outputs" list and top-level "parameters" shared by v2 requests. */
static int parse_v2_outputs(json_t *root, bt_infer_request *req, bt_error *err)
{
    json_t *params = json_object_get(root, "parameters");
    if (params) {
        if (!json_is_object(params))
            return bt_error_set(err, BT_ERR_TYPE, "'parameters' must be an object, got %s",
                                json_kind(params));
        json_t *bdo = json_object_get(params, "binary_data_output");
        if (bdo) {
            if (!json_is_boolean(bdo))
                return bt_error_set(err, BT_ERR_TYPE,
                                    "parameters.binary_data_output must be true or false, got %s",
                                    json_kind(bdo));
            req->binary_data_output = json_is_true(bdo);
        }
    }
    json_t *outs = json_object_get(root, "outputs");
    if (!outs)
        return 0;
    if (!json_is_array(outs))
        return bt_error_set(err, BT_ERR_TYPE, "'outputs' must be a list, got %s", json_kind(outs));
    size_t n = json_array_size(outs);
    if (n > BT_CODEC_MAX_TENSORS)
        return bt_error_set(err, BT_ERR_VALUE, "'outputs' lists %zu tensors; at most %d allowed",
                            n, BT_CODEC_MAX_TENSORS);
    if (n == 0)
        return 0;
    req->outputs = calloc(n, sizeof *req->outputs);
    if (!req->outputs)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(outs, i);
        if (!json_is_object(o))
            return bt_error_set(err, BT_ERR_TYPE, "outputs[%zu] must be an object, got %s", i,
                                json_kind(o));
        json_t *name = json_object_get(o, "name");
        if (!json_is_string(name))
            return bt_error_set(err, BT_ERR_VALUE, "outputs[%zu] needs a string 'name'", i);
        req->outputs[i].binary = -1;
        json_t *op = json_object_get(o, "parameters");
        if (op) {
            if (!json_is_object(op))
                return bt_error_set(err, BT_ERR_TYPE,
                                    "outputs[%zu].parameters must be an object, got %s", i,
                                    json_kind(op));
            json_t *bd = json_object_get(op, "binary_data");
            if (bd) {
                if (!json_is_boolean(bd))
                    return bt_error_set(err, BT_ERR_TYPE,
                                        "outputs[%zu].parameters.binary_data must be true or "
                                        "false, got %s",
                                        i, json_kind(bd));
                req->outputs[i].binary = json_is_true(bd);
            }
        }
        req->outputs[i].name = dup_str(json_string_value(name), err);
        if (!req->outputs[i].name)
            return -1;
        req->n_outputs = i + 1;
    }
    return 0;
}

/* Parses one element of "inputs" into req->inputs[i]. *bin_off tracks the binary part. */
static int parse_v2_input(json_t *in, size_t i, const char *bin, size_t bin_len,
                          size_t *bin_off, bt_infer_request *req, bt_error *err)
{
    char what[160];
    if (!json_is_object(in))
        return bt_error_set(err, BT_ERR_TYPE, "inputs[%zu] must be an object, got %s", i,
                            json_kind(in));
    json_t *jname = json_object_get(in, "name");
    if (!json_is_string(jname))
        return bt_error_set(err, BT_ERR_VALUE, "inputs[%zu] needs a string 'name'%s", i,
                            jname ? ", got another type" : "");
    const char *name = json_string_value(jname);
    for (size_t k = 0; k < i; k++)
        if (strcmp(req->inputs[k].name, name) == 0)
            return bt_error_set(err, BT_ERR_VALUE, "input '%.64s' appears twice", name);
    snprintf(what, sizeof what, "input '%.64s'", name);

    json_t *jdt = json_object_get(in, "datatype");
    if (!json_is_string(jdt))
        return bt_error_set(err, BT_ERR_VALUE, "%s needs a string 'datatype' (one of %s)", what,
                            SUPPORTED_DATATYPES);
    DLDataType dt;
    if (bt_codec_datatype_parse(json_string_value(jdt), &dt, err) != 0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        return bt_error_set(err, BT_ERR_TYPE, "%s: %s", what, msg);
    }

    json_t *jshape = json_object_get(in, "shape");
    if (!json_is_array(jshape))
        return bt_error_set(err, BT_ERR_VALUE, "%s needs a 'shape' list of non-negative integers",
                            what);
    size_t ndim = json_array_size(jshape);
    if (ndim > BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_VALUE, "%s: shape has %zu dimensions; at most %d allowed",
                            what, ndim, BT_CODEC_MAX_NDIM);
    int64_t shape[BT_CODEC_MAX_NDIM];
    int64_t numel = 1;
    int overflow = 0;
    for (size_t d = 0; d < ndim; d++) {
        json_t *e = json_array_get(jshape, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: shape[%zu] must be a non-negative integer, got %s", what, d,
                                json_is_integer(e) ? "a negative integer" : json_kind(e));
        shape[d] = (int64_t)json_integer_value(e);
        if (__builtin_mul_overflow(numel, shape[d], &numel))
            overflow = 1;
    }
    size_t esize = dt.bits / 8u;

    json_t *data = json_object_get(in, "data");
    json_t *iparams = json_object_get(in, "parameters");
    json_t *bsize = NULL;
    if (iparams) {
        if (!json_is_object(iparams))
            return bt_error_set(err, BT_ERR_TYPE, "%s: 'parameters' must be an object, got %s",
                                what, json_kind(iparams));
        bsize = json_object_get(iparams, "binary_data_size");
    }
    if (data && bsize)
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s has both 'data' and parameters.binary_data_size; send one", what);

    DLManagedTensor *t = NULL;
    if (bsize) {
        if (!json_is_integer(bsize) || json_integer_value(bsize) < 0)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: parameters.binary_data_size must be a non-negative integer",
                                what);
        uint64_t size = (uint64_t)json_integer_value(bsize);
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
                                json_string_value(jdt), (unsigned long long)expect);
        if (size > bin_len - *bin_off)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: binary_data_size is %llu bytes but only %zu bytes of binary "
                                "data remain after the JSON header",
                                what, (unsigned long long)size, bin_len - *bin_off);
        t = bt_tensor_new(dt, (int)ndim, shape, err);
        if (!t)
            return -1;
        if (size)
            memcpy(t->dl_tensor.data, bin + *bin_off, (size_t)size);
        *bin_off += (size_t)size;
    } else {
        if (!data)
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s has no 'data' (and no parameters.binary_data_size)", what);
        int64_t count = 0;
        if (count_leaves(data, dt, 0, &count, what, err) != 0)
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
        char *dst = t->dl_tensor.data;
        store_leaves(data, dt, &dst, esize);
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
    json_t *root = parse_body(body, json_len, err);
    if (!root)
        return -1;
    bt_infer_request *req = NULL;
    int rc = -1;
    if (!json_is_object(root)) {
        bt_error_set(err, BT_ERR_VALUE, "request body must be a JSON object, got %s",
                     json_kind(root));
        goto done;
    }
    json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs) || json_array_size(inputs) == 0) {
        bt_error_set(err, BT_ERR_VALUE, "request needs a non-empty 'inputs' list%s%s",
                     inputs ? ", got " : "", inputs ? json_kind(inputs) : "");
        goto done;
    }
    size_t n = json_array_size(inputs);
    if (n > BT_CODEC_MAX_TENSORS) {
        bt_error_set(err, BT_ERR_VALUE, "'inputs' lists %zu tensors; at most %d allowed", n,
                     BT_CODEC_MAX_TENSORS);
        goto done;
    }
    req = request_new(err);
    if (!req)
        goto done;
    json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id)) {
            bt_error_set(err, BT_ERR_TYPE, "'id' must be a string, got %s", json_kind(id));
            goto done;
        }
        req->id = dup_str(json_string_value(id), err);
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
    for (size_t i = 0; i < n; i++)
        if (parse_v2_input(json_array_get(inputs, i), i, bin, bin_len, &bin_off, req, err) != 0)
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
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------ v1 */

/* Shape of the first element path of v (descending into first elements). */
static int infer_shape(const json_t *v, int64_t *shape, int *ndim, const char *what,
                       bt_error *err)
{
    *ndim = 0;
    while (json_is_array(v)) {
        if (*ndim >= BT_CODEC_MAX_NDIM - 1)
            return bt_error_set(err, BT_ERR_VALUE, "%s is nested deeper than %d levels", what,
                                BT_CODEC_MAX_NDIM - 1);
        size_t n = json_array_size(v);
        shape[(*ndim)++] = (int64_t)n;
        if (n == 0)
            break;
        v = json_array_get(v, 0);
    }
    return 0;
}

/* Checks v is a rectangular array of the given shape with valid leaves. */
static int check_rect(const json_t *v, const int64_t *shape, int ndim, int depth,
                      DLDataType dt, const char *what, bt_error *err)
{
    if (depth == ndim) {
        if (json_is_array(v))
            return bt_error_set(err, BT_ERR_VALUE,
                                "%s: instances are not all the same shape (ragged lists)", what);
        return store_leaf(v, dt, NULL, what, err);
    }
    if (!json_is_array(v) || (int64_t)json_array_size(v) != shape[depth])
        return bt_error_set(err, BT_ERR_VALUE,
                            "%s: instances are not all the same shape (ragged lists)", what);
    for (size_t i = 0; i < json_array_size(v); i++)
        if (check_rect(json_array_get(v, i), shape, ndim, depth + 1, dt, what, err) != 0)
            return -1;
    return 0;
}

int bt_codec_parse_v1(const char *body, size_t len, const bt_v1_hint *hints,
                      size_t n_hints, bt_infer_request **out, bt_error *err)
{
    *out = NULL;
    json_t *root = parse_body(body, len, err);
    if (!root)
        return -1;
    bt_infer_request *req = NULL;
    int rc = -1;
    json_t *inst = json_is_object(root) ? json_object_get(root, "instances") : NULL;
    if (!json_is_array(inst) || json_array_size(inst) == 0) {
        bt_error_set(err, BT_ERR_VALUE, "request body must be {\"instances\": [...]} with at "
                                        "least one instance");
        goto done;
    }
    if (n_hints == 0 || n_hints > BT_CODEC_MAX_TENSORS) {
        bt_error_set(err, BT_ERR_VALUE, "the model's inputs are unknown");
        goto done;
    }
    size_t n_inst = json_array_size(inst);
    int keyed = json_is_object(json_array_get(inst, 0));
    if (!keyed && n_hints != 1) {
        bt_error_set(err, BT_ERR_VALUE,
                     "the model takes %zu inputs: send each instance as an object keyed by "
                     "input name",
                     n_hints);
        goto done;
    }
    if (keyed) {
        for (size_t i = 0; i < n_inst; i++) {
            json_t *o = json_array_get(inst, i);
            if (!json_is_object(o)) {
                bt_error_set(err, BT_ERR_VALUE,
                             "instances[%zu] is %s but instances[0] is an object", i,
                             json_kind(o));
                goto done;
            }
            const char *key;
            json_t *val;
            json_object_foreach(o, key, val)
            {
                size_t h = 0;
                while (h < n_hints && strcmp(hints[h].name, key) != 0)
                    h++;
                if (h == n_hints) {
                    bt_error_set(err, BT_ERR_VALUE, "instances[%zu] has unknown input '%.64s'",
                                 i, key);
                    goto done;
                }
            }
            (void)val;
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
        const json_t *first = json_array_get(inst, 0);
        if (keyed) {
            first = json_object_get(first, hints[h].name);
            if (!first) {
                bt_error_set(err, BT_ERR_VALUE, "instances[0] has no input '%.64s'",
                             hints[h].name);
                goto done;
            }
        }
        int64_t shape[BT_CODEC_MAX_NDIM];
        int ndim;
        shape[0] = (int64_t)n_inst;
        if (infer_shape(first, shape + 1, &ndim, what, err) != 0)
            goto done;
        for (size_t i = 0; i < n_inst; i++) {
            const json_t *v = json_array_get(inst, i);
            if (keyed) {
                v = json_object_get(v, hints[h].name);
                if (!v) {
                    bt_error_set(err, BT_ERR_VALUE, "instances[%zu] has no input '%.64s'", i,
                                 hints[h].name);
                    goto done;
                }
            }
            if (check_rect(v, shape + 1, ndim, 0, dt, what, err) != 0)
                goto done;
        }
        DLManagedTensor *t = bt_tensor_new(dt, ndim + 1, shape, err);
        if (!t)
            goto done;
        char *dst = t->dl_tensor.data;
        for (size_t i = 0; i < n_inst; i++) {
            const json_t *v = json_array_get(inst, i);
            if (keyed)
                v = json_object_get(v, hints[h].name);
            store_leaves(v, dt, &dst, dt.bits / 8u);
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
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------ encoding */

static int is_contiguous(const DLTensor *t)
{
    if (!t->strides)
        return 1;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->strides[d] != expect)
            return 0;
        expect *= t->shape[d];
    }
    return 1;
}

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
            v = half_to_float(h);
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
        return bt_error_set(err, BT_ERR_INFERENCE,
                            "output '%.64s' has dtype %s, which the protocol cannot carry",
                            o->name, bt_dtype_name(o->tensor->dtype.code, o->tensor->dtype.bits));
    if (o->tensor->ndim > BT_CODEC_MAX_NDIM)
        return bt_error_set(err, BT_ERR_INFERENCE, "output '%.64s' has too many dimensions",
                            o->name);
    return 0;
}

int bt_codec_encode_v2(bt_buf *out, const char *model_name, const char *id,
                       const bt_output *outputs, size_t n, size_t *json_len, bt_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (check_output(&outputs[i], err) != 0)
            return -1;
    size_t start = out->len;
    bt_buf_puts(out, "{\"model_name\":");
    bt_buf_json_string(out, model_name);
    bt_buf_puts(out, ",\"model_version\":\"1\"");
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
        int contig = is_contiguous(t);
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
        if (is_contiguous(t)) {
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

int bt_codec_encode_v1(bt_buf *out, const bt_output *outputs, size_t n, bt_error *err)
{
    if (n == 0)
        return bt_error_set(err, BT_ERR_INFERENCE, "the model returned no outputs");
    for (size_t i = 0; i < n; i++) {
        if (check_output(&outputs[i], err) != 0)
            return -1;
        const DLTensor *t = outputs[i].tensor;
        if (t->ndim < 1 || t->shape[0] != outputs[0].tensor->shape[0] ||
            outputs[0].tensor->ndim < 1)
            return bt_error_set(err, BT_ERR_INFERENCE,
                                "output '%.64s' has no leading dimension matching the instances",
                                outputs[i].name);
    }
    int64_t rows = outputs[0].tensor->shape[0];
    bt_buf_puts(out, "{\"predictions\":[");
    if (n == 1) {
        int64_t pos = 0;
        const DLTensor *t = outputs[0].tensor;
        int contig = is_contiguous(t);
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
                append_nested(out, t, 1, &pos, is_contiguous(t));
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
