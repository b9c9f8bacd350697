/* py_model.h - the berth._core.Model type (subclassed in Python as berth.Model). */
#ifndef BERTH_PY_MODEL_H
#define BERTH_PY_MODEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "runtime/model.h"

typedef struct {
    PyObject_HEAD bt_model *model; /* owned; NULL until __init__ succeeds */
    PyObject *weakrefs;
} bt_ModelObject;

extern PyTypeObject bt_ModelType;

#endif /* BERTH_PY_MODEL_H */
