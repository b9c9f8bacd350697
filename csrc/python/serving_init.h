/* serving_init.h - registers the serving parts (batcher, server, protocol) in berth._core. */
#ifndef BERTH_SERVING_INIT_H
#define BERTH_SERVING_INIT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Adds the serving types and functions to module; 0 on success, -1 with an exception. */
int bt_serving_init(PyObject *module);

#endif /* BERTH_SERVING_INIT_H */
