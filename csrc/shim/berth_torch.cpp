// berth_torch.cpp - the libtorch shim: the only C++ in berth.
//
// Everything here sits behind the C table declared in berth/shim.h. Each entry point is
// an exception firewall: C++ exceptions become berth_status objects, never escape.

#include <torch/script.h>
#include <torch/version.h>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <caffe2/serialize/inline_container.h>

// AOTInductor's package loader (torch.export -> .pt2) arrived in libtorch 2.6.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 6)
#define BERTH_HAVE_AOTI 1
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#else
#define BERTH_HAVE_AOTI 0
#endif

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "berth/dtypes.h"
#include "berth/shim.h"

#define BERTH_EXPORT extern "C" __attribute__((visibility("default")))

struct berth_status {
    berth_code code;
    std::string message;
};

struct berth_torch_model {
    bool pt2 = false; // an AOTInductor package, else TorchScript
    c10::Device device{at::kCPU};
    torch::jit::Module module;               // TorchScript
    torch::jit::Function *forward = nullptr; // owned by the module's compilation unit
#if BERTH_HAVE_AOTI
    std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package; // .pt2
#endif
    bool single_output = true;          // .pt2: the output spec is one tensor
    std::vector<std::string> arg_names; // protocol inputs, in order
    std::vector<size_t> tuple_sizes;    // per forward argument: 0 a Tensor, N a Tuple of N,
                                        // kListArg a List[Tensor] (the last one berth passes)
    size_t num_required = 0;
    std::mutex names_lock; // output_names is written once, by the first forward
    std::vector<std::string> output_names;
    std::atomic<bool> names_known{false};
    std::string metadata;
    bool has_metadata = false;
};

namespace
{

// A List[Tensor] argument takes every input left, as "NAME.0", "NAME.1", ...: up to this
// many inputs in all (the C core serves at most 16, BT_BATCH_MAX_INPUTS).
constexpr size_t kMaxInputs = 16;
// The signature: a TorchScript extra file, or a .pt2 package's metadata key.
constexpr const char *kSignatureFile = "berth.json";
constexpr size_t kListArg = SIZE_MAX;

// Returned when even the error cannot be allocated; status_free leaves it alone.
berth_status out_of_memory{BERTH_E_NO_MEMORY, std::string()};

berth_status *make_status(berth_code code, std::string message) noexcept
{
    try {
        return new berth_status{code, std::move(message)};
    } catch (...) {
        return &out_of_memory;
    }
}

// TorchScript errors carry the interpreter's traceback; users need the last line, the
// one that says what went wrong ("RuntimeError: mat1 and mat2 shapes cannot be ...").
std::string short_message(const std::string &full)
{
    std::string best;
    size_t start = 0;
    while (start <= full.size()) {
        size_t end = full.find('\n', start);
        if (end == std::string::npos)
            end = full.size();
        std::string line = full.substr(start, end - start);
        const char *prefixes[] = {"RuntimeError: ", "ValueError: ",     "TypeError: ",
                                  "IndexError: ",   "AssertionError: ", "Exception: "};
        for (const char *p : prefixes) {
            size_t at = line.find(p);
            if (at != std::string::npos)
                best = line.substr(at + std::strlen(p));
        }
        start = end + 1;
    }
    if (best.empty()) {
        // "Expected ... (Triggered internally at ...)" and similar: keep the first line
        // that says something (libtorch's "Unknown builtin op" starts with a newline).
        size_t at = full.find_first_not_of(" \t\r\n");
        if (at == std::string::npos)
            return full;
        best = full.substr(at, full.find('\n', at) - at);
    }
    return best;
}

std::string what_of(const std::exception &e)
{
    if (auto *c10e = dynamic_cast<const c10::Error *>(&e))
        return c10e->what_without_backtrace();
    return e.what();
}

#define FIREWALL_BEGIN try {
#define FIREWALL_END(code)                                                                         \
    }                                                                                              \
    catch (const std::bad_alloc &) { return make_status(BERTH_E_NO_MEMORY, "out of memory"); }     \
    catch (const std::exception &e) { return make_status(code, short_message(what_of(e))); }       \
    catch (...) { return make_status(BERTH_E_INTERNAL, "unknown C++ exception in libtorch"); }

