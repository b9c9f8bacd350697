/* py_model.c - berth._core.Model: load a TorchScript file, predict on NumPy arrays. */
#include "python/py_model.h"

#include <string.h>

#include "python/py_convert.h"
#include "runtime/tensor.h"

#define INLINE_INPUTS 16

bt_model *bt_py_model_get(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &bt_ModelType)) {
        PyErr_Format(PyExc_TypeError, "expected a berth.Model, got %.200s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    bt_model *m = ((bt_ModelObject *)obj)->model;
    if (!m)
        PyErr_SetString(PyExc_RuntimeError,
                        "this berth.Model was not loaded (its __init__ failed)");
    return m;
}

static int Model_init(bt_ModelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", "optimize", "device", "signature", NULL};
    PyObject *path_bytes = NULL;
    int optimize = 0;
    const char *device = NULL, *signature = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$pzz:Model", kwlist, PyUnicode_FSConverter,
                                     &path_bytes, &optimize, &device, &signature))
        return -1;
    if (self->model) {
        Py_DECREF(path_bytes);
        PyErr_SetString(PyExc_RuntimeError,
                        "a berth.Model is loaded once; call berth.load() for another");
        return -1;
    }
    bt_error err = {0};
    bt_model *m = NULL;
    int rc;
    const char *path = PyBytes_AS_STRING(path_bytes);
    Py_BEGIN_ALLOW_THREADS
        bt_load_options options = {device, 0, signature};
        rc = bt_model_load(path, &options, &m, &err);
        if (rc == 0 && optimize && bt_model_optimize(m, &err) != 0) {
            bt_model_free(m);
            m = NULL;
            rc = -1;
        }
    Py_END_ALLOW_THREADS
    Py_DECREF(path_bytes);
    if (rc != 0) {
        bt_py_raise(&err);
        return -1;
    }
    self->model = m;
    return 0;
}

