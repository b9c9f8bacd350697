/*
 * py_server.c - _core.Registry (the models a server serves, and the repository
 * extension's requests handed to Python) and _core.Server (libmicrohttpd around a
 * Registry). Every blocking call releases the GIL.
 */
#include "python/py_serving.h"

#include <stdlib.h>
#include <string.h>

#include "python/py_convert.h"
#include "serving/server.h"

/* ------------------------------------------------------------------ handle */

PyObject *bt_py_handle(bt_registry *reg, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"method",
                             "path",
                             "body",
                             "content_type",
                             "authorization",
                             "header_length",
                             "content_encoding",
                             "accept_encoding",
                             "max_body_bytes",
                             NULL};
    const char *method, *path, *ct = NULL, *auth = NULL, *hlen = NULL, *ce = NULL, *ae = NULL;
    unsigned long long max_body = BT_DEFAULT_MAX_BODY;
    Py_buffer body = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ssy*|zzzzzK:handle", kwlist, &method, &path, &body,
                                     &ct, &auth, &hlen, &ce, &ae, &max_body))
        return NULL;
    bt_http_request req = {.method = method,
                           .path = path,
                           .content_type = ct,
                           .authorization = auth,
                           .header_length = hlen,
                           .content_encoding = ce,
                           .body = body.buf,
                           .body_len = (size_t)body.len,
                           .max_body = (size_t)max_body};
    bt_http_response resp;
    Py_BEGIN_ALLOW_THREADS
        bt_registry_handle_sync(reg, &req, &resp);
        bt_http_response_compress(&resp, ae);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&body);
    PyObject *headers = Py_BuildValue("[(ss)]", "Content-Type", resp.content_type);
    PyObject *out_body =
        PyBytes_FromStringAndSize(resp.body.data ? resp.body.data : "", (Py_ssize_t)resp.body.len);
    bt_buf_free(&resp.body);
    PyObject *result = NULL;
    if (!headers || !out_body)
        goto done;
    char v[32];
    if (resp.header_length >= 0) {
        snprintf(v, sizeof v, "%lld", resp.header_length);
        PyObject *h = Py_BuildValue("(ss)", "Inference-Header-Content-Length", v);
        if (!h || PyList_Append(headers, h) != 0) {
            Py_XDECREF(h);
            goto done;
        }
        Py_DECREF(h);
    }
    if (resp.retry_after > 0) {
        snprintf(v, sizeof v, "%d", resp.retry_after);
        PyObject *h = Py_BuildValue("(ss)", "Retry-After", v);
        if (!h || PyList_Append(headers, h) != 0) {
            Py_XDECREF(h);
            goto done;
        }
        Py_DECREF(h);
    }
    if (resp.content_encoding) {
        PyObject *h = Py_BuildValue("(ss)", "Content-Encoding", resp.content_encoding);
        if (!h || PyList_Append(headers, h) != 0) {
            Py_XDECREF(h);
            goto done;
        }
        Py_DECREF(h);
    }
    if (resp.www_authenticate || resp.allow) {
        PyObject *h = resp.allow ? Py_BuildValue("(ss)", "Allow", resp.allow)
                                 : Py_BuildValue("(ss)", "WWW-Authenticate", "Bearer");
        if (!h || PyList_Append(headers, h) != 0) {
            Py_XDECREF(h);
            goto done;
        }
        Py_DECREF(h);
    }
    result = Py_BuildValue("(iOO)", resp.status, headers, out_body);
done:
    Py_XDECREF(headers);
    Py_XDECREF(out_body);
    return result;
}

/* ------------------------------------------------------------------ Registry */

typedef struct {
    PyObject_HEAD bt_registry *reg; /* owned; NULL once closed */
    PyObject *services;             /* {(name, version): Service} served */
    int active;                     /* blocking calls in progress */
    int servers;                    /* Server objects using it */
} RegistryObject;

static bt_registry *registry_get(RegistryObject *self)
{
    if (!self->reg) {
        PyErr_SetString(PyExc_ValueError, "the registry is closed");
        return NULL;
    }
    return self->reg;
}

static int Registry_init(RegistryObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"auth_token", "log_requests", "strict_readiness", "control", NULL};
    bt_registry_params p = {.strict_readiness = 1};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$zppp:Registry", kwlist, &p.auth_token,
                                     &p.log_requests, &p.strict_readiness, &p.control))
        return -1;
    if (self->reg) {
        PyErr_SetString(PyExc_RuntimeError, "Registry.__init__ called twice");
        return -1;
    }
    self->services = PyDict_New();
    if (!self->services)
        return -1;
    bt_error err = {BT_OK, ""};
    if (bt_registry_create(&p, &self->reg, &err) != 0) {
        bt_py_raise(&err);
        return -1;
    }
    return 0;
}

