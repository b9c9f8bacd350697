// berth_torch.cpp - the libtorch shim: the only C++ in berth.
//
// Everything here sits behind the C table declared in berth_torch.h. Each entry point is
// an exception firewall: C++ exceptions become berth_status objects, never escape.

#include <torch/script.h>
#include <torch/version.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "berth_torch.h"

#define BERTH_EXPORT extern "C" __attribute__((visibility("default")))

struct berth_status {
    berth_code code;
    std::string message;
};

struct berth_torch_model {
    torch::jit::Module module;
    torch::jit::Function *forward = nullptr;  // owned by the module's compilation unit
    std::vector<std::string> arg_names;
    size_t num_required = 0;
    std::string metadata;
    bool has_metadata = false;
};

namespace {

berth_status *make_status(berth_code code, std::string message) noexcept {
    try {
        return new berth_status{code, std::move(message)};
    } catch (...) {
        // Out of memory while reporting an error: a static status would be freed by the
        // caller, so fall back to the one allocation-free signal we have.
        return nullptr;
    }
}

// TorchScript errors carry the interpreter's traceback; users need the last line, the
// one that says what went wrong ("RuntimeError: mat1 and mat2 shapes cannot be ...").
std::string short_message(const std::string &full) {
    std::string best;
    size_t start = 0;
    while (start <= full.size()) {
        size_t end = full.find('\n', start);
        if (end == std::string::npos) end = full.size();
        std::string line = full.substr(start, end - start);
        const char *prefixes[] = {"RuntimeError: ", "ValueError: ", "TypeError: ",
                                  "IndexError: ", "AssertionError: ", "Exception: "};
        for (const char *p : prefixes) {
            size_t at = line.find(p);
            if (at != std::string::npos) best = line.substr(at + std::strlen(p));
        }
        start = end + 1;
    }
    if (best.empty()) {
        size_t end = full.find('\n');
        best = full.substr(0, end);
        // "Expected ... (Triggered internally at ...)" and similar: keep the first line.
    }
    return best;
}

std::string what_of(const std::exception &e) {
    if (auto *c10e = dynamic_cast<const c10::Error *>(&e)) return c10e->what_without_backtrace();
    return e.what();
}

#define FIREWALL_BEGIN try {
#define FIREWALL_END(code)                                                     \
    }                                                                          \
    catch (const std::bad_alloc &) {                                           \
        return make_status(BERTH_E_NO_MEMORY, "out of memory");                \
    }                                                                          \
    catch (const std::exception &e) {                                          \
        return make_status(code, short_message(what_of(e)));                   \
    }                                                                          \
    catch (...) {                                                              \
        return make_status(BERTH_E_INTERNAL, "unknown C++ exception in libtorch"); \
    }

// --- DLPack <-> at::Tensor ------------------------------------------------------------

bool to_scalar_type(DLDataType t, at::ScalarType *out) {
    if (t.lanes != 1) return false;
    switch (t.code) {
    case kDLFloat:
        if (t.bits == 16) { *out = at::kHalf; return true; }
        if (t.bits == 32) { *out = at::kFloat; return true; }
        if (t.bits == 64) { *out = at::kDouble; return true; }
        return false;
    case kDLInt:
        if (t.bits == 8) { *out = at::kChar; return true; }
        if (t.bits == 16) { *out = at::kShort; return true; }
        if (t.bits == 32) { *out = at::kInt; return true; }
        if (t.bits == 64) { *out = at::kLong; return true; }
        return false;
    case kDLUInt:
        if (t.bits == 8) { *out = at::kByte; return true; }
        return false;
    case BERTH_DL_BOOL:
        if (t.bits == 8) { *out = at::kBool; return true; }
        return false;
    default:
        return false;
    }
}

bool to_dl_type(at::ScalarType s, DLDataType *out) {
    out->lanes = 1;
    switch (s) {
    case at::kHalf: out->code = kDLFloat; out->bits = 16; return true;
    case at::kFloat: out->code = kDLFloat; out->bits = 32; return true;
    case at::kDouble: out->code = kDLFloat; out->bits = 64; return true;
    case at::kChar: out->code = kDLInt; out->bits = 8; return true;
    case at::kShort: out->code = kDLInt; out->bits = 16; return true;
    case at::kInt: out->code = kDLInt; out->bits = 32; return true;
    case at::kLong: out->code = kDLInt; out->bits = 64; return true;
    case at::kByte: out->code = kDLUInt; out->bits = 8; return true;
    case at::kBool: out->code = BERTH_DL_BOOL; out->bits = 8; return true;
    default: return false;
    }
}

