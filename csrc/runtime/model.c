/* model.c - loading a model through the shim, its signature, input checks, forward. */
#define _GNU_SOURCE
#include "runtime/model.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "berth/dtypes.h"
#include "runtime/clock.h"
#include "runtime/json.h"
#include "runtime/tensor.h"
#include "runtime/threads.h"
#include "runtime/torch_api.h"

/* "bool, uint8, ..., float64": the dtype table's names, for messages. */
#define BT_DTYPE_LISTED(NAME, DATATYPE, CODE, BITS, NPY, TORCH) ", " NAME

/* The list above without its leading ", ". */
#define DTYPE_NAMES (BERTH_DTYPES(BT_DTYPE_LISTED) + 2)

static atomic_int threads_in_effect;

const char *bt_torch_version(void)
{
    const berth_torch_api *t = bt_torch_loaded();
    return t ? t->torch_version : NULL;
}

int bt_num_threads(void) { return atomic_load(&threads_in_effect); }

static void free_specs(bt_spec *specs, size_t n)
{
    for (size_t i = 0; specs && i < n; ++i) {
        free(specs[i].name);
        free(specs[i].shape);
        free(specs[i].min);
        free(specs[i].max);
    }
    free(specs);
}

void bt_model_free(bt_model *m)
{
    if (!m)
        return;
    const berth_torch_api *t = bt_torch_loaded();
    if (t && m->handle)
        t->model_free(m->handle);
    free_specs(m->inputs, m->n_inputs);
    free_specs(m->outputs, m->n_outputs);
    free(m->metadata);
    free(m->path);
    free(m);
}

/* A JSON integer >= 0 below 2^53 into *out; -1 otherwise. */
static int json_extent(const cJSON *v, int64_t *out)
{
    double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(x >= 0 && x < 9007199254740992.0) || x != (double)(int64_t)x)
        return -1;
    *out = (int64_t)x;
    return 0;
}

/* "ranges": one entry per dimension, null for a static one, [min, max] (max null for no
 * bound) for a dynamic one: what torch.export was told, which berth checks. */
static int parse_ranges(const cJSON *obj, const char *at, bt_spec *spec, bt_error *err)
{
    const cJSON *ranges;
    if (bt_json_get(obj, "ranges", at, &ranges, BT_ERR_LOAD, err) != 0)
        return -1;
    if (!ranges || cJSON_IsNull(ranges))
        return 0;
    if (!cJSON_IsArray(ranges) || spec->ndim < 0 || bt_json_size(ranges) != (size_t)spec->ndim)
        return bt_error_set(err, BT_ERR_LOAD,
                            "%s: ranges must be a list with one entry per dimension of shape", at);
    size_t nd = (size_t)spec->ndim;
    spec->min = calloc(nd ? nd : 1, sizeof(int64_t));
    spec->max = calloc(nd ? nd : 1, sizeof(int64_t));
    if (!spec->min || !spec->max)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    size_t d = 0;
    for (const cJSON *r = ranges->child; r; r = r->next, ++d) {
        spec->min[d] = spec->shape[d] >= 0 ? spec->shape[d] : 0;
        spec->max[d] = spec->shape[d] >= 0 ? spec->shape[d] : INT64_MAX;
        if (cJSON_IsNull(r))
            continue;
        const cJSON *lo = cJSON_GetArrayItem(r, 0), *hi = cJSON_GetArrayItem(r, 1);
        if (!cJSON_IsArray(r) || bt_json_size(r) != 2 || json_extent(lo, &spec->min[d]) != 0 ||
            (!cJSON_IsNull(hi) && json_extent(hi, &spec->max[d]) != 0) ||
            spec->max[d] < spec->min[d])
            return bt_error_set(err, BT_ERR_LOAD,
                                "%s: ranges[%zu] must be null or [min, max] with 0 <= min <= max "
                                "(max null for no bound)",
                                at, d);
    }
    return 0;
}

