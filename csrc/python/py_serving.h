/* py_serving.h - the serving types of berth._core (Batcher, Service, Server). */
#ifndef BERTH_PY_SERVING_H
#define BERTH_PY_SERVING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Adds Batcher, Service and Server to module; 0 on success, -1 with an exception. */
int bt_py_serving_add_types(PyObject *module);

#endif /* BERTH_PY_SERVING_H */
