/* py_convert.c - buffer protocol -> DLPack in, DLPack -> ndarray out, errors. */
#include "python/py_convert.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define NPY_NO_DEPRECATED_API  NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL berth_ARRAY_API
#include <numpy/arrayobject.h>

#include "berth/dtypes.h"
#include "runtime/tensor.h"

PyObject *bt_BerthError, *bt_ModelLoadError, *bt_InferenceError, *bt_Overloaded;

/* NumPy's C API, loaded on first use rather than at import: `berth serve` and models fed
 * buffers never make an ndarray, and importing NumPy costs ~50 ms of a cold start.
 * Called with the GIL held, which guards the flag. 0 on success, else -1 with a Python
 * exception set. */
static int numpy_ready(void)
{
    static int ready;
    if (!ready) {
        import_array1(-1);
        ready = 1;
    }
    return 0;
}

PyObject *bt_py_raise(const bt_error *err)
{
    PyObject *type;
    switch (err->kind) {
    case BT_ERR_TYPE:
        type = PyExc_TypeError;
        break;
    case BT_ERR_VALUE:
    case BT_ERR_TOO_LARGE:
        type = PyExc_ValueError;
        break;
    case BT_ERR_LOAD:
        type = bt_ModelLoadError;
        break;
    case BT_ERR_INFERENCE:
    case BT_ERR_MODEL:
        type = bt_InferenceError;
        break;
    case BT_ERR_NO_MEMORY:
        type = PyExc_MemoryError;
        break;
    case BT_ERR_OVERLOADED:
        type = bt_Overloaded;
        break;
    case BT_ERR_TIMEOUT:
        type = PyExc_TimeoutError;
        break;
    default:
        type = PyExc_RuntimeError;
        break;
    }
    PyErr_SetString(type, err->message);
    return NULL;
}

/* --- inputs ------------------------------------------------------------------------- */

enum { VIEW_IN_CALL = 0, VIEW_DEAD_IN_CALL = 1, VIEW_DETACHED = 2 };

struct bt_py_view {
    DLManagedTensor managed;
    Py_buffer buffer;
    atomic_int state;
    int64_t dims[]; /* shape then strides, 2 * ndim */
};

static void view_release(bt_py_view *v)
{
    PyBuffer_Release(&v->buffer);
    free(v);
}

/* Called by libtorch when it no longer needs the memory, from any thread. */
static void view_deleter(DLManagedTensor *m)
{
    bt_py_view *v = m->manager_ctx;
    int expected = VIEW_IN_CALL;
    if (atomic_compare_exchange_strong(&v->state, &expected, VIEW_DEAD_IN_CALL))
        return; /* still inside the call: bt_py_view_done releases it under the GIL */
    if (!Py_IsInitialized()) { /* interpreter gone: the exporter is gone with it */
        free(v);
        return;
    }
    PyGILState_STATE g = PyGILState_Ensure();
    view_release(v);
    PyGILState_Release(g);
}

void bt_py_view_done(bt_py_view *v)
{
    if (!v)
        return;
    int expected = VIEW_IN_CALL;
    if (atomic_compare_exchange_strong(&v->state, &expected, VIEW_DETACHED))
        return; /* an output still uses the memory: the deleter releases it later */
    view_release(v);
}