// --- DLPack <-> at::Tensor ------------------------------------------------------------

// Both directions expand berth/dtypes.h, the table the C core uses too.
bool to_scalar_type(DLDataType t, at::ScalarType *out)
{
    if (t.lanes != 1)
        return false;
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH)                                             \
    if ((unsigned)t.code == (unsigned)(CODE) && t.bits == (BITS)) {                                \
        *out = at::k##TORCH;                                                                       \
        return true;                                                                               \
    }
    BERTH_DTYPES(BT_ROW)
#undef BT_ROW
    return false;
}

bool to_dl_type(at::ScalarType s, DLDataType *out)
{
    out->lanes = 1;
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH)                                             \
    if (s == at::k##TORCH) {                                                                       \
        out->code = (CODE);                                                                        \
        out->bits = (BITS);                                                                        \
        return true;                                                                               \
    }
    BERTH_DTYPES(BT_ROW)
#undef BT_ROW
    return false;
}

// Wraps a DLManagedTensor without copying. The tensor's storage owns the DLPack object
// and calls its deleter when libtorch lets go of the memory. byte_offset is honoured
// (at::fromDLPack ignores it).
at::Tensor from_dlpack(DLManagedTensor *m, size_t index)
{
    const DLTensor &t = m->dl_tensor;
    at::ScalarType st;
    if (!to_scalar_type(t.dtype, &st)) {
        if (m->deleter)
            m->deleter(m);
        throw std::invalid_argument("input " + std::to_string(index) +
                                    " has a dtype libtorch cannot take");
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
        data, sizes, strides,
        [m](void *) {
            if (m->deleter)
                m->deleter(m);
        },
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

void delete_output(DLManagedTensor *m)
{
    if (m)
        delete static_cast<OutputCtx *>(m->manager_ctx);
}

DLManagedTensor *to_dlpack(const at::Tensor &src)
{
    at::Tensor t = src;
    if (t.device().type() != at::kCPU)
        t = t.to(at::kCPU);
    DLDataType dt;
    if (!to_dl_type(t.scalar_type(), &dt)) {
        throw std::invalid_argument(std::string("the model returned a tensor of dtype ") +
                                    std::string(c10::toString(t.scalar_type())) +
                                    ", which berth cannot hand to NumPy");
    }
    if (t.is_conj() || t.is_neg())
        t = t.resolve_conj().resolve_neg();
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

// Flattens a forward result depth first into tensors and their names; returns what was
// wrong ("a tuple holding a str") or "".
// names is NULL once the model's output names are known: no strings on the hot path.
std::string flatten(const c10::IValue &v, const std::string &path, std::vector<at::Tensor> &tensors,
                    std::vector<std::string> *names)
{
    auto child = [&](const std::string &part) { return path.empty() ? part : path + "." + part; };
    if (v.isTensor()) {
        tensors.push_back(v.toTensor());
        if (names)
            names->push_back(path.empty() ? "output_0" : path);
        return "";
    }
    if (v.isTuple() || v.isList()) {
        std::vector<c10::IValue> items;
        if (v.isTuple())
            items = v.toTupleRef().elements().vec();
        else
            items = v.toListRef().vec();
        for (size_t i = 0; i < items.size(); ++i) {
            std::string why = flatten(
                items[i], path.empty() ? "output_" + std::to_string(i) : child(std::to_string(i)),
                tensors, names);
            if (!why.empty())
                return why;
        }
        return "";
    }
    if (v.isGenericDict()) {
        for (const auto &entry : v.toGenericDict()) {
            if (!entry.key().isString())
                return "a dict keyed by " + entry.key().tagKind() + "; berth needs str keys";
            std::string why =
                flatten(entry.value(), child(entry.key().toStringRef()), tensors, names);
            if (!why.empty())
                return why;
        }
        return "";
    }
    return (path.empty() ? std::string("a ") : "a " + v.tagKind() + " at '" + path + "' (") +
           (path.empty() ? v.tagKind() : ")") +
           "; berth needs tensors, or tuples, lists and dicts of them";
}

// --- the C entry points -----------------------------------------------------------------

berth_code status_code(const berth_status *s) { return s ? s->code : BERTH_OK; }

const char *status_message(const berth_status *s)
{
    if (s == &out_of_memory)
        return "out of memory";
    return s ? s->message.c_str() : "";
}

void status_free(berth_status *s)
{
    if (s != &out_of_memory)
        delete s;
}

int set_num_threads(int n)
{
    static std::once_flag once;
    static int in_effect = 0;
    try {
        std::call_once(once, [n] {
            if (n > 0) {
                at::set_num_threads(n);
                // Inter-op threads serve only forks inside a graph: one is plenty and
                // avoids a second pool the size of the machine.
                try {
                    at::set_num_interop_threads(1);
                } catch (...) {
                }
            }
            in_effect = at::get_num_threads();
        });
    } catch (...) {
    }
    return in_effect;
}

// A model format this libtorch cannot run (BERTH_E_UNSUPPORTED).
struct Unsupported : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// --- which format a file is -------------------------------------------------------------

enum class Format { torchscript, pt2, unknown };

// Both formats are zip archives in PyTorch's layout (one top-level folder); a package
// says "pt2" in its archive_format record, a TorchScript archive has data.pkl.
Format sniff(caffe2::serialize::PyTorchStreamReader &reader)
{
    if (reader.hasRecord("archive_format")) {
        auto record = reader.getRecord("archive_format");
        std::string text(static_cast<const char *>(std::get<0>(record).get()), std::get<1>(record));
        if (text.rfind("pt2", 0) == 0)
            return Format::pt2;
    }
    if (reader.hasRecord("data.pkl"))
        return Format::torchscript;
    return Format::unknown;
}

#if BERTH_HAVE_AOTI
std::string json_string(const std::string &s)
{
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\')
            out += '\\';
        if (static_cast<unsigned char>(c) < 0x20)
            continue;
        out += c;
    }
    return out + "\"";
}

// --- a .pt2's signature from its generated input checks ------------------------------------

// A tiny scanner over the generated C++ (std::regex is slow here and trips GCC 12's
// -Wmaybe-uninitialized under ASan).
struct Scan {
    const std::string &s;
    size_t at;
    bool lit(const char *text)
    {
        size_t n = std::strlen(text);
        if (s.compare(at, n, text) != 0)
            return false;
        at += n;
        return true;
    }
    bool integer(long long &out)
    {
        size_t start = at;
        if (at < s.size() && s[at] == '-')
            ++at;
        size_t digits = at;
        while (at < s.size() && s[at] >= '0' && s[at] <= '9')
            ++at;
        if (at == digits || at - digits > 18) {
            at = start;
            return false;
        }
        out = std::stoll(s.substr(start, at - start));
        return true;
    }
    std::string ident()
    {
        size_t start = at;
        while (at < s.size() && (std::isalnum(static_cast<unsigned char>(s[at])) || s[at] == '_'))
            ++at;
        return s.substr(start, at - start);
    }
    // NAME_size[D] (or _stride): the dimension D, or -1.
    long long dim(const char *suffix)
    {
        std::string name = ident();
        size_t n = std::strlen(suffix);
        long long d;
        if (name.size() <= n || name.compare(name.size() - n, n, suffix) != 0 || !lit("[") ||
            !integer(d) || !lit("]"))
            return -1;
        return d;
    }
};

// The largest I + 1 over "PREFIXI]" in source (inputs_info_[I], outputs_info_[I]).
size_t count_indexed(const std::string &source, const char *prefix)
{
    size_t count = 0;
    for (size_t at = source.find(prefix); at != std::string::npos;
         at = source.find(prefix, at + 1)) {
        Scan scan{source, at + std::strlen(prefix)};
        long long i;
        if (scan.integer(i) && i >= 0 && static_cast<size_t>(i) >= count)
            count = static_cast<size_t>(i) + 1;
    }
    return count;
}

// AOTInductor generates, for each input i, a check_input_i() that states the dtype it
// was compiled for, each static extent and the range of each dynamic one (they run only
// with AOTI_RUNTIME_CHECK_INPUTS=1). berth reads them from the package's wrapper source,
// so any .pt2 gets a signature berth can check inputs against before calling kernels
// that do not check them. Returns berth.json text, or "" when the source is not there.
std::string signature_from_wrapper(caffe2::serialize::PyTorchStreamReader &reader)
{
    std::string source;
    for (const auto &name : reader.getAllRecords()) {
        const std::string suffix = ".wrapper.cpp";
        if (name.rfind("data/aotinductor/model/", 0) == 0 && name.size() > suffix.size() &&
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
            auto record = reader.getRecord(name);
            source.assign(static_cast<const char *>(std::get<0>(record).get()),
                          std::get<1>(record));
            break;
        }
    }
    if (source.empty())
        return "";
    size_t n_inputs = count_indexed(source, "inputs_info_["),
           n_outputs = count_indexed(source, "outputs_info_[");
    std::string json = "{\"inputs\": [";
    for (size_t i = 0; i < n_inputs; ++i) {
        std::string head = "static void check_input_" + std::to_string(i) + "(";
        size_t from = source.find(head);
        if (from == std::string::npos)
            return "";
        size_t to = source.find("\n}\n", from);
        std::string body =
            source.substr(from, to == std::string::npos ? std::string::npos : to - from);
        std::string dtype;
        size_t at = body.find("_expected_dtype = aoti_torch_dtype_");
        if (at != std::string::npos) {
            Scan scan{body, at + std::strlen("_expected_dtype = aoti_torch_dtype_")};
            dtype = scan.ident();
        }
        long long rank = 0;
        for (const char *kind : {"_size[", "_stride["})
            for (size_t p = body.find(kind); p != std::string::npos; p = body.find(kind, p + 1)) {
                Scan scan{body, p + std::strlen(kind)};
                long long d;
                if (scan.integer(d) && d >= 0 && d < 64)
                    rank = std::max(rank, d + 1);
            }
        std::vector<long long> shape(rank, -1), lo(rank, -1), hi(rank, -1);
        for (size_t p = body.find("if ("); p != std::string::npos; p = body.find("if (", p + 1)) {
            Scan scan{body, p + 4};
            long long value, d;
            if (scan.integer(value)) { // if (10 != x_size[1])
                if (scan.lit(" != ") && (d = scan.dim("_size")) >= 0 && d < rank)
                    shape[d] = value;
            } else if ((d = scan.dim("_size")) >= 0 && d < rank) { // if (x_size[0] < 2)
                bool below = scan.lit(" < "), above = !below && scan.lit(" > ");
                if ((below || above) && scan.integer(value))
                    (below ? lo : hi)[d] = value;
            }
        }
        json += (i ? ", " : "") + std::string("{\"name\": \"input_") + std::to_string(i) + "\"" +
                ", \"dtype\": " + (dtype.empty() ? "null" : json_string(dtype)) + ", \"shape\": [";
        for (long long d = 0; d < rank; ++d)
            json += (d ? ", " : "") + std::to_string(shape[d]);
        json += "], \"ranges\": [";
        for (long long d = 0; d < rank; ++d) {
            json += d ? ", " : "";
            if (shape[d] >= 0)
                json += "null";
            else
                json += "[" + std::to_string(lo[d] < 0 ? 0 : lo[d]) + ", " +
                        (hi[d] < 0 ? "null" : std::to_string(hi[d])) + "]";
        }
        json += "]}";
    }
    json += "], \"outputs\": [";
    for (size_t i = 0; i < n_outputs; ++i)
        json += (i ? ", " : "") + std::string("{\"name\": \"output_") + std::to_string(i) + "\"}";
    return json + "]}";
}
#endif // BERTH_HAVE_AOTI

// --- loading ------------------------------------------------------------------------------

// Loads `name` from the folder libtorch_cpu.so was loaded from, once, and returns why it
// failed ("" if it loaded, or if that folder has no such file). The shim links only
// libtorch_cpu and libc10, so two of libtorch's libraries come here, when first needed:
//  - libtorch.so, before the first .pt2 or operator library: AOTInductor's model libraries
//    and libraries built with torch's cpp_extension need it by name and carry no path to
//    find it, so without it loaded the system's libtorch.so (Debian's 1.13, say) would be
//    taken. In a CUDA build it brings libtorch_cuda too.
//  - libtorch_cuda.so, a CUDA build's CUDA half, before the first model for a CUDA device,
//    and before the shim asks libtorch about CUDA, since libtorch keeps its first answer.
//    A process serving TorchScript on the CPU never loads it (about 270 MB of RSS and the
//    load time of cuDNN, cuBLAS and the rest).
// Both are loaded already where Python's torch was imported.
const std::string &load_beside_libtorch(const char *name)
{
    static std::mutex mutex;
    static std::map<std::string, std::string> tried;
    std::lock_guard<std::mutex> lock(mutex);
    auto found = tried.find(name);
    if (found != tried.end())
        return found->second;
    std::string &why = tried[name];
    Dl_info info{};
    if (!dladdr(reinterpret_cast<void *>(&at::set_num_threads), &info) || !info.dli_fname)
        return why;
    std::string path = info.dli_fname;
    size_t slash = path.rfind('/');
    path = (slash == std::string::npos ? std::string() : path.substr(0, slash + 1)) + name;
    if (access(path.c_str(), F_OK) == 0 && !dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
        const char *error = dlerror();
        why = error ? error : "unknown error";
    }
    return why;
}

c10::Device parse_device(const char *text)
{
    if (!text || !text[0])
        return c10::Device(at::kCPU);
    c10::Device device{std::string(text)};
    if (device.is_cuda() && !load_beside_libtorch("libtorch_cuda.so").empty())
        throw std::invalid_argument(std::string("device='") + text +
                                    "' needs libtorch's CUDA library, which did not load: " +
                                    load_beside_libtorch("libtorch_cuda.so"));
    if (device.is_cuda() && !at::hasCUDA())
        throw std::invalid_argument(std::string("device='") + text +
                                    "' needs a CUDA build of libtorch with a visible "
                                    "GPU; this libtorch (" TORCH_VERSION
                                    ") has no CUDA or sees no GPU: use device='cpu'");
    if (!device.is_cpu() && !device.is_cuda())
        throw std::invalid_argument(std::string("device='") + text +
                                    "' is not supported: use 'cpu' or 'cuda[:N]'");
    return device;
}

void load_torchscript(berth_torch_model &model, const char *path)
{
    torch::jit::ExtraFilesMap extra{{kSignatureFile, ""}};
    model.module = torch::jit::load(path, model.device, extra);
    model.module.eval();
    auto it = extra.find(kSignatureFile);
    if (it != extra.end() && !it->second.empty()) {
        model.metadata = it->second;
        model.has_metadata = true;
    }
    auto method = model.module.find_method("forward");
    if (!method)
        throw std::invalid_argument("the TorchScript module has no forward method");
    model.forward = &method->function();
    const auto &args = model.forward->getSchema().arguments();
    const c10::Argument *list = nullptr; // a List[Tensor] argument: nothing after it is passed
    for (size_t i = 1; i < args.size(); ++i) { // 0 is self
        const auto &type = args[i].type();
        size_t tuple = 0;
        if (auto tup = type->cast<c10::TupleType>()) {
            tuple = tup->elements().size();
            for (const auto &e : tup->elements())
                if (!e->cast<c10::TensorType>())
                    tuple = 0;
        }
        auto as_list = type->cast<c10::ListType>();
        if (as_list && as_list->getElementType()->cast<c10::TensorType>())
            tuple = kListArg;
        if (list) {
            if (args[i].default_value())
                continue; // left to its default
            throw std::invalid_argument("forward's argument '" + args[i].name() +
                                        "' comes after the List[Tensor] '" + list->name() +
                                        "', which takes every input left; every argument after a "
                                        "List[Tensor] needs a default");
        }
        if (!type->cast<c10::TensorType>() && !tuple) {
            if (args[i].default_value())
                break; // left to its default, and so is every later one
            throw std::invalid_argument("forward's argument '" + args[i].name() + "' is " +
                                        type->str() +
                                        " without a default; berth passes tensors (Tensor, a fixed "
                                        "Tuple[Tensor, ...] or a List[Tensor]) only");
        }
        model.tuple_sizes.push_back(tuple);
        if (tuple == kListArg) {
            // One required element (unless the list has a default), the rest optional.
            list = &args[i];
            size_t first = model.arg_names.size();
            for (size_t k = 0; first + k < kMaxInputs || k == 0; ++k)
                model.arg_names.push_back(args[i].name() + "." + std::to_string(k));
            if (!args[i].default_value())
                model.num_required = first + 1;
        } else if (tuple) {
            for (size_t k = 0; k < tuple; ++k)
                model.arg_names.push_back(args[i].name() + "." + std::to_string(k));
        } else {
            model.arg_names.push_back(args[i].name());
        }
        if (!args[i].default_value() && !list)
            model.num_required = model.arg_names.size();
    }
}

void load_pt2(berth_torch_model &model, const char *path,
              caffe2::serialize::PyTorchStreamReader &reader, uint32_t concurrency)
{
#if BERTH_HAVE_AOTI
    model.pt2 = true;
    const std::string &why = load_beside_libtorch("libtorch.so");
    if (!why.empty())
        throw std::runtime_error("AOTInductor packages need libtorch.so, which did not load: " +
                                 why);
    c10::DeviceIndex index = model.device.is_cuda() ? model.device.index() : -1;
    model.package = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
        path, "model", false, concurrency ? concurrency : 1, index);
    auto meta = model.package->get_metadata();
    auto key = meta.find("AOTI_DEVICE_KEY");
    if (key != meta.end() && !key->second.empty() &&
        key->second != c10::DeviceTypeName(model.device.type(), true))
        throw std::invalid_argument("the package was compiled for device '" + key->second +
                                    "', not '" + model.device.str() + "': load it with device='" +
                                    key->second + "'");
    auto spec = model.package->get_call_spec();
    if (spec.size() == 2)
        model.single_output = spec[1].find("\"type\": null") < 8;
    auto it = meta.find(kSignatureFile);
    if (it != meta.end() && !it->second.empty()) {
        model.metadata = it->second;
    } else {
        model.metadata = signature_from_wrapper(reader);
    }
    model.has_metadata = !model.metadata.empty();
    // One input per leaf of the input spec (the positional arguments, flattened):
    // "input_0", ... unless berth.json names them.
    size_t leaves = 0;
    if (!spec.empty())
        for (size_t at = spec[0].find("\"type\": null"); at != std::string::npos;
             at = spec[0].find("\"type\": null", at + 1))
            ++leaves;
    for (size_t i = 0; i < leaves; ++i)
        model.arg_names.push_back("input_" + std::to_string(i));
    model.num_required = leaves;
#else
    (void)model, (void)path, (void)reader, (void)concurrency;
    throw Unsupported(
        "it is a torch.export / AOTInductor package (.pt2), which needs libtorch 2.6 or "
        "newer; berth was built against libtorch " TORCH_VERSION
        ": install torch>=2.6 and rebuild berth, or save the model as TorchScript");
#endif
}

berth_status *model_load(const char *path, const berth_load_options *options,
                         berth_torch_model **out)
{
    FIREWALL_BEGIN
    if (!path || !out)
        return make_status(BERTH_E_INVALID_ARGUMENT, "path and out must not be NULL");
    *out = nullptr;
    berth_load_options opts{};
    if (options)
        std::memcpy(&opts, options, std::min<size_t>(options->struct_size, sizeof opts));
    c10::InferenceMode guard;
    auto model = std::make_unique<berth_torch_model>();
    try {
        model->device = parse_device(opts.device);
    } catch (const std::exception &e) {
        return make_status(BERTH_E_INVALID_ARGUMENT, what_of(e));
    }
    Format format;
    try {
        caffe2::serialize::PyTorchStreamReader reader(path);
        format = sniff(reader);
        if (format == Format::pt2)
            load_pt2(*model, path, reader, opts.concurrency);
    } catch (const Unsupported &e) {
        return make_status(BERTH_E_UNSUPPORTED, e.what());
    }
    if (format == Format::torchscript)
        load_torchscript(*model, path);
    if (format == Format::unknown)
        return make_status(BERTH_E_LOAD,
                           "the archive is neither TorchScript (no data.pkl) nor a .pt2 package "
                           "(no archive_format)");
    *out = model.release();
    return nullptr;
    FIREWALL_END(BERTH_E_LOAD)
}

const char *model_format(const berth_torch_model *m) { return m && m->pt2 ? "pt2" : "torchscript"; }

berth_status *load_library(const char *path)
{
    FIREWALL_BEGIN
    if (!path)
        return make_status(BERTH_E_INVALID_ARGUMENT, "path must not be NULL");
    // Operator libraries built against torch (cpp_extension) need libtorch.so by name.
    const std::string &libtorch = load_beside_libtorch("libtorch.so");
    if (!libtorch.empty())
        return make_status(BERTH_E_LOAD,
                           std::string("cannot load the operator library '") + path +
                               "': it needs libtorch.so, which did not load: " + libtorch);
    if (!dlopen(path, RTLD_NOW | RTLD_GLOBAL)) {
        const char *why = dlerror();
        return make_status(BERTH_E_LOAD, std::string("cannot load the operator library '") + path +
                                             "': " + (why ? why : "unknown error"));
    }
    return nullptr;
    FIREWALL_END(BERTH_E_LOAD)
}

void model_free(berth_torch_model *m) { delete m; }

size_t model_num_args(const berth_torch_model *m) { return m ? m->arg_names.size() : 0; }

size_t model_num_required_args(const berth_torch_model *m) { return m ? m->num_required : 0; }

const char *model_arg_name(const berth_torch_model *m, size_t i)
{
    return (m && i < m->arg_names.size()) ? m->arg_names[i].c_str() : nullptr;
}

const char *model_output_name(const berth_torch_model *m, size_t i)
{
    if (!m || !m->names_known || i >= m->output_names.size())
        return nullptr;
    return m->output_names[i].c_str();
}

const char *model_metadata(const berth_torch_model *m, size_t *length)
{
    if (!m || !m->has_metadata) {
        if (length)
            *length = 0;
        return nullptr;
    }
    if (length)
        *length = m->metadata.size();
    return m->metadata.c_str();
}

berth_status *model_forward(berth_torch_model *m, DLManagedTensor *const *inputs, size_t n_inputs,
                            DLManagedTensor **outputs, size_t max_outputs, size_t *n_outputs,
                            int *is_tuple)
{
    // Inputs not yet handed to a tensor are released here on every early path.
    size_t taken = 0;
    auto release_rest = [&]() {
        for (size_t i = taken; i < n_inputs; ++i)
            if (inputs[i] && inputs[i]->deleter)
                inputs[i]->deleter(inputs[i]);
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
        std::vector<at::Tensor> tensors;
        if (m->pt2) {
#if BERTH_HAVE_AOTI
            std::vector<at::Tensor> args;
            args.reserve(n_inputs);
            for (; taken < n_inputs;) {
                DLManagedTensor *in = inputs[taken];
                ++taken;
                at::Tensor t = from_dlpack(in, taken - 1);
                // AOTInductor's kernels index inputs as contiguous and on their device.
                if (!t.is_contiguous())
                    t = t.contiguous();
                if (m->device != t.device())
                    t = t.to(m->device);
                args.push_back(std::move(t));
            }
            tensors = m->package->boxed_run(std::move(args));
            *is_tuple = !m->single_output;
#endif
        } else {
            torch::jit::Stack stack;
            stack.reserve(n_inputs + 1);
            stack.emplace_back(m->module._ivalue()); // self
            auto next = [&]() {
                DLManagedTensor *in = inputs[taken];
                ++taken; // from here the tensor's storage owns it (or from_dlpack threw after
                         // taking it: at::from_blob frees through the deleter on failure)
                at::Tensor t = from_dlpack(in, taken - 1);
                return m->device != t.device() ? t.to(m->device) : t;
            };
            for (size_t arg = 0; taken < n_inputs; ++arg) {
                size_t tuple = arg < m->tuple_sizes.size() ? m->tuple_sizes[arg] : 0;
                if (tuple == kListArg) { // takes every input left
                    c10::List<at::Tensor> elements;
                    elements.reserve(n_inputs - taken);
                    while (taken < n_inputs)
                        elements.push_back(next());
                    stack.emplace_back(std::move(elements));
                    break;
                }
                if (!tuple) {
                    stack.emplace_back(next());
                    continue;
                }
                if (n_inputs - taken < tuple) {
                    release_rest();
                    return make_status(BERTH_E_INVALID_ARGUMENT, "forward's tuple argument needs " +
                                                                     std::to_string(tuple) +
                                                                     " tensors");
                }
                std::vector<c10::IValue> elements;
                for (size_t k = 0; k < tuple; ++k)
                    elements.emplace_back(next());
                stack.emplace_back(c10::ivalue::Tuple::create(std::move(elements)));
            }
            // What Module::forward does (checks types, fills defaults), without the lookup.
            c10::IValue result = (*m->forward)(std::move(stack), torch::jit::Kwargs());
            std::vector<std::string> names;
            std::string why = flatten(result, "", tensors, m->names_known ? nullptr : &names);
            if (!why.empty())
                return make_status(BERTH_E_INFERENCE, "the model returned " + why);
            *is_tuple = result.isTensor() ? 0 : result.isGenericDict() ? 2 : 1;
            if (!m->names_known) {
                std::lock_guard<std::mutex> hold(m->names_lock);
                if (!m->names_known) {
                    m->output_names = std::move(names);
                    m->names_known = true;
                }
            }
        }
        if (tensors.size() > max_outputs)
            return make_status(BERTH_E_INFERENCE,
                               "the model returned " + std::to_string(tensors.size()) +
                                   " tensors; berth takes at most " + std::to_string(max_outputs));
        for (const auto &t : tensors)
            made.push_back(to_dlpack(t));
        for (size_t i = 0; i < made.size(); ++i)
            outputs[i] = made[i];
        *n_outputs = made.size();
        return nullptr;
    } catch (const std::bad_alloc &) {
        for (auto *d : made)
            delete_output(d);
        release_rest();
        return make_status(BERTH_E_NO_MEMORY, "out of memory during forward");
    } catch (const std::exception &e) {
        for (auto *d : made)
            delete_output(d);
        release_rest();
        return make_status(BERTH_E_INFERENCE, short_message(what_of(e)));
    } catch (...) {
        for (auto *d : made)
            delete_output(d);
        release_rest();
        return make_status(BERTH_E_INTERNAL, "unknown C++ exception during forward");
    }
}

berth_status *model_optimize(berth_torch_model *m)
{
    FIREWALL_BEGIN
    if (!m)
        return make_status(BERTH_E_INVALID_ARGUMENT, "model must not be NULL");
    if (m->pt2)
        return nullptr; // AOTInductor already compiled it for inference
    // Under InferenceMode as at load: frozen modules' oneDNN passes assert outside it.
    c10::InferenceMode guard;
    torch::jit::Module optimized = torch::jit::optimize_for_inference(m->module);
    auto method = optimized.find_method("forward");
    if (!method)
        return make_status(BERTH_E_INTERNAL, "the optimized module lost its forward method");
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
    model_format,
    load_library,
    model_num_args,
    model_num_required_args,
    model_arg_name,
    model_metadata,
    model_forward,
    model_output_name,
    model_optimize,
};

} // namespace

BERTH_EXPORT const berth_torch_api *berth_torch_get_api(uint32_t abi_version)
{
    return abi_version == BERTH_TORCH_ABI_VERSION ? &kApi : nullptr;
}
