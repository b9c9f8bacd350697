/*
 * berth_torch.h - the C ABI of berth's libtorch shim (libberth_torch.so).
 *
 * The shim is the only C++ in berth. It exports exactly one symbol,
 * berth_torch_get_api(), which returns a table of plain C functions. The C core loads the
 * shim with dlopen on the first berth.load(), so `import berth` never loads libtorch.
 *
 * Rules of the ABI
 *  - Handles are opaque. Every *_free accepts NULL.
 *  - A fallible call returns a berth_status*: NULL on success, else an object with a code
 *    (enum berth_code) and a message, owned by the caller and released with status_free.
 *  - No C++ exception ever crosses this ABI: every entry point catches everything.
 *  - Tensors cross as DLPack (berth_dlpack.h), host memory only.
 */
#ifndef BERTH_TORCH_H
#define BERTH_TORCH_H

#include <stddef.h>
#include <stdint.h>

#include "berth_dlpack.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to berth_torch_api. */
#define BERTH_TORCH_ABI_VERSION 2u

typedef enum berth_code {
    BERTH_OK = 0,
    BERTH_E_INVALID_ARGUMENT = 1, /* the caller passed something unusable */
    BERTH_E_LOAD = 2,             /* the file is missing, not TorchScript, or corrupt */
    BERTH_E_INFERENCE = 3,        /* forward raised (shape mismatch, bad dtype, ...) */
    BERTH_E_NO_MEMORY = 4,        /* an allocation failed */
    BERTH_E_INTERNAL = 5          /* anything else; a bug in berth or libtorch */
} berth_code;

typedef struct berth_status berth_status;
typedef struct berth_torch_model berth_torch_model;

typedef struct berth_torch_api {
    uint32_t abi_version; /* BERTH_TORCH_ABI_VERSION the shim was built with */
    uint32_t struct_size; /* sizeof(berth_torch_api) in the shim */
    const char *torch_version; /* libtorch's version string, e.g. "1.13.0" */

    /* Status objects. */
    berth_code (*status_code)(const berth_status *status);
    const char *(*status_message)(const berth_status *status);
    void (*status_free)(berth_status *status);

    /* Sets libtorch's intra-op thread count; only the first call in a process has an
     * effect (num_threads <= 0 leaves libtorch's default). Returns the count in effect. */
    int (*set_num_threads)(int num_threads);

    /* Loads a TorchScript file under InferenceMode, in eval mode, on the CPU, and reads
     * its berth.json extra file when present. */
    berth_status *(*model_load)(const char *path, berth_torch_model **out);
    void (*model_free)(berth_torch_model *model);

    /* forward's schema: argument count (without self), how many have no default,
     * and each argument's name (valid while the model lives). */
    size_t (*model_num_args)(const berth_torch_model *model);
    size_t (*model_num_required_args)(const berth_torch_model *model);
    const char *(*model_arg_name)(const berth_torch_model *model, size_t index);

    /* The berth.json extra file's bytes and length, or NULL when the file has none.
     * Valid while the model lives. */
    const char *(*model_metadata)(const berth_torch_model *model, size_t *length);

    /* Runs forward. Ownership of every input passes to the shim on every path, success
     * or failure: each input's deleter is called once libtorch no longer needs the
     * memory, which may be after this call returns when an output aliases an input.
     * On success, outputs[0..*n_outputs) are owned by the caller (call each deleter) and
     * *is_tuple says whether forward returned a tuple/list rather than one tensor.
     * Safe to call from many threads at once on the same model. */
    berth_status *(*model_forward)(berth_torch_model *model, DLManagedTensor *const *inputs,
                                   size_t n_inputs, DLManagedTensor **outputs,
                                   size_t max_outputs, size_t *n_outputs, int *is_tuple);

    /* Freezes the module (parameters become constants, batch norms fold into the
     * convolutions before them) and applies libtorch's optimize_for_inference passes
     * (oneDNN-prepacked convolutions). Results agree with the unoptimized model to float
     * rounding. On failure the model is left as it was. Not safe while forward runs. */
    berth_status *(*model_optimize)(berth_torch_model *model);
} berth_torch_api;

/* Returns the shim's table if it speaks abi_version, else NULL. Never fails otherwise. */
typedef const berth_torch_api *(*berth_torch_get_api_fn)(uint32_t abi_version);
#define BERTH_TORCH_GET_API_SYMBOL "berth_torch_get_api"

#ifdef __cplusplus
}
#endif
#endif /* BERTH_TORCH_H */
