/*
 * fuzz_codec.c - libFuzzer target for the serving codec (codec_v2.c, codec_v1.c and the
 * codec_leaf.c rules they share).
 *
 * The first input byte picks the entry point: v2 JSON, v2 with a binary part (the next
 * two bytes give Inference-Header-Content-Length), or v1. Every request that parses is
 * encoded back as a v2 response (JSON and binary) and a v1 response, and the v2 JSON
 * encoding is parsed again: it must parse and give the same tensors (unless it holds
 * floats, whose text may not read back exactly, or INT64 values of 2^53 or more, which
 * JSON numbers cannot carry exactly and the parser refuses).
 *
 * Every v2 body is also parsed twice more, once with the fast path for numeric data
 * (codec_data.c) tried whatever the body's length and once without it: both must give
 * the same result, the same tensors to the byte or the same error.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tensor.h"
#include "serving/codec.h"
#include "serving/codec_leaf.h"
#include "serving/json_body.h"

static void roundtrip(const bt_infer_request *req)
{
    bt_output outs[BT_CODEC_MAX_TENSORS];
    for (size_t i = 0; i < req->n_inputs; i++) {
        outs[i].name = req->inputs[i].name;
        outs[i].tensor = &req->inputs[i].tensor->dl_tensor;
        outs[i].binary = 0;
    }
    bt_error err;
    bt_buf buf = {0};
    size_t json_len = 0;
    if (bt_codec_encode_v2(&buf, "m", "1", req->id, outs, req->n_inputs, &json_len, &err) != 0)
        abort();
    /* Re-parse the response's outputs as a request's inputs. */
    const char *p = strstr(buf.data, "\"outputs\":");
    bt_buf again = {0};
    bt_buf_puts(&again, "{\"inputs\":");
    bt_buf_append(&again, p + 10, strlen(p + 10));
    bt_infer_request *back = NULL;
    int inexact = 0;
    for (size_t i = 0; i < req->n_inputs; i++) {
        const DLTensor *t = &req->inputs[i].tensor->dl_tensor;
        if (t->dtype.code == kDLFloat) {
            inexact = 1; /* NaN/Inf become null; precision of FP16 text differs */
        }
        if (t->dtype.code == kDLInt && t->dtype.bits == 64) {
            /* binary INT64 data may hold integers a JSON number cannot carry exactly
             * (|v| >= 2^53): the JSON response has them, but parsing it refuses them */
            int64_t n = bt_numel(t);
            for (int64_t k = 0; k < n; k++) {
                int64_t v;
                memcpy(&v, (const char *)t->data + k * 8, 8);
                if (v >= (INT64_C(1) << 53) || v <= -(INT64_C(1) << 53))
                    inexact = 1;
            }
        }
    }
    if (bt_codec_parse_v2(again.data, again.len, -1, &back, &err) != 0) {
        if (!inexact)
            abort();
    } else if (!inexact) {
        if (back->n_inputs != req->n_inputs)
            abort();
        for (size_t i = 0; i < req->n_inputs; i++) {
            const DLTensor *a = &req->inputs[i].tensor->dl_tensor;
            const DLTensor *b = &back->inputs[i].tensor->dl_tensor;
            int64_t n = bt_numel(a);
            if (a->ndim != b->ndim || n != bt_numel(b) ||
                memcmp(a->data, b->data, (size_t)n * bt_dtype_size(a->dtype)) != 0)
                abort();
        }
    }
    bt_infer_request_free(back);
    bt_buf_free(&again);
    buf.len = 0;
    for (size_t i = 0; i < req->n_inputs; i++)
        outs[i].binary = 1;
    if (bt_codec_encode_v2(&buf, "m", "1", req->id, outs, req->n_inputs, &json_len, &err) != 0)
        abort();
    buf.len = 0;
    (void)bt_codec_encode_v1(&buf, outs, req->n_inputs, &err);
    bt_buf_free(&buf);
}

/* Whether two parses of one body agree: both failed with the same message, or both gave
 * the same request. */
static int same_parse(int rc_a, const bt_infer_request *a, const bt_error *err_a, int rc_b,
                      const bt_infer_request *b, const bt_error *err_b)
{
    if (rc_a != rc_b)
        return 0;
    if (rc_a != 0)
        return strcmp(err_a->message, err_b->message) == 0 && err_a->kind == err_b->kind;
    if (a->n_inputs != b->n_inputs || a->n_outputs != b->n_outputs ||
        (a->id == NULL) != (b->id == NULL) || (a->id && strcmp(a->id, b->id) != 0))
        return 0;
    for (size_t i = 0; i < a->n_inputs; i++) {
        const DLTensor *x = &a->inputs[i].tensor->dl_tensor;
        const DLTensor *y = &b->inputs[i].tensor->dl_tensor;
        int64_t n = bt_numel(x);
        if (strcmp(a->inputs[i].name, b->inputs[i].name) != 0 || x->ndim != y->ndim ||
            x->dtype.code != y->dtype.code || x->dtype.bits != y->dtype.bits ||
            memcmp(x->shape, y->shape, (size_t)x->ndim * sizeof(int64_t)) != 0 ||
            memcmp(x->data, y->data, (size_t)n * bt_dtype_size(x->dtype)) != 0)
            return 0;
    }
    for (size_t i = 0; i < a->n_outputs; i++)
        if (strcmp(a->outputs[i].name, b->outputs[i].name) != 0 ||
            a->outputs[i].binary != b->outputs[i].binary)
            return 0;
    return 1;
}

/* The v2 parse with the fast path tried on every body, and without it. */
static void compare_paths(const char *body, size_t len, long long header_len)
{
    bt_infer_request *fast = NULL, *slow = NULL;
    bt_error err_fast = {BT_OK, ""}, err_slow = {BT_OK, ""};
    bt_codec_set_fast_min_bytes(0);
    int rc_fast = bt_codec_parse_v2(body, len, header_len, &fast, &err_fast);
    bt_codec_set_fast_min_bytes(SIZE_MAX);
    int rc_slow = bt_codec_parse_v2(body, len, header_len, &slow, &err_slow);
    bt_codec_set_fast_min_bytes(BT_CODEC_FAST_MIN_BYTES);
    if (!same_parse(rc_fast, fast, &err_fast, rc_slow, slow, &err_slow))
        abort();
    bt_infer_request_free(fast);
    bt_infer_request_free(slow);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    bt_json_init(); /* the request-body arena, as in berth._core */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 3;
    data++;
    size--;
    bt_infer_request *req = NULL;
    bt_error err;
    int rc;
    if (mode == 0) {
        compare_paths((const char *)data, size, -1);
        rc = bt_codec_parse_v2((const char *)data, size, -1, &req, &err);
    } else if (mode == 1) {
        if (size < 2)
            return 0;
        long long hlen = (long long)(data[0] | (data[1] << 8));
        compare_paths((const char *)data + 2, size - 2, hlen);
        rc = bt_codec_parse_v2((const char *)data + 2, size - 2, hlen, &req, &err);
    } else {
        bt_v1_hint hints[2] = {{"a", 0, {kDLFloat, 32, 1}}, {"b", 1, {kDLInt, 64, 1}}};
        rc = bt_codec_parse_v1((const char *)data, size, hints, 1 + (size & 1), &req, &err);
    }
    if (rc == 0) {
        roundtrip(req);
        bt_infer_request_free(req);
    } else if (err.message[0] == '\0') {
        abort(); /* every failure names its cause */
    }
    return 0;
}