/* Fills spec from one {"name","dtype","shape","ranges"} object of berth.json. */
static int parse_spec(const cJSON *obj, const char *where, size_t index, bt_spec *spec,
                      const char *label, bt_error *err)
{
    if (!cJSON_IsObject(obj))
        return bt_error_set(err, BT_ERR_LOAD, "%s: %s[%zu] is not an object", label, where, index);
    char at[512]; /* the message holds 1024 bytes anyway */
    snprintf(at, sizeof at, "%s[%zu] of %s", where, index, label);
    const cJSON *name, *dtype, *shape;
    if (bt_json_get(obj, "name", at, &name, BT_ERR_LOAD, err) != 0 ||
        bt_json_get(obj, "dtype", at, &dtype, BT_ERR_LOAD, err) != 0 ||
        bt_json_get(obj, "shape", at, &shape, BT_ERR_LOAD, err) != 0)
        return -1;
    if (name && cJSON_IsString(name)) {
        if (!bt_json_utf8_valid(name->valuestring))
            return bt_error_set(err, BT_ERR_LOAD, "%s: %s[%zu].name is not valid UTF-8", label,
                                where, index);
        free(spec->name);
        spec->name = strdup(name->valuestring);
        if (!spec->name)
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    if (dtype && !cJSON_IsNull(dtype)) {
        if (!cJSON_IsString(dtype) || bt_dtype_from_name(dtype->valuestring, &spec->dtype) != 0)
            return bt_error_set(err, BT_ERR_LOAD, "%s: %s[%zu].dtype is not one of %s", label,
                                where, index, DTYPE_NAMES);
        spec->has_dtype = 1;
    }
    if (shape && !cJSON_IsNull(shape)) {
        size_t nd = cJSON_IsArray(shape) ? bt_json_size(shape) : 0;
        if (!cJSON_IsArray(shape) || nd > BT_MAX_NDIM)
            return bt_error_set(err, BT_ERR_LOAD, "%s: %s[%zu].shape is not a list of integers",
                                label, where, index);
        spec->shape = calloc(nd ? nd : 1, sizeof(int64_t));
        if (!spec->shape)
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        size_t d = 0;
        for (const cJSON *v = shape->child; v; v = v->next, ++d) {
            if (cJSON_IsNull(v)) {
                spec->shape[d] = -1;
                continue;
            }
            /* a double carries integers exactly below 2^53 */
            double x = cJSON_IsNumber(v) ? v->valuedouble : -2;
            if (!(x >= -1 && x < 9007199254740992.0) || x != (double)(int64_t)x)
                return bt_error_set(err, BT_ERR_LOAD,
                                    "%s: %s[%zu].shape[%zu] must be an integer >= -1", label, where,
                                    index, d);
            spec->shape[d] = (int64_t)x;
        }
        spec->ndim = (int)nd;
    }
    return parse_ranges(obj, at, spec, err);
}

static int parse_metadata(bt_model *m, const char *label, bt_error *err)
{
    bt_json_error jerr;
    cJSON *root = bt_json_parse(m->metadata, m->metadata_len, &jerr);
    if (!root)
        return bt_error_set(err, BT_ERR_LOAD, "%s is not a JSON object: %s (line %d)", label,
                            jerr.text, jerr.line);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bt_error_set(err, BT_ERR_LOAD, "%s is not a JSON object: top level is %s", label,
                            bt_json_kind(root));
    }
    int rc = 0;
    const cJSON *inputs, *outputs;
    if (bt_json_get(root, "inputs", label, &inputs, BT_ERR_LOAD, err) != 0 ||
        bt_json_get(root, "outputs", label, &outputs, BT_ERR_LOAD, err) != 0) {
        rc = -1;
        goto done;
    }
    if (inputs && cJSON_IsArray(inputs)) {
        /* Optional inputs left out (the elements of a List[Tensor] past those listed, say)
         * are not served. */
        size_t n = bt_json_size(inputs);
        if (n < m->n_required || n > m->n_inputs) {
            if (m->n_required == m->n_inputs)
                rc = bt_error_set(err, BT_ERR_LOAD, "%s lists %zu inputs but forward takes %zu",
                                  label, n, m->n_inputs);
            else
                rc = bt_error_set(err, BT_ERR_LOAD,
                                  "%s lists %zu inputs but forward takes %zu to %zu", label, n,
                                  m->n_required, m->n_inputs);
            goto done;
        }
        for (size_t i = n; i < m->n_inputs; ++i) {
            free(m->inputs[i].name);
            m->inputs[i].name = NULL;
        }
        m->n_inputs = n;
        size_t i = 0;
        for (const cJSON *v = inputs->child; v && rc == 0; v = v->next, ++i)
            rc = parse_spec(v, "inputs", i, &m->inputs[i], label, err);
    }
    if (rc == 0 && outputs && cJSON_IsArray(outputs) && bt_json_size(outputs) > BT_MAX_OUTPUTS) {
        rc = bt_error_set(err, BT_ERR_LOAD, "%s lists %zu outputs; berth serves at most %d", label,
                          bt_json_size(outputs), BT_MAX_OUTPUTS);
        goto done;
    }
    if (rc == 0 && outputs && cJSON_IsArray(outputs)) {
        size_t n = bt_json_size(outputs);
        m->outputs = calloc(n ? n : 1, sizeof(bt_spec));
        if (!m->outputs) {
            rc = bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
            goto done;
        }
        m->n_outputs = n;
        for (size_t i = 0; i < n; ++i)
            m->outputs[i].ndim = -1;
        size_t i = 0;
        for (const cJSON *v = outputs->child; v && rc == 0; v = v->next, ++i) {
            char fallback[32];
            snprintf(fallback, sizeof fallback, "output_%zu", i);
            m->outputs[i].name = strdup(fallback);
            if (!m->outputs[i].name)
                rc = bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
            else
                rc = parse_spec(v, "outputs", i, &m->outputs[i], label, err);
        }
    }
done:
    cJSON_Delete(root);
    return rc;
}