/* dtype of a buffer's struct-module format, or -1 with err set. */
static int format_dtype(const char *fmt, Py_ssize_t itemsize, const char *name, DLDataType *out,
                        bt_error *err)
{
    const char *f = fmt ? fmt : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        ++f;
    else if (*f == '>' || *f == '!')
        return bt_error_set(err, BT_ERR_TYPE,
                            "input '%s' is big-endian (format '%s'); convert it with "
                            "x.astype(x.dtype.newbyteorder('<'))",
                            name, fmt);
    out->lanes = 1;
    if (f[0] && !f[1]) {
        switch (f[0]) {
        case 'e':
            out->code = kDLFloat;
            out->bits = 16;
            break;
        case 'f':
            out->code = kDLFloat;
            out->bits = 32;
            break;
        case 'd':
            out->code = kDLFloat;
            out->bits = 64;
            break;
        case 'b':
        case 'h':
        case 'i':
        case 'l':
        case 'q':
        case 'n':
            out->code = kDLInt;
            out->bits = (uint8_t)(itemsize * 8);
            break;
        case 'B':
            out->code = kDLUInt;
            out->bits = 8;
            break;
        case '?':
            out->code = BERTH_DL_BOOL;
            out->bits = 8;
            break;
        case 'H':
        case 'I':
        case 'L':
        case 'Q':
        case 'N':
            return bt_error_set(err, BT_ERR_TYPE,
                                "input '%s' is uint%d, which libtorch cannot take; convert it "
                                "to a signed type, e.g. x.astype('int64')",
                                name, (int)itemsize * 8);
        default:
            goto bad;
        }
        if (bt_dtype_size(*out) == (size_t)itemsize)
            return 0;
    }
bad:
    return bt_error_set(err, BT_ERR_TYPE,
                        "input '%s' must hold numbers (float16/32/64, int8/16/32/64, uint8 "
                        "or bool); got elements of format '%s'",
                        name, fmt);
}

int bt_py_buffer_dtype(const Py_buffer *b, DLDataType *out)
{
    return format_dtype(b->format, b->itemsize, "", out, NULL);
}

static const char *input_name(const bt_model *m, size_t index, char *buf, size_t size)
{
    if (m && index < m->n_inputs)
        return m->inputs[index].name;
    snprintf(buf, size, "#%zu", index);
    return buf;
}

/* Copies a buffer with arbitrary byte strides into a new contiguous tensor. */
static DLManagedTensor *copy_buffer(Py_buffer *b, DLDataType dtype, const int64_t *shape,
                                    bt_error *err)
{
    DLManagedTensor *t = bt_tensor_new(dtype, b->ndim, shape, err);
    if (!t)
        return NULL;
    if (PyBuffer_ToContiguous(t->dl_tensor.data, b, b->len, 'C') != 0) {
        PyErr_Clear();
        t->deleter(t);
        bt_error_set(err, BT_ERR_VALUE, "cannot read the input buffer");
        return NULL;
    }
    return t;
}

