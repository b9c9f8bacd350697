/*
 * berth/shim.h - the C ABI of berth's libtorch shim (libberth_torch.so).
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
 *  - Tensors cross as DLPack (berth/dlpack.h), host memory only: with a CUDA device the
 *    shim copies inputs to it and outputs back.
 */
#ifndef BERTH_TORCH_H
#define BERTH_TORCH_H

#include <stddef.h>
#include <stdint.h>

#include "berth/dlpack.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to berth_torch_api. */
#define BERTH_TORCH_ABI_VERSION 3u

typedef enum berth_code {
    BERTH_OK = 0,
    BERTH_E_INVALID_ARGUMENT = 1, /* the caller passed something unusable */
    BERTH_E_LOAD = 2,             /* the file is missing, not a model, or corrupt */
    BERTH_E_INFERENCE = 3,        /* forward raised (shape mismatch, bad dtype, ...) */
    BERTH_E_NO_MEMORY = 4,        /* an allocation failed */
    BERTH_E_INTERNAL = 5,         /* anything else; a bug in berth or libtorch */
    BERTH_E_UNSUPPORTED = 6       /* a model format this libtorch cannot run */
} berth_code;

typedef struct berth_status berth_status;
typedef struct berth_torch_model berth_torch_model;

/* How to load a model; a zeroed struct (with struct_size set) means the defaults. */
typedef struct berth_load_options {
    uint32_t struct_size; /* sizeof(berth_load_options) in the caller */
    const char *device;   /* NULL or "cpu"; "cuda", "cuda:1", ...: inputs are copied there
                              and outputs back */
    uint32_t concurrency; /* .pt2: forwards that may run at once (AOTInductor keeps one
                              set of activations per runner); 0 means 1 */
} berth_load_options;

typedef struct berth_torch_api {
    uint32_t abi_version;      /* BERTH_TORCH_ABI_VERSION the shim was built with */
    uint32_t struct_size;      /* sizeof(berth_torch_api) in the shim */
    const char *torch_version; /* libtorch's version string, e.g. "1.13.0" */

    /* Status objects. */
    berth_code (*status_code)(const berth_status *status);
    const char *(*status_message)(const berth_status *status);
    void (*status_free)(berth_status *status);

    /* Sets libtorch's intra-op thread count; only the first call in a process has an
     * effect (num_threads <= 0 leaves libtorch's default). Returns the count in effect. */
    int (*set_num_threads)(int num_threads);

    /* Loads a model file; the format comes from the file's contents, not its name:
     *  - a TorchScript archive, loaded under InferenceMode in eval mode; its signature is
     *    the berth.json extra file when present;
     *  - a torch.export / AOTInductor package (.pt2; needs libtorch >= 2.6), whose
     *    signature is the berth.json entry of the package metadata when present, else
     *    what the package's generated input checks say (names, dtypes, static extents
     *    and the ranges of dynamic ones), as berth.json text.
     * options may be NULL. */
    berth_status *(*model_load)(const char *path, const berth_load_options *options,
                                berth_torch_model **out);
    void (*model_free)(berth_torch_model *model);

    /* "torchscript" or "pt2". */
    const char *(*model_format)(const berth_torch_model *model);

    /* dlopens a library of custom operators (RTLD_GLOBAL, so models find its ops). */
    berth_status *(*load_library)(const char *path);

    /* The protocol inputs forward takes: one per Tensor argument, one per element of a
     * fixed Tuple[Tensor, ...] argument (named "arg.0", "arg.1", ...); arguments of
     * other types that have defaults are left to them (a model with a required
     * non-tensor argument is refused at load). The count, how many have no default,
     * and each input's name (valid while the model lives). */
    size_t (*model_num_args)(const berth_torch_model *model);
    size_t (*model_num_required_args)(const berth_torch_model *model);
    const char *(*model_arg_name)(const berth_torch_model *model, size_t index);

    /* The signature as berth.json text (see model_load) and its length, or NULL when
     * the file has none. Valid while the model lives. */
    const char *(*model_metadata)(const berth_torch_model *model, size_t *length);

    /* Runs forward. Ownership of every input passes to the shim on every path, success
     * or failure: each input's deleter is called once libtorch no longer needs the
     * memory, which may be after this call returns when an output aliases an input.
     * On success, outputs[0..*n_outputs) are owned by the caller (call each deleter) and
     * *is_tuple says what forward returned: 0 one tensor, 1 a tuple or list, 2 a dict
     * (the Hugging Face style). Nested tuples, lists and string-keyed dicts are
     * flattened depth first; model_output_name names each tensor.
     * Safe to call from many threads at once on the same model. */
    berth_status *(*model_forward)(berth_torch_model *model, DLManagedTensor *const *inputs,
                                   size_t n_inputs, DLManagedTensor **outputs, size_t max_outputs,
                                   size_t *n_outputs, int *is_tuple);

    /* The name of flattened output index, known once a forward has returned (NULL
     * before, or past the end): a dict's key, "output_N" for a tuple's element N, and
     * "parent.child" paths for nested structures ("hidden.0"). Valid while the model
     * lives. */
    const char *(*model_output_name)(const berth_torch_model *model, size_t index);

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
