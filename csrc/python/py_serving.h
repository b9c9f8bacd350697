/* py_serving.h - the serving types of berth._core: Batcher and Service (py_serving.c),
 * Registry and Server (py_server.c). */
#ifndef BERTH_PY_SERVING_H
#define BERTH_PY_SERVING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "serving/registry.h"

/* _core.Service: one model version. Its own registry (`own`) holds it alone, for
 * handle() and metrics(); a Registry object may serve it beside others (`servers`). */
typedef struct {
    PyObject_HEAD PyObject *model_obj;
    bt_service *svc;  /* owned; NULL once closed */
    bt_registry *own; /* owned */
    int active;       /* handle()/warmup() calls in progress */
    int servers;      /* Registry objects serving it */
    int closing;
} ServiceObject;

extern PyTypeObject BtServiceType;

/* The service of a Service object, or NULL with ValueError once it is closed. */
bt_service *bt_py_service_get(ServiceObject *self);
/* A blocking call on the Service ended: release it if close() was called meanwhile. */
void bt_py_service_leave(ServiceObject *self);

/* handle(method, path, body, ...) on reg, with the GIL released: (status, headers, body). */
PyObject *bt_py_handle(bt_registry *reg, PyObject *args, PyObject *kw);

/* Adds Batcher and Service (py_serving.c), Registry and Server (py_server.c) to module;
 * 0 on success, -1 with an exception. */
int bt_py_serving_add_types(PyObject *module);
int bt_py_server_add_types(PyObject *module);

#endif /* BERTH_PY_SERVING_H */