int bt_py_to_tensor(PyObject *obj, const bt_model *m, size_t index, DLManagedTensor **out,
                    bt_py_view **view_out, bt_error *err)
{
    char namebuf[32];
    const char *name = input_name(m, index, namebuf, sizeof namebuf);
    *out = NULL;
    *view_out = NULL;
    PyObject *holder = NULL; /* an array made from a list, kept alive by the buffer */
    if (!PyObject_CheckBuffer(obj)) {
        if (PyUnicode_Check(obj) || PyDict_Check(obj) || obj == Py_None ||
            !(PySequence_Check(obj) || PyNumber_Check(obj)))
            return bt_error_set(err, BT_ERR_TYPE,
                                "input '%s' must be a NumPy array, a buffer or a list of "
                                "numbers; got %s",
                                name, Py_TYPE(obj)->tp_name);
        if (numpy_ready() != 0) {
            PyErr_Clear();
            return bt_error_set(err, BT_ERR_TYPE,
                                "input '%s': reading a %s needs NumPy, which did not import", name,
                                Py_TYPE(obj)->tp_name);
        }
        holder = PyArray_FromAny(obj, NULL, 0, 0, NPY_ARRAY_DEFAULT, NULL);
        if (!holder) {
            PyErr_Clear();
            return bt_error_set(err, BT_ERR_TYPE,
                                "input '%s' cannot be read as an array of numbers (%s given)", name,
                                Py_TYPE(obj)->tp_name);
        }
        obj = holder;
    }
    size_t extra = 0;
    bt_py_view *v = NULL;
    Py_buffer probe;
    if (PyObject_GetBuffer(obj, &probe, PyBUF_RECORDS_RO) != 0) {
        PyErr_Clear();
        Py_XDECREF(holder);
        return bt_error_set(err, BT_ERR_TYPE, "input '%s' (%s) does not export a readable buffer",
                            name, Py_TYPE(obj)->tp_name);
    }
    Py_XDECREF(holder); /* the buffer holds its own reference */
    if (probe.ndim > BT_MAX_NDIM) {
        PyBuffer_Release(&probe);
        return bt_error_set(err, BT_ERR_VALUE,
                            "input '%s' has %d dimensions; berth takes at most %d", name,
                            probe.ndim, BT_MAX_NDIM);
    }
    extra = sizeof(int64_t) * 2u * (size_t)probe.ndim;
    v = malloc(sizeof *v + extra);
    if (!v) {
        PyBuffer_Release(&probe);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    memset(v, 0, sizeof *v);
    v->buffer = probe;
    atomic_init(&v->state, VIEW_IN_CALL);
    Py_buffer *b = &v->buffer;
    DLDataType dtype;
    if (format_dtype(b->format, b->itemsize, name, &dtype, err) != 0)
        goto fail;
    int64_t *shape = v->dims, *strides = v->dims + b->ndim;
    int elementwise = 1;       /* every stride a whole number of elements */
    int usable = !b->readonly; /* read-only memory is copied: a model may write its input */
    for (int d = 0; d < b->ndim; ++d) {
        shape[d] = b->shape[d];
        Py_ssize_t s = b->strides ? b->strides[d] : 0;
        if (s % b->itemsize)
            elementwise = 0;
        if (s < 0)
            usable = 0; /* libtorch has no negative strides */
        strides[d] = s / b->itemsize;
    }
    usable &= elementwise;
    DLTensor *t = &v->managed.dl_tensor;
    t->data = b->buf;
    t->device.device_type = kDLCPU;
    t->device.device_id = 0;
    t->ndim = b->ndim;
    t->dtype = dtype;
    t->shape = shape;
    t->strides = b->strides ? strides : NULL; /* NULL: C-contiguous */
    t->byte_offset = 0;
    v->managed.manager_ctx = v;
    v->managed.deleter = view_deleter;
    DLDataType cast_to = dtype;
    int check = m ? bt_model_check_input(m, index, t, &cast_to, err) : 0;
    if (check < 0)
        goto fail;
    if (check == 1 || !usable) {
        DLManagedTensor *copy;
        if (elementwise) {
            copy = bt_tensor_cast(t, cast_to, err);
        } else {
            copy = copy_buffer(b, dtype, shape, err);
            if (copy && check == 1) {
                DLManagedTensor *flat = copy;
                copy = bt_tensor_cast(&flat->dl_tensor, cast_to, err);
                flat->deleter(flat);
            }
        }
        if (!copy)
            goto fail;
        view_release(v);
        *out = copy;
        return 0;
    }
    *out = &v->managed;
    *view_out = v;
    return 0;
fail:
    view_release(v);
    return -1;
}

/* --- outputs ------------------------------------------------------------------------ */

static const char kCapsuleName[] = "berth.dltensor";

static void capsule_free(PyObject *capsule)
{
    DLManagedTensor *t = PyCapsule_GetPointer(capsule, kCapsuleName);
    if (t && t->deleter)
        t->deleter(t);
}

static int typenum_of(DLDataType t)
{
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH)                                             \
    if ((unsigned)t.code == (unsigned)(CODE) && t.bits == (BITS) && t.lanes == 1)                  \
        return NPY_##NPY;
    BERTH_DTYPES(BT_ROW)
#undef BT_ROW
    return -1;
}