static void registry_release(RegistryObject *self)
{
    bt_registry *reg = self->reg;
    self->reg = NULL;
    if (!reg)
        return;
    /* Every service still served is taken off first (it stays usable alone). */
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (self->services && PyDict_Next(self->services, &pos, &key, &value)) {
        ServiceObject *so = (ServiceObject *)value;
        if (so->svc) {
            bt_service *svc = so->svc;
            Py_BEGIN_ALLOW_THREADS
                bt_registry_remove(reg, bt_service_name(svc),
                                   strtoll(bt_service_version(svc), NULL, 10), 0);
            Py_END_ALLOW_THREADS
        }
        so->servers--;
    }
    if (self->services)
        PyDict_Clear(self->services);
    Py_BEGIN_ALLOW_THREADS
        bt_registry_free(reg);
    Py_END_ALLOW_THREADS
}

static void Registry_dealloc(RegistryObject *self)
{
    registry_release(self);
    Py_XDECREF(self->services);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Registry_add(RegistryObject *self, PyObject *arg)
{
    bt_registry *reg = registry_get(self);
    if (!reg)
        return NULL;
    if (!PyObject_TypeCheck(arg, &BtServiceType)) {
        PyErr_Format(PyExc_TypeError, "add: expected a berth._core.Service, got %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    ServiceObject *so = (ServiceObject *)arg;
    bt_service *svc = bt_py_service_get(so);
    if (!svc)
        return NULL;
    PyObject *key =
        Py_BuildValue("(sL)", bt_service_name(svc), strtoll(bt_service_version(svc), NULL, 10));
    if (!key)
        return NULL;
    bt_error err = {BT_OK, ""};
    if (bt_registry_add(reg, svc, &err) != 0) {
        Py_DECREF(key);
        return bt_py_raise(&err);
    }
    int rc = PyDict_SetItem(self->services, key, arg);
    Py_DECREF(key);
    if (rc != 0)
        return NULL;
    so->servers++;
    Py_RETURN_NONE;
}

static PyObject *Registry_remove(RegistryObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "version", "grace_s", NULL};
    const char *name;
    long long version;
    double grace = 30.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sL|d:remove", kwlist, &name, &version, &grace))
        return NULL;
    bt_registry *reg = registry_get(self);
    if (!reg)
        return NULL;
    PyObject *key = Py_BuildValue("(sL)", name, version);
    if (!key)
        return NULL;
    PyObject *so = PyDict_GetItemWithError(self->services, key);
    if (!so) {
        Py_DECREF(key);
        if (PyErr_Occurred())
            return NULL;
        PyErr_Format(PyExc_KeyError, "model '%s' version %lld is not served", name, version);
        return NULL;
    }
    Py_INCREF(so);
    self->active++;
    bt_service *removed;
    Py_BEGIN_ALLOW_THREADS
        removed = bt_registry_remove(reg, name, version, grace);
    Py_END_ALLOW_THREADS
    self->active--;
    int rc = PyDict_DelItem(self->services, key);
    Py_DECREF(key);
    ((ServiceObject *)so)->servers--;
    if (rc != 0 || !removed) {
        Py_DECREF(so);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_KeyError, "model '%s' version %lld is not served", name, version);
        return NULL;
    }
    return so;
}

static PyObject *Registry_replace(RegistryObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"service", "grace_s", NULL};
    PyObject *arg;
    double grace = 30.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|d:replace", kwlist, &BtServiceType, &arg,
                                     &grace))
        return NULL;
    bt_registry *reg = registry_get(self);
    ServiceObject *so = (ServiceObject *)arg;
    bt_service *svc = reg ? bt_py_service_get(so) : NULL;
    if (!svc)
        return NULL;
    PyObject *key =
        Py_BuildValue("(sL)", bt_service_name(svc), strtoll(bt_service_version(svc), NULL, 10));
    if (!key)
        return NULL;
    PyObject *old = PyDict_GetItemWithError(self->services, key);
    if (!old) {
        Py_DECREF(key);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_KeyError, "model '%s' version %s is not served",
                         bt_service_name(svc), bt_service_version(svc));
        return NULL;
    }
    Py_INCREF(old);
    bt_error err = {BT_OK, ""};
    bt_service *replaced;
    so->servers++; /* from here: close() waits for the registry to let go */
    self->active++;
    Py_BEGIN_ALLOW_THREADS
        replaced = bt_registry_replace(reg, svc, grace, &err);
    Py_END_ALLOW_THREADS
    self->active--;
    if (!replaced) {
        so->servers--;
        Py_DECREF(key);
        Py_DECREF(old);
        return bt_py_raise(&err);
    }
    /* The registry serves the new one now: the dict says so too. */
    ((ServiceObject *)old)->servers--;
    int rc = PyDict_SetItem(self->services, key, arg);
    Py_DECREF(key);
    if (rc != 0) {
        Py_DECREF(old);
        return NULL;
    }
    return old;
}