/* A leading dimension that batches: any extent, a batch of one allowed. */
static int leading_any(const bt_spec *s)
{
    return s->ndim >= 1 && s->shape[0] == -1 && (!s->min || s->min[0] <= 1);
}

/* Turns the shim's load failure into words a user can act on. */
static int load_failure(const char *path, const char *detail, bt_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return bt_error_set(err, BT_ERR_LOAD, "cannot load '%s': %s", path, strerror(errno));
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    if (read_error)
        return bt_error_set(err, BT_ERR_LOAD, "cannot load '%s': %s", path, strerror(read_error));
    if (got < 4 || memcmp(magic, "PK\x03\x04", 4) != 0)
        return bt_error_set(
            err, BT_ERR_LOAD,
            "cannot load '%s': not a TorchScript or .pt2 file (it is not a zip "
            "archive); save models with berth's model.save(path), berth.export(...) or "
            "torch.jit.save(torch.jit.script(model), path)",
            path);
    if (strstr(detail, "Unknown builtin op"))
        return bt_error_set(
            err, BT_ERR_LOAD,
            "cannot load '%s': %s; the model uses a custom operator: load the "
            "library that defines it first (berth.load(path, libraries=[...]), or serve and deploy "
            "--library PATH)",
            path, detail);
    return bt_error_set(err, BT_ERR_LOAD,
                        "cannot load '%s': not a readable TorchScript or .pt2 archive (%s); save "
                        "models with berth's model.save(path), berth.export(...) or "
                        "torch.jit.save(torch.jit.script(model), path)",
                        path, detail);
}

/* A .pt2 runs kernels that trust their inputs: berth must know each input's dtype and
 * shape to check them first. */
static int require_signature(const bt_model *m, bt_error *err)
{
    for (size_t i = 0; i < m->n_inputs; ++i)
        if (!m->inputs[i].has_dtype || m->inputs[i].ndim < 0)
            return bt_error_set(
                err, BT_ERR_LOAD,
                "cannot load '%s': berth cannot tell the dtype and shape of its "
                "input '%s' from the package, and AOTInductor's kernels do not check their inputs; "
                "export it with berth.export(...), which embeds the signature",
                m->path, m->inputs[i].name);
    return 0;
}