PyObject *bt_py_from_tensor(DLManagedTensor *m)
{
    DLTensor *t = &m->dl_tensor;
    if (numpy_ready() != 0) {
        if (m->deleter)
            m->deleter(m);
        return NULL;
    }
    int typenum = typenum_of(t->dtype);
    if (typenum < 0 || t->ndim > NPY_MAXDIMS) {
        if (m->deleter)
            m->deleter(m);
        PyErr_Format(bt_InferenceError,
                     "the model returned a tensor of dtype %s with %d dimensions, which "
                     "NumPy cannot hold",
                     bt_dtype_str(t->dtype), (int)t->ndim);
        return NULL;
    }
    npy_intp dims[NPY_MAXDIMS], strides[NPY_MAXDIMS];
    size_t item = bt_dtype_size(t->dtype);
    for (int d = 0; d < t->ndim; ++d) {
        dims[d] = (npy_intp)t->shape[d];
        strides[d] = (npy_intp)(t->strides ? t->strides[d] * (int64_t)item : 0);
    }
    if (!t->strides) { /* contiguous: let NumPy compute the strides */
        npy_intp s = (npy_intp)item;
        for (int d = t->ndim - 1; d >= 0; --d) {
            strides[d] = s;
            s *= dims[d] ? dims[d] : 1;
        }
    }
    PyArray_Descr *descr = PyArray_DescrFromType(typenum);
    void *data = (char *)t->data + t->byte_offset;
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, descr, t->ndim, dims, strides, data,
                                         NPY_ARRAY_WRITEABLE, NULL);
    if (!arr) {
        if (m->deleter)
            m->deleter(m);
        return NULL;
    }
    PyArray_UpdateFlags((PyArrayObject *)arr, NPY_ARRAY_UPDATE_ALL);
    PyObject *capsule = PyCapsule_New(m, kCapsuleName, capsule_free);
    if (!capsule) {
        Py_DECREF(arr);
        if (m->deleter)
            m->deleter(m);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, capsule) != 0) { /* steals capsule */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

int bt_py_to_tensors(PyObject *const *args, size_t n, const bt_model *m, DLManagedTensor **in,
                     bt_py_view **views, bt_error *err)
{
    for (size_t i = 0; i < n; ++i) {
        if (bt_py_to_tensor(args[i], m, i, &in[i], &views[i], err) != 0) {
            for (size_t j = 0; j < i; ++j) {
                if (in[j]->deleter)
                    in[j]->deleter(in[j]);
                bt_py_view_done(views[j]);
            }
            return -1;
        }
    }
    return 0;
}

PyObject *bt_py_outputs(const bt_model *m, DLManagedTensor **out, size_t n_out, int is_tuple)
{
    if (!is_tuple && n_out == 1)
        return bt_py_from_tensor(out[0]);
    PyObject *result = PyTuple_New((Py_ssize_t)n_out);
    for (size_t i = 0; i < n_out; ++i) {
        PyObject *a = result ? bt_py_from_tensor(out[i]) : NULL;
        if (!a) { /* release the rest, then fail */
            if (!result)
                out[i]->deleter(out[i]);
            for (size_t k = i + 1; k < n_out; ++k)
                out[k]->deleter(out[k]);
            Py_CLEAR(result);
            break;
        }
        PyTuple_SET_ITEM(result, (Py_ssize_t)i, a);
    }
    return is_tuple == 2 ? bt_py_named_outputs(m, result) : result;
}

PyObject *bt_py_named_outputs(const bt_model *m, PyObject *tuple)
{
    if (!tuple)
        return NULL;
    PyObject *dict = PyDict_New();
    for (Py_ssize_t i = 0; dict && i < PyTuple_GET_SIZE(tuple); ++i) {
        char fallback[32];
        const char *name = bt_model_output_name(m, (size_t)i);
        if (!name) {
            snprintf(fallback, sizeof fallback, "output_%zd", i);
            name = fallback;
        }
        if (PyDict_SetItemString(dict, name, PyTuple_GET_ITEM(tuple, i)) != 0)
            Py_CLEAR(dict);
    }
    Py_DECREF(tuple);
    return dict;
}