static PyObject *Registry_set_loaded(RegistryObject *self, PyObject *args)
{
    int loaded;
    const char *reason = "";
    if (!PyArg_ParseTuple(args, "p|s:set_loaded", &loaded, &reason))
        return NULL;
    bt_registry *reg = registry_get(self);
    if (!reg)
        return NULL;
    bt_registry_set_loaded(reg, loaded, reason);
    Py_RETURN_NONE;
}

static PyObject *Registry_handle(RegistryObject *self, PyObject *args, PyObject *kw)
{
    bt_registry *reg = registry_get(self);
    if (!reg)
        return NULL;
    self->active++;
    PyObject *result = bt_py_handle(reg, args, kw);
    self->active--;
    return result;
}

static PyObject *Registry_metrics(RegistryObject *self, PyObject *unused)
{
    (void)unused;
    bt_registry *reg = registry_get(self);
    if (!reg)
        return NULL;
    bt_buf b = {0};
    bt_registry_metrics(reg, &b);
    if (b.oom) {
        bt_buf_free(&b);
        return PyErr_NoMemory();
    }
    PyObject *s = PyUnicode_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
    bt_buf_free(&b);
    return s;
}

static PyObject *Registry_next_control(RegistryObject *self, PyObject *args)
{
    double timeout = 1.0;
    if (!PyArg_ParseTuple(args, "|d:next_control", &timeout))
        return NULL;
    bt_registry *reg = registry_get(self);
    if (!reg)
        return NULL;
    bt_control_request c;
    int rc;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
        rc = bt_registry_next_control(reg, timeout, &c);
    Py_END_ALLOW_THREADS
    self->active--;
    if (rc < 0)
        Py_RETURN_FALSE;
    if (rc == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(Kssy#)", (unsigned long long)c.id, c.action, c.model, c.body,
                         (Py_ssize_t)c.body_len);
}

static PyObject *Registry_answer_control(RegistryObject *self, PyObject *args)
{
    unsigned long long id;
    int status;
    Py_buffer body;
    if (!PyArg_ParseTuple(args, "Kiy*:answer_control", &id, &status, &body))
        return NULL;
    bt_registry *reg = registry_get(self);
    if (!reg) {
        PyBuffer_Release(&body);
        return NULL;
    }
    if (status < 100 || status > 599) {
        PyBuffer_Release(&body);
        PyErr_Format(PyExc_ValueError, "status must be between 100 and 599, got %d", status);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = bt_registry_answer_control(reg, id, status, body.buf, (size_t)body.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&body);
    return PyBool_FromLong(rc == 0);
}

static PyObject *Registry_close(RegistryObject *self, PyObject *unused)
{
    (void)unused;
    if (self->servers > 0 || self->active > 0) {
        PyErr_SetString(PyExc_RuntimeError, self->servers > 0
                                                ? "close the Server using this registry first"
                                                : "the registry is in use by another thread");
        return NULL;
    }
    registry_release(self);
    Py_RETURN_NONE;
}

static PyObject *Registry_get_ready(RegistryObject *self, void *c)
{
    (void)c;
    bt_registry *reg = registry_get(self);
    return reg ? PyBool_FromLong(bt_registry_ready(reg)) : NULL;
}

static PyObject *Registry_get_services(RegistryObject *self, void *c)
{
    (void)c;
    return PyDict_Copy(self->services);
}

static PyMethodDef Registry_methods[] = {
    {"add", (PyCFunction)Registry_add, METH_O,
     "add(service)\n--\n\nServes a Service as its model's version (ValueError when that name "
     "and version is served already). A path without a version reaches the model's newest "
     "ready version."},
    {"remove", (PyCFunction)(void (*)(void))Registry_remove, METH_VARARGS | METH_KEYWORDS,
     "remove(name, version, grace_s=30.0)\n--\n\nTakes the version off the routes at once, "
     "waits (GIL released) until every request that reached it is answered (past grace_s, "
     "503 to those left), and returns its Service for the caller to close."},
    {"replace", (PyCFunction)(void (*)(void))Registry_replace, METH_VARARGS | METH_KEYWORDS,
     "replace(service, grace_s=30.0)\n--\n\nServes service in place of the version of the "
     "same name and number at once, then drains the old one as remove() does and returns "
     "it."},
    {"set_loaded", (PyCFunction)Registry_set_loaded, METH_VARARGS,
     "set_loaded(flag, reason='')\n--\n\nWhether every model that should be loaded is; "
     "with strict readiness /v2/health/ready answers 503 with reason while it is not."},
    {"handle", (PyCFunction)(void (*)(void))Registry_handle, METH_VARARGS | METH_KEYWORDS,
     "handle(method, path, body, ...)\n--\n\nAs Service.handle, for every model served."},
    {"metrics", (PyCFunction)Registry_metrics, METH_NOARGS,
     "metrics()\n--\n\nThe Prometheus text of GET /metrics."},
    {"next_control", (PyCFunction)Registry_next_control, METH_VARARGS,
     "next_control(timeout=1.0)\n--\n\nWaits (GIL released) for a repository extension "
     "request: (id, action, model, body) with action 'index', 'load' or 'unload'; None when "
     "none came in time; False once the server is shutting down."},
    {"answer_control", (PyCFunction)Registry_answer_control, METH_VARARGS,
     "answer_control(id, status, body)\n--\n\nAnswers a request from next_control with a "
     "JSON body; False when it was answered 503 at shutdown already."},
    {"close", (PyCFunction)Registry_close, METH_NOARGS,
     "close()\n--\n\nTakes every service off (they stay open) and frees the registry."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Registry_getset[] = {
    {"ready", (getter)Registry_get_ready, NULL, "What /v2/health/ready says.", NULL},
    {"services", (getter)Registry_get_services, NULL,
     "{(name, version): Service} of the versions served (a copy).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RegistryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "berth._core.Registry",
    .tp_basicsize = sizeof(RegistryObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Registry(*, auth_token=None, log_requests=False, strict_readiness=True, "
              "control=False)\n--\n\n"
              "The model versions one server serves, by name and version, with the server's "
              "own endpoints (health, metadata, /metrics, statistics) and, with control, "
              "Triton's model repository extension (its requests handed to next_control).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Registry_init,
    .tp_dealloc = (destructor)Registry_dealloc,
    .tp_methods = Registry_methods,
    .tp_getset = Registry_getset,
};

/* ------------------------------------------------------------------ Server */

typedef struct {
    PyObject_HEAD RegistryObject *registry;
    bt_server *srv;
} ServerObject;

static void server_release(ServerObject *self)
{
    bt_server *s = self->srv;
    self->srv = NULL;
    if (s) {
        Py_BEGIN_ALLOW_THREADS
            bt_server_free(s);
        Py_END_ALLOW_THREADS
        self->registry->servers--;
    }
}

static int Server_init(ServerObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"registry",
                             "host",
                             "port",
                             "threads",
                             "max_body_bytes",
                             "tls_cert",
                             "tls_key",
                             "connection_limit",
                             "idle_timeout_s",
                             "per_ip_connections",
                             "header_timeout_s",
                             "body_budget",
                             NULL};
    PyObject *registry;
    bt_server_params p;
    memset(&p, 0, sizeof p);
    p.host = "0.0.0.0";
    p.port = 8080;
    p.threads = 2;
    p.connection_limit = BT_DEFAULT_CONNECTION_LIMIT;
    p.idle_timeout_s = BT_DEFAULT_IDLE_TIMEOUT_S;
    p.per_ip_connections = BT_DEFAULT_PER_IP_CONNECTIONS;
    p.header_timeout_s = BT_DEFAULT_HEADER_TIMEOUT_S;
    /* "n": an overflowing int raises instead of wrapping around (2**64 + 1 was 1 byte) */
    Py_ssize_t max_body = (Py_ssize_t)BT_DEFAULT_MAX_BODY, budget = 0;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "O!|$siinzziiiin:Server", kwlist, &RegistryType, &registry, &p.host, &p.port,
            &p.threads, &max_body, &p.tls_cert, &p.tls_key, &p.connection_limit, &p.idle_timeout_s,
            &p.per_ip_connections, &p.header_timeout_s, &budget))
        return -1;
    if (self->srv) {
        PyErr_SetString(PyExc_RuntimeError, "Server.__init__ called twice");
        return -1;
    }
    struct {
        const char *name;
        long long value, lo, hi;
    } checks[] = {
        {"max_body_bytes", max_body, 1, (long long)BT_MAX_BODY_BYTES_LIMIT},
        {"connection_limit", p.connection_limit, 1, 1 << 20},
        {"idle_timeout_s", p.idle_timeout_s, 1, 86400},
        {"per_ip_connections", p.per_ip_connections, 1, 1 << 20},
        {"header_timeout_s", p.header_timeout_s, 1, 86400},
        {"body_budget", budget, 0, PY_SSIZE_T_MAX},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        if (checks[i].value < checks[i].lo || checks[i].value > checks[i].hi) {
            PyErr_Format(PyExc_ValueError, "%s must be between %lld and %lld, got %lld",
                         checks[i].name, checks[i].lo, checks[i].hi, checks[i].value);
            return -1;
        }
    }
    p.max_body_bytes = (size_t)max_body;
    p.body_budget = (size_t)budget;
    RegistryObject *ro = (RegistryObject *)registry;
    bt_registry *reg = registry_get(ro);
    if (!reg)
        return -1;
    bt_error err = {BT_OK, ""};
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = bt_server_start(reg, &p, &self->srv, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        bt_py_raise(&err);
        return -1;
    }
    Py_INCREF(registry);
    self->registry = ro;
    ro->servers++;
    return 0;
}

static void Server_dealloc(ServerObject *self)
{
    if (self->registry)
        server_release(self);
    Py_XDECREF(self->registry);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Server_drain(ServerObject *self, PyObject *args)
{
    double grace = 20.0;
    if (!PyArg_ParseTuple(args, "|d:drain", &grace))
        return NULL;
    if (!self->srv) {
        PyErr_SetString(PyExc_ValueError, "the server is closed");
        return NULL;
    }
    bt_server *s = self->srv;
    Py_BEGIN_ALLOW_THREADS
        bt_server_drain(s, grace);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Server_close(ServerObject *self, PyObject *unused)
{
    (void)unused;
    if (self->registry)
        server_release(self);
    Py_RETURN_NONE;
}

static PyObject *Server_get_port(ServerObject *self, void *c)
{
    (void)c;
    if (!self->srv) {
        PyErr_SetString(PyExc_ValueError, "the server is closed");
        return NULL;
    }
    return PyLong_FromLong(bt_server_port(self->srv));
}

static PyMethodDef Server_methods[] = {
    {"drain", (PyCFunction)Server_drain, METH_VARARGS,
     "drain(grace_seconds=20.0)\n--\n\nReadiness fails at once; requests already accepted "
     "finish; the listener closes. Returns when none is in flight or the grace period "
     "ended."},
    {"close", (PyCFunction)Server_close, METH_NOARGS, "close()\n--\n\nStops the server."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Server_getset[] = {
    {"port", (getter)Server_get_port, NULL, "The port listened on.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ServerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "berth._core.Server",
    .tp_basicsize = sizeof(ServerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Server(registry, *, host='0.0.0.0', port=8080, threads=2, "
              "max_body_bytes=64 MiB, tls_cert=None, tls_key=None, connection_limit=1024, "
              "idle_timeout_s=60, per_ip_connections=256, header_timeout_s=10, "
              "body_budget=4 x max_body_bytes)\n--\n\n"
              "The libmicrohttpd HTTP/1.1 server for a Registry; starts listening at once. "
              "tls_cert/tls_key are PEM text.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Server_init,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_methods = Server_methods,
    .tp_getset = Server_getset,
};

/* ------------------------------------------------------------------ registration */

int bt_py_server_add_types(PyObject *module)
{
    PyTypeObject *types[] = {&RegistryType, &ServerType};
    const char *names[] = {"Registry", "Server"};
    for (size_t i = 0; i < 2; i++) {
        if (PyType_Ready(types[i]) != 0)
            return -1;
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, names[i], (PyObject *)types[i]) != 0) {
            Py_DECREF(types[i]);
            return -1;
        }
    }
    return 0;
}