static void Model_dealloc(bt_ModelObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    bt_model_free(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Model holds no Python references. Its type is static, so instances do not visit it: a
 * Python subclass (berth.Model) is a heap type whose subtype_traverse visits the type
 * itself before calling this (visiting it here too counted it twice). */
static int Model_traverse(PyObject *self, visitproc visit, void *arg)
{
    (void)self;
    (void)visit;
    (void)arg;
    return 0;
}

/* "'a', 'b'" for the error messages. */
static PyObject *input_names(const bt_model *m)
{
    PyObject *parts = PyList_New(0);
    if (!parts)
        return NULL;
    for (size_t i = 0; i < m->n_inputs; ++i) {
        PyObject *s = PyUnicode_FromFormat("'%s'", m->inputs[i].name);
        if (!s || PyList_Append(parts, s) != 0) {
            Py_XDECREF(s);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(s);
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *joined = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    return joined;
}

/* Raises InferenceError naming the inputs given, for a forward that failed without a
 * signature check (models saved without berth.json). */
static PyObject *raise_forward_error(const bt_model *m, PyObject *const *args, Py_ssize_t nargs,
                                     const bt_error *err)
{
    if (err->kind != BT_ERR_INFERENCE && err->kind != BT_ERR_MODEL)
        return bt_py_raise(err);
    char given[768] = "";
    size_t used = 0;
    for (Py_ssize_t i = 0; i < nargs && used < sizeof given; ++i) {
        Py_buffer b;
        char shape[256] = "?";
        const char *dtype = "?";
        if (PyObject_GetBuffer(args[i], &b, PyBUF_RECORDS_RO) == 0) {
            int64_t dims[BT_MAX_NDIM];
            for (int d = 0; d < b.ndim && d < 64; ++d)
                dims[d] = b.shape[d];
            bt_shape_str(shape, sizeof shape, dims, b.ndim < BT_MAX_NDIM ? b.ndim : BT_MAX_NDIM);
            DLDataType dt;
            dtype =
                bt_py_buffer_dtype(&b, &dt) == 0 ? bt_dtype_str(dt) : (b.format ? b.format : "B");
            used += (size_t)snprintf(given + used, sizeof given - used, "%s'%s' %s %s",
                                     i ? ", " : "", m->inputs[i].name, dtype, shape);
            PyBuffer_Release(&b);
        } else {
            PyErr_Clear();
        }
    }
    PyErr_Format(bt_InferenceError, "forward failed on input %s: %s", given, err->message);
    return NULL;
}

static PyObject *Model_predict(bt_ModelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    bt_model *m = bt_py_model_get((PyObject *)self);
    if (!m)
        return NULL;
    if ((size_t)nargs < m->n_required || (size_t)nargs > m->n_inputs) {
        PyObject *names = input_names(m);
        if (!names)
            return NULL;
        if (m->n_required == m->n_inputs)
            PyErr_Format(PyExc_TypeError, "predict() expects %zu input%s (%U), got %zd",
                         m->n_inputs, m->n_inputs == 1 ? "" : "s", names, nargs);
        else
            PyErr_Format(PyExc_TypeError, "predict() expects %zu to %zu inputs (%U), got %zd",
                         m->n_required, m->n_inputs, names, nargs);
        Py_DECREF(names);
        return NULL;
    }
    DLManagedTensor *inline_in[INLINE_INPUTS];
    bt_py_view *inline_views[INLINE_INPUTS];
    DLManagedTensor **in = inline_in;
    bt_py_view **views = inline_views;
    if (nargs > INLINE_INPUTS) {
        in = PyMem_Calloc((size_t)nargs, sizeof *in);
        views = PyMem_Calloc((size_t)nargs, sizeof *views);
        if (!in || !views) {
            PyMem_Free(in);
            PyMem_Free(views);
            return PyErr_NoMemory();
        }
    }
    bt_error err = {0};
    PyObject *result = NULL;
    if (bt_py_to_tensors(args, (size_t)nargs, m, in, views, &err) != 0) {
        bt_py_raise(&err);
        goto done;
    }
    DLManagedTensor *out[BT_MAX_OUTPUTS];
    size_t n_out = 0;
    int is_tuple = 0, rc;
    Py_BEGIN_ALLOW_THREADS
        rc = bt_model_forward(m, in, (size_t)nargs, out, BT_MAX_OUTPUTS, &n_out, &is_tuple, &err);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < nargs; ++j)
        bt_py_view_done(views[j]);
    if (rc != 0) {
        raise_forward_error(m, args, nargs, &err);
        goto done;
    }
    result = bt_py_outputs(m, out, n_out, is_tuple);
done:
    if (in != inline_in) {
        PyMem_Free(in);
        PyMem_Free(views);
    }
    return result;
}

static PyObject *spec_tuple(const bt_spec *specs, size_t n)
{
    PyObject *tuple = PyTuple_New((Py_ssize_t)n);
    for (size_t i = 0; tuple && i < n; ++i) {
        const bt_spec *s = &specs[i];
        PyObject *shape = Py_None;
        Py_INCREF(Py_None);
        if (s->ndim >= 0) {
            Py_DECREF(Py_None);
            shape = PyTuple_New(s->ndim);
            for (int d = 0; shape && d < s->ndim; ++d) {
                PyObject *v = PyLong_FromLongLong(s->shape[d]);
                if (!v) {
                    Py_CLEAR(shape);
                    break;
                }
                PyTuple_SET_ITEM(shape, d, v);
            }
        }
        PyObject *item =
            shape ? Py_BuildValue("(sNN)", s->name,
                                  s->has_dtype ? PyUnicode_FromString(bt_dtype_str(s->dtype))
                                               : Py_NewRef(Py_None),
                                  shape)
                  : NULL;
        if (!item) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, (Py_ssize_t)i, item);
    }
    return tuple;
}

static PyObject *Model_get_signature(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    if (!m)
        return NULL;
    return Py_BuildValue("(NN)", spec_tuple(m->inputs, m->n_inputs),
                         spec_tuple(m->outputs, m->n_outputs));
}

/* The outputs' names as the protocol uses them: the signature's, else those the shim
 * learnt from the first forward (dict keys, flattening paths); empty before it. */
static PyObject *Model_get_output_names(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    if (!m)
        return NULL;
    PyObject *names = PyList_New(0);
    for (size_t k = 0; names && k < BT_MAX_OUTPUTS; ++k) {
        const char *name = bt_model_output_name(m, k);
        if (!name)
            break;
        PyObject *item = PyUnicode_FromString(name);
        if (!item || PyList_Append(names, item) != 0)
            Py_CLEAR(names);
        Py_XDECREF(item);
    }
    if (!names)
        return NULL;
    PyObject *tuple = PyList_AsTuple(names);
    Py_DECREF(names);
    return tuple;
}

static PyObject *Model_get_metadata_json(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    if (!m)
        return NULL;
    if (!m->metadata)
        Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(m->metadata, (Py_ssize_t)m->metadata_len, "replace");
}

static PyObject *Model_get_path(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    return m ? PyUnicode_DecodeFSDefault(m->path) : NULL;
}

static PyObject *Model_get_batchable(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    return m ? PyBool_FromLong(m->batchable) : NULL;
}

static PyObject *Model_get_required(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    return m ? PyLong_FromSize_t(m->n_required) : NULL;
}

static PyObject *Model_get_optimized(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    return m ? PyBool_FromLong(m->optimized) : NULL;
}

static PyObject *Model_get_format(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    return m ? PyUnicode_FromString(m->format) : NULL;
}

static PyObject *Model_get_max_batch(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    if (!m)
        return NULL;
    if (m->max_batch == INT64_MAX)
        Py_RETURN_NONE;
    return PyLong_FromLongLong((long long)m->max_batch);
}

static PyObject *Model_get_load_seconds(bt_ModelObject *self, void *closure)
{
    (void)closure;
    bt_model *m = bt_py_model_get((PyObject *)self);
    return m ? PyFloat_FromDouble(m->load_seconds) : NULL;
}

PyDoc_STRVAR(Model_predict_doc,
             "predict($self, /, *inputs)\n--\n\n"
             "Run forward on NumPy arrays (or any buffers) without copying them.\n\n"
             "Returns an ndarray, or a tuple of ndarrays when the model returns a tuple.\n"
             "The outputs own libtorch's memory: nothing is copied back. float64 input to a\n"
             "float32 model is cast; other lossy conversions are refused with TypeError.");

static PyMethodDef Model_methods[] = {
    {"predict", (PyCFunction)(void (*)(void))Model_predict, METH_FASTCALL, Model_predict_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"_signature", (getter)Model_get_signature, NULL,
     "((name, dtype, shape), ...) for inputs and outputs", NULL},
    {"_metadata_json", (getter)Model_get_metadata_json, NULL,
     "the embedded berth.json text, or None", NULL},
    {"_output_names", (getter)Model_get_output_names, NULL,
     "the outputs' protocol names (learnt at the first forward without a signature)", NULL},
    {"path", (getter)Model_get_path, NULL, "the file the model was loaded from", NULL},
    {"batchable", (getter)Model_get_batchable, NULL,
     "whether every input and output has a free batch dim", NULL},
    {"num_required_inputs", (getter)Model_get_required, NULL, "inputs without a default in forward",
     NULL},
    {"load_seconds", (getter)Model_get_load_seconds, NULL,
     "seconds spent loading (and optimizing) the model", NULL},
    {"optimized", (getter)Model_get_optimized, NULL,
     "whether the model was frozen and optimized for inference", NULL},
    {"format", (getter)Model_get_format, NULL,
     "'torchscript' or 'pt2' (told from the file's contents)", NULL},
    {"max_batch", (getter)Model_get_max_batch, NULL,
     "the largest batch the exported ranges admit, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(
    Model_doc,
    "Model(path, *, optimize=False, device=None, signature=None)\n--\n\nA TorchScript or .pt2 model run by berth's C core. Use berth.load(path).\n"
    "signature: berth.json text for a plain TorchScript file, used instead of an embedded one.");

PyTypeObject bt_ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "berth._core.Model",
    .tp_basicsize = sizeof(bt_ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Model_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_traverse = Model_traverse,
    .tp_weaklistoffset = offsetof(bt_ModelObject, weakrefs),
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
};