// Wraps a DLManagedTensor without copying. The tensor's storage owns the DLPack object
// and calls its deleter when libtorch lets go of the memory. byte_offset is honoured
// (at::fromDLPack ignores it).
at::Tensor from_dlpack(DLManagedTensor *m, size_t index) {
    const DLTensor &t = m->dl_tensor;
    at::ScalarType st;
    if (!to_scalar_type(t.dtype, &st)) {
        if (m->deleter) m->deleter(m);
        throw std::invalid_argument("input " + std::to_string(index) + " has a dtype libtorch cannot take");
    }
    std::vector<int64_t> sizes(t.shape, t.shape + t.ndim);
    std::vector<int64_t> strides;
    if (t.strides) {
        strides.assign(t.strides, t.strides + t.ndim);
    } else {
        strides.resize(t.ndim);
        int64_t s = 1;
        for (int i = t.ndim - 1; i >= 0; --i) {
            strides[i] = s;
            s *= sizes[i] > 0 ? sizes[i] : 1;
        }
    }
    void *data = static_cast<char *>(t.data) + t.byte_offset;
    return at::from_blob(
        data, sizes, strides, [m](void *) { if (m->deleter) m->deleter(m); },
        at::TensorOptions().dtype(st).device(at::kCPU));
}

// One allocation per output: the DLPack struct, the tensor it keeps alive, and its
// shape and strides (inline up to 6 dimensions).
struct OutputCtx {
    DLManagedTensor managed;
    at::Tensor tensor;
    c10::SmallVector<int64_t, 6> shape;
    c10::SmallVector<int64_t, 6> strides;
};

void delete_output(DLManagedTensor *m) {
    if (m) delete static_cast<OutputCtx *>(m->manager_ctx);
}

DLManagedTensor *to_dlpack(const at::Tensor &src) {
    at::Tensor t = src;
    if (t.device().type() != at::kCPU) t = t.to(at::kCPU);
    DLDataType dt;
    if (!to_dl_type(t.scalar_type(), &dt)) {
        throw std::invalid_argument(std::string("the model returned a tensor of dtype ") +
                                    std::string(c10::toString(t.scalar_type())) +
                                    ", which berth cannot hand to NumPy");
    }
    if (t.is_conj() || t.is_neg()) t = t.resolve_conj().resolve_neg();
    auto *ctx = new OutputCtx();
    ctx->tensor = t;
    ctx->shape.assign(t.sizes().begin(), t.sizes().end());
    ctx->strides.assign(t.strides().begin(), t.strides().end());
    DLManagedTensor *m = &ctx->managed;
    std::memset(m, 0, sizeof(DLManagedTensor));
    m->dl_tensor.data = t.data_ptr();
    m->dl_tensor.device.device_type = kDLCPU;
    m->dl_tensor.device.device_id = 0;
    m->dl_tensor.ndim = static_cast<int32_t>(t.dim());
    m->dl_tensor.dtype = dt;
    m->dl_tensor.shape = ctx->shape.data();
    m->dl_tensor.strides = ctx->strides.data();
    m->dl_tensor.byte_offset = 0;
    m->manager_ctx = ctx;
    m->deleter = delete_output;
    return m;
}

// --- the C entry points -----------------------------------------------------------------

berth_code status_code(const berth_status *s) { return s ? s->code : BERTH_OK; }

const char *status_message(const berth_status *s) { return s ? s->message.c_str() : ""; }

void status_free(berth_status *s) { delete s; }

int set_num_threads(int n) {
    static std::once_flag once;
    static int in_effect = 0;
    try {
        std::call_once(once, [n] {
            if (n > 0) {
                at::set_num_threads(n);
                // Inter-op threads serve only forks inside a graph: one is plenty and
                // avoids a second pool the size of the machine.
                try { at::set_num_interop_threads(1); } catch (...) {}
            }
            in_effect = at::get_num_threads();
        });
    } catch (...) {
    }
    return in_effect;
}

berth_status *model_load(const char *path, berth_torch_model **out) {
    FIREWALL_BEGIN
    if (!path || !out) return make_status(BERTH_E_INVALID_ARGUMENT, "path and out must not be NULL");
    *out = nullptr;
    c10::InferenceMode guard;
    auto model = std::make_unique<berth_torch_model>();
    torch::jit::ExtraFilesMap extra{{"berth.json", ""}};
    model->module = torch::jit::load(path, at::kCPU, extra);
    model->module.eval();
    auto it = extra.find("berth.json");
    if (it != extra.end() && !it->second.empty()) {
        model->metadata = it->second;
        model->has_metadata = true;
    }
    auto method = model->module.find_method("forward");
    if (!method) return make_status(BERTH_E_LOAD, "the TorchScript module has no forward method");
    model->forward = &method->function();
    const auto &schema = model->forward->getSchema();
    const auto &args = schema.arguments();
    for (size_t i = 1; i < args.size(); ++i) {  // 0 is self
        model->arg_names.push_back(args[i].name());
        if (!args[i].default_value()) model->num_required = model->arg_names.size();
    }
    *out = model.release();
    return nullptr;
    FIREWALL_END(BERTH_E_LOAD)
}

void model_free(berth_torch_model *m) { delete m; }

size_t model_num_args(const berth_torch_model *m) { return m ? m->arg_names.size() : 0; }

