/*
 * model.h - a loaded model as the C core sees it: the shim's handle plus the signature
 * (from the embedded berth.json, else the forward schema), input checks and casts.
 * Plain C, no Python: the HTTP server and the batcher use it without the GIL.
 */
#ifndef BERTH_MODEL_H
#define BERTH_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "berth/dlpack.h"
#include "runtime/error.h"

#define BT_MAX_OUTPUTS 64

/* One input or output of the signature. Unknown parts: has_dtype == 0, ndim == -1. */
typedef struct bt_spec {
    char *name;    /* owned */
    int has_dtype; /* dtype below is meaningful */
    DLDataType dtype;
    int ndim;       /* -1 when the shape is unknown */
    int64_t *shape; /* owned, ndim entries; -1 = any extent */
    int64_t *min;   /* owned, ndim entries, or NULL: the smallest extent of each dim */
    int64_t *max;   /* owned, ndim entries, or NULL: the largest (INT64_MAX: no bound) */
} bt_spec;

/* How to load; zeroed means the CPU and one forward at a time for .pt2. */
typedef struct bt_load_options {
    const char *device;    /* NULL, "cpu", "cuda", "cuda:N" */
    unsigned concurrency;  /* .pt2: forwards that may run at once; 0 = the intra-op threads */
    const char *signature; /* berth.json text given by the user for a plain TorchScript file,
                              parsed instead of an embedded one (a file that carries one,
                              or a .pt2, is refused); NULL: the file's own */
} bt_load_options;

typedef struct bt_model {
    struct berth_torch_model *handle; /* the shim's model, owned */
    char *path;                       /* owned copy of the file path */
    const char *format;               /* "torchscript" or "pt2" (static string) */
    size_t n_inputs;                  /* forward's argument count */
    size_t n_required;                /* arguments without a default */
    bt_spec *inputs;                  /* n_inputs entries, owned */
    size_t n_outputs;                 /* 0 when unknown (no metadata) */
    bt_spec *outputs;                 /* n_outputs entries, owned */
    int batchable;                    /* every input and output has a leading -1 dim that
                                         admits a batch of one */
    int64_t max_batch;                /* the largest leading extent every input admits
                                         (INT64_MAX when unbounded) */
    char *metadata;                   /* berth.json text (NUL-terminated), owned; NULL if none */
    size_t metadata_len;
    double load_seconds; /* wall time spent in bt_model_load (and optimizing) */
    int optimized;       /* frozen and optimized for inference */
} bt_model;

/* Loads path, a TorchScript archive or a .pt2 package (told apart by their contents).
 * options may be NULL. On failure returns -1 with err set (BT_ERR_LOAD, ...). A .pt2
 * must have a complete input signature (dtype and shape of each input): AOTInductor's
 * kernels do not check their inputs, so berth does. */
int bt_model_load(const char *path, const bt_load_options *options, bt_model **out, bt_error *err);

/* dlopens a library of custom operators for models loaded after it (-1 with err set). */
int bt_load_library(const char *path, bt_error *err);

/* NULL-tolerant. */
void bt_model_free(bt_model *model);

/* Freezes the model and applies libtorch's optimize_for_inference (see the shim's
 * model_optimize; the gain is measured in benchmarks/README.md, Core). Call before the model
 * is shared: not safe while forward runs. On failure (libtorch cannot freeze, e.g., a
 * ModuleDict indexed by a runtime key) returns -1 with err set (BT_ERR_LOAD) and the
 * model is unchanged. */
int bt_model_optimize(bt_model *model, bt_error *err);

/* The libtorch version string of the loaded shim, or NULL before any load. */
const char *bt_torch_version(void);

/* The intra-op thread count in effect (0 before the first load). */
int bt_num_threads(void);

/* Checks one input against the signature, before forward.
 * Returns 0 if usable as is, 1 if it must be cast to *cast_to (see bt_tensor_cast),
 * -1 with err set (BT_ERR_TYPE for dtype, BT_ERR_VALUE for rank/shape) otherwise. */
int bt_model_check_input(const bt_model *model, size_t index, const DLTensor *t,
                         DLDataType *cast_to, bt_error *err);

/* The name of output k: the signature's, else what the shim learnt from a forward (a
 * dict's key, "output_N", "parent.child" for nested results), else NULL. */
const char *bt_model_output_name(const bt_model *model, size_t k);

/* Runs forward. Takes ownership of the n inputs on every path. On success fills
 * out[0..*n_out) (caller owns them) and *is_tuple (0 one tensor, 1 a tuple or list, 2 a
 * dict; nested results come flattened). -1 with err set on failure. */
int bt_model_forward(bt_model *model, DLManagedTensor *const *in, size_t n, DLManagedTensor **out,
                     size_t max_out, size_t *n_out, int *is_tuple, bt_error *err);

#endif /* BERTH_MODEL_H */