static int64_t batch_bound(const bt_model *m)
{
    int64_t bound = INT64_MAX;
    for (size_t i = 0; i < m->n_inputs; ++i)
        if (m->inputs[i].max && m->inputs[i].ndim >= 1 && m->inputs[i].max[0] < bound)
            bound = m->inputs[i].max[0];
    return bound;
}

int bt_load_library(const char *path, bt_error *err)
{
    const berth_torch_api *t = bt_torch(err);
    if (!t)
        return -1;
    berth_status *s = t->load_library(path);
    if (!s)
        return 0;
    bt_error_set(err, BT_ERR_LOAD, "%s", t->status_message(s));
    t->status_free(s);
    return -1;
}

/* A readable file, not a folder: said in the OS's words before libtorch would say "not a
 * zip archive". */
static int check_readable(const char *path, bt_error *err)
{
    struct stat st;
    if (!path || stat(path, &st) != 0)
        return bt_error_set(err, BT_ERR_LOAD, "cannot load '%s': %s", path ? path : "(null)",
                            path ? strerror(errno) : "no path given");
    if (S_ISDIR(st.st_mode))
        return bt_error_set(
            err, BT_ERR_LOAD,
            "cannot load '%s': it is a directory, expected a TorchScript or .pt2 file", path);
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return bt_error_set(err, BT_ERR_LOAD, "cannot load '%s': %s", path, strerror(errno));
    unsigned char byte;
    size_t got = fread(&byte, 1, 1, probe);
    int read_error = got == 0 && ferror(probe) ? errno : 0;
    fclose(probe);
    if (read_error)
        return bt_error_set(err, BT_ERR_LOAD, "cannot load '%s': %s", path, strerror(read_error));
    return 0;
}

/* The shim loads the file into m->handle, with libtorch's threads set once per process. */
static int shim_load(const berth_torch_api *t, bt_model *m, const bt_load_options *options,
                     bt_error *err)
{
    if (atomic_load(&threads_in_effect) == 0) {
        int want = bt_default_num_threads(err);
        if (want < 0)
            return -1;
        atomic_store(&threads_in_effect, t->set_num_threads(want));
    }
    berth_load_options opts = {sizeof opts, NULL, 0};
    if (options) {
        opts.device = options->device;
        opts.concurrency = options->concurrency;
    }
    if (!opts.concurrency)
        opts.concurrency =
            (uint32_t)(atomic_load(&threads_in_effect) > 0 ? atomic_load(&threads_in_effect) : 1);
    berth_status *s = t->model_load(m->path, &opts, &m->handle);
    if (!s && m->handle)
        return 0;
    berth_code code = t->status_code(s);
    if (code == BERTH_E_NO_MEMORY)
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory loading '%s'", m->path);
    else if (code == BERTH_E_INVALID_ARGUMENT)
        bt_error_set(err, BT_ERR_VALUE, "%s", t->status_message(s));
    else if (code == BERTH_E_UNSUPPORTED)
        bt_error_set(err, BT_ERR_LOAD, "cannot load '%s': %s", m->path, t->status_message(s));
    else
        load_failure(m->path, s ? t->status_message(s) : "out of memory", err);
    t->status_free(s);
    return -1;
}

/* The inputs forward takes, named as the shim reads them from the model. */
static int read_args(const berth_torch_api *t, bt_model *m, bt_error *err)
{
    m->format = t->model_format(m->handle);
    m->n_inputs = t->model_num_args(m->handle);
    m->n_required = t->model_num_required_args(m->handle);
    m->inputs = calloc(m->n_inputs ? m->n_inputs : 1, sizeof(bt_spec));
    if (!m->inputs)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < m->n_inputs; ++i) {
        m->inputs[i].ndim = -1;
        const char *name = t->model_arg_name(m->handle, i);
        if (!(m->inputs[i].name = strdup(name ? name : "input")))
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    return 0;
}

