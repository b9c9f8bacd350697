/* module.c - berth._core: exceptions, the Model type, thread policy helpers. */
#include "berth/dlpack.h"
#include "berth/dtypes.h"
#include "python/py_convert.h"
#include "python/py_model.h"
#include "python/serving_init.h"
#include "runtime/threads.h"
#include "serving/json_body.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

static PyObject *core_cgroup_cpu_limit(PyObject *self, PyObject *args)
{
    (void)self;
    const char *root, *path;
    if (!PyArg_ParseTuple(args, "ss:cgroup_cpu_limit", &root, &path))
        return NULL;
    return PyLong_FromLong(bt_cgroup_cpu_limit(root, path));
}

static PyObject *core_default_num_threads(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    bt_error err = {0};
    int n = bt_default_num_threads(&err);
    return n < 0 ? bt_py_raise(&err) : PyLong_FromLong(n);
}

static PyObject *core_num_threads(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    return PyLong_FromLong(bt_num_threads());
}

static PyObject *core_torch_version(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    const char *v = bt_torch_version();
    if (!v)
        Py_RETURN_NONE;
    return PyUnicode_FromString(v);
}

/* A serving process allocates and frees the same large activations on every forward. glibc
 * serves blocks over its mmap threshold (at most 32 MiB) with fresh mmaps and returns the top
 * of the heap to the kernel past the trim threshold, so each forward of a batch of 224x224
 * images page-faulted its activations in again (measured: benchmarks/README.md, Serving).
 * Keeping freed memory in the heap trades peak RSS for that. */
static PyObject *core_keep_freed_memory(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
#ifdef __GLIBC__
    if (mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1)
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

/* With freed memory kept, what loading a model freed (the file's bytes, the module before
 * freezing, the optimizing passes' graphs: resnet18, 4x its weights) would stay resident
 * for good. Handing it back once a model is loaded leaves the heap to grow to what its
 * forwards need, which it then keeps. */
static PyObject *core_release_freed_memory(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
#ifdef __GLIBC__
    int released;
    Py_BEGIN_ALLOW_THREADS
        released = malloc_trim(0);
    Py_END_ALLOW_THREADS
    if (released)
        Py_RETURN_TRUE;
#endif
    Py_RETURN_FALSE;
}

static PyObject *core_load_library(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    bt_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = bt_load_library(PyBytes_AS_STRING(path), &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc != 0)
        return bt_py_raise(&err);
    Py_RETURN_NONE;
}

/* For the tests that prove the parse memory bound (see BT_JSON_MAX_NODES). */
static PyObject *core_json_body_cost(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    bt_json_error jerr;
    size_t used = 0;
    cJSON *root;
    Py_BEGIN_ALLOW_THREADS
        root = bt_json_parse_body(view.buf, (size_t)view.len, &jerr);
        used = bt_json_body_bytes();
        if (root)
            bt_json_release(root);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (!root)
        return PyErr_Format(PyExc_ValueError, "%s (line %d)", jerr.text, jerr.line);
    return PyLong_FromSize_t(used);
}

static PyMethodDef core_methods[] = {
    {"load_library", core_load_library, METH_O,
     "load_library(path)\n--\n\nLoad a library of custom operators (RTLD_GLOBAL) for models loaded after it."},
    {"_json_body_cost", core_json_body_cost, METH_O,
     "_json_body_cost(body)\n--\n\nBytes of memory parsing a request body as JSON takes (tests)."},
    {"keep_freed_memory", core_keep_freed_memory, METH_NOARGS,
     "keep_freed_memory()\n--\n\nglibc only: serve every allocation from the heap and keep freed memory "
     "for reuse instead of returning it to the kernel. True if applied."},
    {"release_freed_memory", core_release_freed_memory, METH_NOARGS,
     "release_freed_memory()\n--\n\nglibc only: hand the heap's free memory back to the kernel "
     "(malloc_trim). True if any was."},
    {"cgroup_cpu_limit", core_cgroup_cpu_limit, METH_VARARGS,
     "cgroup_cpu_limit(root, path)\n--\n\nCPUs allowed by the cgroup quota at root/path (0 = no limit)."},
    {"default_num_threads", core_default_num_threads, METH_NOARGS,
     "default_num_threads()\n--\n\nIntra-op threads berth will use: BERTH_NUM_THREADS, cgroup quota, or CPUs."},
    {"num_threads", core_num_threads, METH_NOARGS,
     "num_threads()\n--\n\nIntra-op threads in effect (0 before the first load)."},
    {"torch_version", core_torch_version, METH_NOARGS,
     "torch_version()\n--\n\nlibtorch's version, or None before the first load."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    "berth._core",
    "berth's C inference core.",
    -1,
    core_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static int add_exception(PyObject *m, PyObject **slot, const char *name, const char *doc,
                         PyObject *base)
{
    char qualified[64];
    snprintf(qualified, sizeof qualified, "berth.%s", name);
    *slot = PyErr_NewExceptionWithDoc(qualified, doc, base, NULL);
    if (!*slot)
        return -1;
    Py_INCREF(*slot);
    return PyModule_AddObject(m, name, *slot) == 0 ? 0 : (Py_DECREF(*slot), -1);
}

/* _core.DTYPES: ((name, datatype, itemsize), ...) from berth/dtypes.h, so that Python
 * keeps no table of its own. */
static int add_dtypes(PyObject *m)
{
    PyObject *rows = Py_BuildValue("("
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH) "(ssi)"
                                   BERTH_DTYPES(BT_ROW)
#undef BT_ROW
                                       ")"
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH) , NAME, DATATYPE, (BITS) / 8
                                   BERTH_DTYPES(BT_ROW)
#undef BT_ROW
    );
    if (!rows)
        return -1;
    return PyModule_AddObject(m, "DTYPES", rows) == 0 ? 0 : (Py_DECREF(rows), -1);
}

PyMODINIT_FUNC PyInit__core(void)
{
    bt_json_init();
    if (PyType_Ready(&bt_ModelType) != 0)
        return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (!m)
        return NULL;
    if (add_exception(m, &bt_BerthError, "BerthError", "Base class of berth's errors.", NULL) !=
            0 ||
        add_exception(m, &bt_ModelLoadError, "ModelLoadError",
                      "The model file is missing, not TorchScript, or corrupt.",
                      bt_BerthError) != 0 ||
        add_exception(m, &bt_InferenceError, "InferenceError", "The model's forward failed.",
                      bt_BerthError) != 0 ||
        add_exception(m, &bt_Overloaded, "Overloaded", "The batcher's queue is full: retry later.",
                      bt_BerthError) != 0)
        goto fail;
    Py_INCREF(&bt_ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&bt_ModelType) != 0) {
        Py_DECREF(&bt_ModelType);
        goto fail;
    }
    if (bt_serving_init(m) != 0 || add_dtypes(m) != 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