size_t model_num_required_args(const berth_torch_model *m) { return m ? m->num_required : 0; }

const char *model_arg_name(const berth_torch_model *m, size_t i) {
    return (m && i < m->arg_names.size()) ? m->arg_names[i].c_str() : nullptr;
}

const char *model_metadata(const berth_torch_model *m, size_t *length) {
    if (!m || !m->has_metadata) {
        if (length) *length = 0;
        return nullptr;
    }
    if (length) *length = m->metadata.size();
    return m->metadata.c_str();
}

berth_status *model_forward(berth_torch_model *m, DLManagedTensor *const *inputs, size_t n_inputs,
                            DLManagedTensor **outputs, size_t max_outputs, size_t *n_outputs,
                            int *is_tuple) {
    // Inputs not yet handed to a tensor are released here on every early path.
    size_t taken = 0;
    auto release_rest = [&]() {
        for (size_t i = taken; i < n_inputs; ++i)
            if (inputs[i] && inputs[i]->deleter) inputs[i]->deleter(inputs[i]);
        taken = n_inputs;
    };
    std::vector<DLManagedTensor *> made;
    try {
        if (!m || !outputs || !n_outputs || !is_tuple || (n_inputs && !inputs)) {
            release_rest();
            return make_status(BERTH_E_INVALID_ARGUMENT, "model_forward: NULL argument");
        }
        *n_outputs = 0;
        *is_tuple = 0;
        c10::InferenceMode guard;
        torch::jit::Stack stack;
        stack.reserve(n_inputs + 1);
        stack.emplace_back(m->module._ivalue());  // self
        for (; taken < n_inputs;) {
            DLManagedTensor *in = inputs[taken];
            ++taken;  // from here the tensor's storage owns it (or from_dlpack threw after
                      // taking it: at::from_blob frees through the deleter on failure)
            stack.emplace_back(from_dlpack(in, taken - 1));
        }
        // What Module::forward does (checks types, fills defaults), without the lookup.
        c10::IValue result = (*m->forward)(std::move(stack), torch::jit::Kwargs());
        std::vector<at::Tensor> tensors;
        if (result.isTensor()) {
            tensors.push_back(result.toTensor());
        } else if (result.isTuple()) {
            *is_tuple = 1;
            for (const auto &v : result.toTupleRef().elements()) {
                if (!v.isTensor())
                    return make_status(BERTH_E_INFERENCE, "the model returned a tuple holding a " +
                                                              v.tagKind() + "; berth needs tensors");
                tensors.push_back(v.toTensor());
            }
        } else if (result.isTensorList()) {
            *is_tuple = 1;
            for (const auto &t : result.toTensorVector()) tensors.push_back(t);
        } else {
            return make_status(BERTH_E_INFERENCE, "the model returned a " + result.tagKind() +
                                                      "; berth needs a tensor or a tuple of tensors");
        }
        if (tensors.size() > max_outputs)
            return make_status(BERTH_E_INFERENCE, "the model returned " + std::to_string(tensors.size()) +
                                                      " tensors; berth takes at most " +
                                                      std::to_string(max_outputs));
        for (const auto &t : tensors) made.push_back(to_dlpack(t));
        for (size_t i = 0; i < made.size(); ++i) outputs[i] = made[i];
        *n_outputs = made.size();
        return nullptr;
    } catch (const std::bad_alloc &) {
        for (auto *d : made) delete_output(d);
        release_rest();
        return make_status(BERTH_E_NO_MEMORY, "out of memory during forward");
    } catch (const std::exception &e) {
        for (auto *d : made) delete_output(d);
        release_rest();
        return make_status(BERTH_E_INFERENCE, short_message(what_of(e)));
    } catch (...) {
        for (auto *d : made) delete_output(d);
        release_rest();
        return make_status(BERTH_E_INTERNAL, "unknown C++ exception during forward");
    }
}

berth_status *model_optimize(berth_torch_model *m) {
    FIREWALL_BEGIN
    if (!m) return make_status(BERTH_E_INVALID_ARGUMENT, "model must not be NULL");
    torch::jit::Module optimized = torch::jit::optimize_for_inference(m->module);
    auto method = optimized.find_method("forward");
    if (!method) return make_status(BERTH_E_INTERNAL, "the optimized module lost its forward method");
    m->forward = &method->function();
    m->module = optimized;
    return nullptr;
    FIREWALL_END(BERTH_E_INFERENCE)
}

const berth_torch_api kApi = {
    BERTH_TORCH_ABI_VERSION,
    sizeof(berth_torch_api),
    TORCH_VERSION,
    status_code,
    status_message,
    status_free,
    set_num_threads,
    model_load,
    model_free,
    model_num_args,
    model_num_required_args,
    model_arg_name,
    model_metadata,
    model_forward,
    model_optimize,
};

}  // namespace

BERTH_EXPORT const berth_torch_api *berth_torch_get_api(uint32_t abi_version) {
    return abi_version == BERTH_TORCH_ABI_VERSION ? &kApi : nullptr;
}
