/*
 * py_convert.h - the Python side of the C core: exceptions, Python objects <-> DLPack.
 *
 * Inputs are borrowed through the buffer protocol without a copy. The Py_buffer lives
 * until libtorch lets go of the memory, which is after forward returns when an output
 * aliases an input (an identity model): the output ndarray then keeps the input's buffer
 * alive. Inputs that must be cast or are read-only are copied first.
 */
#ifndef BERTH_PY_CONVERT_H
#define BERTH_PY_CONVERT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "berth/dlpack.h"
#include "runtime/error.h"
#include "runtime/model.h"

/* Exception classes, created by the module init. */
extern PyObject *bt_BerthError, *bt_ModelLoadError, *bt_InferenceError, *bt_Overloaded;

/* Raises the Python exception matching err->kind; returns NULL. */
PyObject *bt_py_raise(const bt_error *err);

/* The bt_model inside a berth.Model (borrowed; lives as long as obj). NULL with
 * TypeError set when obj is not a berth.Model. */
bt_model *bt_py_model_get(PyObject *obj);

/* A Python-buffer-backed input's bookkeeping; NULL for inputs that were copied. */
typedef struct bt_py_view bt_py_view;

/* Converts obj (any buffer, or a list of numbers) for input `index` of model m (m may be
 * NULL: no signature checks). On success *out is a tensor to hand to forward (ownership
 * goes with it) and *view is set or NULL. Once *out has been given up (passed to forward
 * or its deleter called), call bt_py_view_done(*view) with the GIL held. Returns -1 with
 * err set on bad input; then nothing needs releasing. GIL held. */
int bt_py_to_tensor(PyObject *obj, const bt_model *m, size_t index, DLManagedTensor **out,
                    bt_py_view **view, bt_error *err);

/* Ends the call's claim on a buffer-backed input. NULL-tolerant. GIL held. */
void bt_py_view_done(bt_py_view *view);

/* The dtype of a buffer's elements (its struct-module format); 0, or -1 when berth cannot
 * take them. */
int bt_py_buffer_dtype(const Py_buffer *b, DLDataType *out);

/* Wraps t as an ndarray that owns it (no copy): the array's base is a capsule calling the
 * DLPack deleter. Steals t on every path. NULL with an exception set on failure. */
PyObject *bt_py_from_tensor(DLManagedTensor *t);

/* For a forward that returned a dict (is_tuple == 2): the outputs tuple as a dict keyed
 * by the model's output names. Steals tuple (NULL passes through). */
PyObject *bt_py_named_outputs(const struct bt_model *m, PyObject *tuple);

/* Converts every argument of a predict call (bt_py_to_tensor for each); on failure
 * releases what was converted and returns -1 with err set. GIL held. */
int bt_py_to_tensors(PyObject *const *args, size_t n, const bt_model *m, DLManagedTensor **in,
                     bt_py_view **views, bt_error *err);

/* A forward's outputs as predict returns them: one ndarray, a tuple (is_tuple 1) or a dict
 * (is_tuple 2). Steals every output on every path; NULL with an exception on failure. */
PyObject *bt_py_outputs(const bt_model *m, DLManagedTensor **out, size_t n_out, int is_tuple);

#endif /* BERTH_PY_CONVERT_H */
