/*
 * codec.h - the serving protocols, implemented once in C: the Open Inference Protocol v2
 * (JSON tensors and the binary tensor data extension) and KServe v1
 * (instances/predictions). No HTTP and no Python here: the C server and the
 * Flask/FastAPI adapters both hand raw bodies to these functions.
 *
 * Parsing checks every declared shape against the data actually present before any
 * allocation is sized from it, so a body can never make the codec allocate more than a
 * small multiple of its own length.
 */
#ifndef BERTH_CODEC_H
#define BERTH_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "berth/dlpack.h"
#include "runtime/error.h"
#include "serving/buffer.h" /* bt_buf, which the encoders append to */

/* The version a model is served as unless its repository says otherwise. */
#define BT_MODEL_VERSION "1"

#define BT_CODEC_MAX_NDIM    32  /* deepest tensor a request may declare */
#define BT_CODEC_MAX_TENSORS 256 /* most inputs or requested outputs in one request */
/* Nested lists a v1 output may take beyond one per number per level of nesting: only
 * zero-sized dimensions ask for more, and rows of empty lists cost nothing to hold but
 * all the time in the world to write. */
#define BT_CODEC_MAX_V1_EMPTY_LISTS (1 << 20)

/* One named input tensor of a request. */
typedef struct bt_named_tensor {
    char *name;              /* owned */
    DLManagedTensor *tensor; /* owned (NULL once handed on) */
} bt_named_tensor;

/* One output the client asked for by name. */
typedef struct bt_output_request {
    char *name; /* owned */
    int binary; /* parameters.binary_data: 1 yes, 0 no, -1 not given */
} bt_output_request;

/* A parsed inference request (v2 or v1). */
typedef struct bt_infer_request {
    char *id; /* owned; NULL when the request has none */
    size_t n_inputs;
    bt_named_tensor *inputs;    /* n_inputs entries, owned */
    size_t n_outputs;           /* 0: every output */
    bt_output_request *outputs; /* n_outputs entries, owned */
    int binary_data_output;     /* top-level parameters.binary_data_output (0/1) */
} bt_infer_request;

/* NULL-tolerant; frees any tensor still owned. */
void bt_infer_request_free(bt_infer_request *req);

/* Bytes per element of a supported dtype, 0 otherwise. */
size_t bt_codec_elem_size(DLDataType dtype);

/* v2 datatype name ("FP32") for a DLPack dtype, or NULL when the protocol has none. */
const char *bt_codec_datatype_name(DLDataType dtype);

/* Parses a v2 datatype name; 0 on success, -1 (err set, naming the supported ones). */
int bt_codec_datatype_parse(const char *name, DLDataType *out, bt_error *err);

/* Parses a POST /v2/models/{name}/infer body. header_len is the value of the
 * Inference-Header-Content-Length header, or -1 when absent (the whole body is JSON).
 * On success *out is owned by the caller. On failure returns -1 with err set
 * (BT_ERR_VALUE / BT_ERR_TYPE: the client's mistake, HTTP 400). */
int bt_codec_parse_v2(const char *body, size_t len, long long header_len, bt_infer_request **out,
                      bt_error *err);

/* Hints for v1, whose instances carry no dtypes: one per model input. */
typedef struct bt_v1_hint {
    const char *name; /* input name, used when instances are objects */
    int has_dtype;    /* dtype below is meaningful; otherwise FP32 */
    DLDataType dtype;
} bt_v1_hint;

/* Parses a POST /v1/models/{name}:predict body: {"instances": [...]}. Each instance is
 * a number or nested list (single-input models) or an object keyed by input name.
 * The instances become the leading (batch) dimension. */
int bt_codec_parse_v1(const char *body, size_t len, const bt_v1_hint *hints, size_t n_hints,
                      bt_infer_request **out, bt_error *err);

/* One output to encode. */
typedef struct bt_output {
    const char *name;
    const DLTensor *tensor;
    int binary; /* send as binary tensor data */
} bt_output;

/* Appends a v2 infer response to out. *json_len receives the length of the JSON part
 * (the Inference-Header-Content-Length when any output is binary). */
int bt_codec_encode_v2(bt_buf *out, const char *model_name, const char *model_version,
                       const char *id, const bt_output *outputs, size_t n, size_t *json_len,
                       bt_error *err);

/* Appends {"predictions": [...]}: the rows of a single output, or one object per row
 * keyed by output name when there are several (all with the same leading dim). */
int bt_codec_encode_v1(bt_buf *out, const bt_output *outputs, size_t n, bt_error *err);

/* Appends {"error": "message"}. */
void bt_codec_encode_error(bt_buf *out, const char *message);

#endif /* BERTH_CODEC_H */