/* The signature: the file's berth.json, or the one the caller gives for a plain file. */
static int take_signature(const berth_torch_api *t, bt_model *m, const char *given, bt_error *err)
{
    size_t len = 0;
    const char *meta = t->model_metadata(m->handle, &len);
    char label[512];
    snprintf(label, sizeof label, "berth.json in '%s'", m->path);
    if (given) {
        if (meta || strcmp(m->format, "pt2") == 0)
            return bt_error_set(err, BT_ERR_VALUE,
                                "signature: expected a plain TorchScript file (one without a "
                                "berth.json signature), got '%s', which carries its own%s",
                                m->path,
                                strcmp(m->format, "pt2") == 0
                                    ? " (a .pt2's signature comes from the package; export "
                                      "it again with berth.export)"
                                    : "");
        meta = given;
        len = strlen(given);
        snprintf(label, sizeof label, "the signature (inputs/outputs) given for '%s'", m->path);
    }
    if (!meta)
        return 0;
    if (!(m->metadata = malloc(len + 1)))
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    memcpy(m->metadata, meta, len);
    m->metadata[len] = '\0';
    m->metadata_len = len;
    if (parse_metadata(m, label, err) != 0) {
        if (given && err)
            err->kind = BT_ERR_VALUE;
        return -1;
    }
    return 0;
}

int bt_model_load(const char *path, const bt_load_options *options, bt_model **out, bt_error *err)
{
    double start = bt_now();
    *out = NULL;
    if (check_readable(path, err) != 0)
        return -1;
    const berth_torch_api *t = bt_torch(err);
    if (!t)
        return -1;
    bt_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    if (shim_load(t, m, options, err) != 0 || read_args(t, m, err) != 0 ||
        take_signature(t, m, options ? options->signature : NULL, err) != 0 ||
        (strcmp(m->format, "pt2") == 0 && require_signature(m, err) != 0)) {
        bt_model_free(m);
        return -1;
    }
    m->max_batch = batch_bound(m);
    m->batchable = m->n_inputs > 0 && m->n_outputs > 0;
    for (size_t i = 0; i < m->n_inputs; ++i)
        m->batchable &= leading_any(&m->inputs[i]);
    for (size_t i = 0; i < m->n_outputs; ++i)
        m->batchable &= leading_any(&m->outputs[i]);
    m->load_seconds = bt_now() - start;
    *out = m;
    return 0;
}

int bt_model_optimize(bt_model *m, bt_error *err)
{
    const berth_torch_api *t = bt_torch(err);
    if (!t)
        return -1;
    if (m->optimized)
        return 0;
    double start = bt_now();
    berth_status *s = t->model_optimize(m->handle);
    if (s) {
        if (t->status_code(s) == BERTH_E_NO_MEMORY)
            bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory optimizing '%s'", m->path);
        else
            bt_error_set(err, BT_ERR_LOAD,
                         "cannot optimize '%s' for inference: %s; load it without optimizing",
                         m->path, t->status_message(s));
        t->status_free(s);
        return -1;
    }
    m->optimized = 1;
    m->load_seconds += bt_now() - start;
    return 0;
}

int bt_model_check_input(const bt_model *m, size_t index, const DLTensor *t, DLDataType *cast_to,
                         bt_error *err)
{
    if (index >= m->n_inputs)
        return bt_error_set(err, BT_ERR_VALUE, "the model takes %zu inputs, got more", m->n_inputs);
    const bt_spec *s = &m->inputs[index];
    if (!bt_dtype_size(t->dtype))
        return bt_error_set(err, BT_ERR_TYPE,
                            "input '%s' has dtype %s, which berth cannot pass to libtorch "
                            "(expected one of float16/32/64, int8/16/32/64, uint8, bool)",
                            s->name, bt_dtype_str(t->dtype));
    if (s->ndim >= 0) {
        int ok = t->ndim == s->ndim;
        for (int d = 0; ok && d < s->ndim; ++d)
            ok = s->shape[d] == -1 || s->shape[d] == t->shape[d];
        if (!ok) {
            char want[256], got[256];
            return bt_error_set(err, BT_ERR_VALUE, "input '%s' expects shape %s, got %s", s->name,
                                bt_shape_str(want, sizeof want, s->shape, s->ndim),
                                bt_shape_str(got, sizeof got, t->shape, t->ndim));
        }
        for (int d = 0; s->min && d < s->ndim; ++d)
            if (t->shape[d] < s->min[d] || t->shape[d] > s->max[d]) {
                char hi[32] = "any";
                if (s->max[d] != INT64_MAX)
                    snprintf(hi, sizeof hi, "%lld", (long long)s->max[d]);
                return bt_error_set(
                    err, BT_ERR_VALUE,
                    "input '%s' dimension %d must be between %lld and %s (the range "
                    "the model was exported for), got %lld",
                    s->name, d, (long long)s->min[d], hi, (long long)t->shape[d]);
            }
    }
    if (s->has_dtype && !bt_dtype_equal(s->dtype, t->dtype)) {
        if (!bt_cast_allowed(t->dtype, s->dtype))
            return bt_error_set(
                err, BT_ERR_TYPE,
                "input '%s' expects dtype %s, got %s, and that conversion "
                "could lose information; convert it yourself (e.g. x.astype('%s')) if that is intended",
                s->name, bt_dtype_str(s->dtype), bt_dtype_str(t->dtype), bt_dtype_str(s->dtype));
        *cast_to = s->dtype;
        return 1;
    }
    return 0;
}

/* Whether bt_model_check_input checks all a request can get wrong: every input floating
 * point (integer inputs are often indices, whose values forward may rightly refuse), every
 * extent fixed but the leading (batch) one. Then a forward that raises is the model's fault. */
static int signature_complete(const bt_model *m)
{
    for (size_t i = 0; i < m->n_inputs; ++i) {
        const bt_spec *s = &m->inputs[i];
        if (!s->has_dtype || s->dtype.code != kDLFloat || s->ndim < 0)
            return 0;
        for (int d = 1; d < s->ndim; ++d)
            if (s->shape[d] < 0)
                return 0;
    }
    return m->n_inputs > 0;
}

/* The shim reports a result it cannot convert (a non-tensor, a dtype NumPy and the
 * protocol cannot take, too many tensors) with BERTH_E_INFERENCE and this wording; the ABI
 * has no code of its own for it yet. */
#define SHIM_BAD_RESULT "the model returned "

const char *bt_model_output_name(const bt_model *m, size_t k)
{
    if (k < m->n_outputs && m->outputs[k].name)
        return m->outputs[k].name;
    const berth_torch_api *t = bt_torch_loaded();
    return t && m->handle ? t->model_output_name(m->handle, k) : NULL;
}

int bt_model_forward(bt_model *m, DLManagedTensor *const *in, size_t n, DLManagedTensor **out,
                     size_t max_out, size_t *n_out, int *is_tuple, bt_error *err)
{
    const berth_torch_api *t = bt_torch_loaded();
    if (n != m->n_inputs && strcmp(m->format, "pt2") == 0) {
        /* AOTInductor would read past the inputs it was given */
        for (size_t i = 0; i < n; ++i)
            if (in[i] && in[i]->deleter)
                in[i]->deleter(in[i]);
        return bt_error_set(err, BT_ERR_VALUE, "the model takes %zu inputs, got %zu", m->n_inputs,
                            n);
    }
    berth_status *s = t->model_forward(m->handle, in, n, out, max_out, n_out, is_tuple);
    if (!s)
        return 0;
    berth_code code = t->status_code(s);
    const char *msg = t->status_message(s);
    bt_error_kind kind = BT_ERR_INTERNAL;
    if (code == BERTH_E_NO_MEMORY)
        kind = BT_ERR_NO_MEMORY;
    else if (code == BERTH_E_INFERENCE)
        kind = strncmp(msg, SHIM_BAD_RESULT, strlen(SHIM_BAD_RESULT)) == 0 || signature_complete(m)
                   ? BT_ERR_MODEL
                   : BT_ERR_INFERENCE;
    bt_error_set(err, kind, "%s", msg);
    t->status_free(s);
    return -1;
}
