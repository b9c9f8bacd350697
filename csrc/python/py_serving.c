/*
 * py_serving.c - Python bindings of the serving parts: _core.Batcher, _core.Service
 * (the protocol, for the Flask/FastAPI adapters) and _core.Server (libmicrohttpd).
 * Every blocking call releases the GIL.
 */
#include "python/py_serving.h"

#include <structmember.h>

#include "runtime/batcher.h"
#include "python/py_convert.h"
#include "serving/server.h"
#include "runtime/threads.h"

/* ------------------------------------------------------------------ shared */

static int parse_batching(PyObject *obj, int *out)
{
    if (!obj || obj == Py_None) {
        *out = -1;
        return 0;
    }
    int v = PyObject_IsTrue(obj);
    if (v < 0)
        return -1;
    *out = v;
    return 0;
}

static PyObject *histogram_dict(const bt_histogram *h)
{
    uint64_t counts[BT_HIST_MAX_BOUNDS + 1];
    bt_histogram_counts(h, counts);
    PyObject *buckets = PyDict_New();
    if (!buckets)
        return NULL;
    uint64_t total = 0;
    for (size_t i = 0; i <= h->n_bounds; i++) {
        total += counts[i];
        PyObject *k = i < h->n_bounds ? PyFloat_FromDouble(h->bounds[i])
                                      : PyFloat_FromDouble(Py_HUGE_VAL);
        PyObject *v = PyLong_FromUnsignedLongLong(counts[i]);
        if (!k || !v || PyDict_SetItem(buckets, k, v) != 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(buckets);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    return Py_BuildValue("{s:N,s:K,s:d}", "buckets", buckets, "count",
                         (unsigned long long)total, "sum", bt_histogram_sum(h));
}

static PyObject *batcher_stats_dict(bt_batcher *b)
{
    bt_batcher_stats st;
    bt_batcher_get_stats(b, &st);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:N,s:N}", "requests",
                         (unsigned long long)st.requests, "batches",
                         (unsigned long long)st.batches, "rows", (unsigned long long)st.rows,
                         "errors", (unsigned long long)st.errors, "overloaded",
                         (unsigned long long)st.overloaded, "timeouts",
                         (unsigned long long)st.timeouts, "retries",
                         (unsigned long long)st.retries, "queued",
                         (unsigned long long)st.queued, "batch_sizes",
                         histogram_dict(bt_batcher_batch_sizes(b)), "queue_seconds",
                         histogram_dict(bt_batcher_queue_seconds(b)), "compute_seconds",
                         histogram_dict(bt_batcher_compute_seconds(b)));
}

/* ------------------------------------------------------------------ Batcher */

typedef struct {
    PyObject_HEAD
    PyObject *model_obj; /* the berth.Model, kept alive */
    bt_batcher *batcher; /* owned; NULL once closed */
    int active;          /* predict calls in progress (GIL-protected) */
    int closing;
} BatcherObject;

static void batcher_release(BatcherObject *self)
{
    bt_batcher *b = self->batcher;
    self->batcher = NULL;
    if (b) {
        Py_BEGIN_ALLOW_THREADS
        bt_batcher_free(b);
        Py_END_ALLOW_THREADS
    }
}

/* Ends one predict; the last one out after close() frees the batcher. */
static void batcher_leave(BatcherObject *self)
{
    self->active--;
    if (self->closing && self->active == 0)
        batcher_release(self);
}

static int Batcher_init(BatcherObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"model", "max_batch_size", "max_delay_ms", "max_queue",
                             "batching", "workers", NULL};
    PyObject *model_obj, *batching = Py_None;
    bt_batcher_params p = bt_batcher_default_params();
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$idiOi:Batcher", kwlist, &model_obj,
                                     &p.max_batch_size, &p.max_delay_ms, &p.max_queue,
                                     &batching, &p.workers))
        return -1;
    if (self->batcher) {
        PyErr_SetString(PyExc_RuntimeError, "Batcher.__init__ called twice");
        return -1;
    }
    bt_model *m = bt_py_model_get(model_obj);
    if (!m || parse_batching(batching, &p.batching) != 0)
        return -1;
    bt_error err = {BT_OK, ""};
    if (bt_batcher_create(m, &p, &self->batcher, &err) != 0) {
        bt_py_raise(&err);
        return -1;
    }
    Py_INCREF(model_obj);
    self->model_obj = model_obj;
    return 0;
}

static void Batcher_dealloc(BatcherObject *self)
{
    batcher_release(self);
    Py_XDECREF(self->model_obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Batcher_predict(BatcherObject *self, PyObject *args, PyObject *kw)
{
    double timeout = 0;
    if (kw) {
        PyObject *t = PyDict_GetItemString(kw, "timeout");
        if (PyDict_GET_SIZE(kw) != (t ? 1 : 0)) {
            PyErr_SetString(PyExc_TypeError, "predict() takes only the keyword 'timeout'");
            return NULL;
        }
        if (t && t != Py_None) {
            timeout = PyFloat_AsDouble(t);
            if (timeout == -1.0 && PyErr_Occurred())
                return NULL;
            if (!(timeout > 0)) {
                PyErr_Format(PyExc_ValueError, "timeout must be a positive number of seconds, "
                                               "got %R", t);
                return NULL;
            }
        }
    }
    if (!self->batcher || self->closing) {
        PyErr_SetString(PyExc_ValueError, "the batcher is closed");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n > BT_BATCH_MAX_INPUTS) {
        PyErr_Format(PyExc_ValueError, "predict() takes at most %d inputs, got %zd",
                     BT_BATCH_MAX_INPUTS, n);
        return NULL;
    }
    bt_model *m = bt_py_model_get(self->model_obj);
    if (!m)
        return NULL;
    /* Counted as active from here: converting an input can run Python code (__array__, a
     * list's items), during which another thread may call close(); close() then leaves
     * the batcher to the last predict instead of freeing it under this one. */
    self->active++;
    DLManagedTensor *in[BT_BATCH_MAX_INPUTS] = {0};
    bt_py_view *views[BT_BATCH_MAX_INPUTS] = {0};
    bt_error err = {BT_OK, ""};
    for (Py_ssize_t i = 0; i < n; i++) {
        if (bt_py_to_tensor(PyTuple_GET_ITEM(args, i), m, (size_t)i, &in[i], &views[i], &err) !=
            0) {
            for (Py_ssize_t k = 0; k < i; k++) {
                if (in[k]->deleter)
                    in[k]->deleter(in[k]);
                bt_py_view_done(views[k]);
            }
            batcher_leave(self);
            return bt_py_raise(&err);
        }
    }
    DLManagedTensor *outs[BT_MAX_OUTPUTS];
    size_t n_out = 0;
    int is_tuple = 0, rc;
    bt_batcher *b = self->batcher; /* not NULL: released only when no predict is active */
    Py_BEGIN_ALLOW_THREADS
    rc = bt_batcher_run(b, in, (size_t)n, timeout * 1000.0, outs, BT_MAX_OUTPUTS, &n_out,
                        &is_tuple, &err);
    Py_END_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        bt_py_view_done(views[i]);
    batcher_leave(self);
    if (rc != 0)
        return bt_py_raise(&err);
    if (!is_tuple && n_out == 1)
        return bt_py_from_tensor(outs[0]);
    PyObject *tuple = PyTuple_New((Py_ssize_t)n_out);
    if (!tuple) {
        for (size_t k = 0; k < n_out; k++)
            outs[k]->deleter(outs[k]);
        return NULL;
    }
    for (size_t k = 0; k < n_out; k++) {
        PyObject *a = bt_py_from_tensor(outs[k]);
        if (!a) {
            for (size_t j = k + 1; j < n_out; j++)
                outs[j]->deleter(outs[j]);
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, (Py_ssize_t)k, a);
    }
    if (is_tuple == 2)
        return bt_py_named_outputs(bt_py_model_get(self->model_obj), tuple);
    return tuple;
}

static PyObject *Batcher_stats(BatcherObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->batcher) {
        PyErr_SetString(PyExc_ValueError, "the batcher is closed");
        return NULL;
    }
    return batcher_stats_dict(self->batcher);
}

static PyObject *Batcher_close(BatcherObject *self, PyObject *unused)
{
    (void)unused;
    self->closing = 1;
    if (self->active == 0)
        batcher_release(self);
    Py_RETURN_NONE;
}

static PyObject *Batcher_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    Py_INCREF(self);
    return self;
}

static PyObject *Batcher_exit(BatcherObject *self, PyObject *args)
{
    (void)args;
    return Batcher_close(self, NULL);
}

static PyObject *Batcher_get_batching(BatcherObject *self, void *closure)
{
    (void)closure;
    if (!self->batcher) {
        PyErr_SetString(PyExc_ValueError, "the batcher is closed");
        return NULL;
    }
    return PyBool_FromLong(bt_batcher_is_batching(self->batcher));
}

static PyMethodDef Batcher_methods[] = {
    {"predict", (PyCFunction)(void (*)(void))Batcher_predict, METH_VARARGS | METH_KEYWORDS,
     "predict(*inputs, timeout=None)\n--\n\n"
     "Queues one request and waits for its rows of a batched forward (the GIL is released "
     "while waiting). Raises berth.Overloaded at once when the queue is full and "
     "TimeoutError when the request waited longer than timeout seconds."},
    {"stats", (PyCFunction)Batcher_stats, METH_NOARGS,
     "stats()\n--\n\nCounters: requests, batches, rows, errors, overloaded, timeouts, queued, "
     "and the batch_sizes, queue_seconds and compute_seconds histograms."},
    {"close", (PyCFunction)Batcher_close, METH_NOARGS,
     "close()\n--\n\nFinishes queued requests and stops the batcher's thread."},
    {"__enter__", Batcher_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Batcher_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Batcher_getset[] = {
    {"batching", (getter)Batcher_get_batching, NULL,
     "True when requests are concatenated along the batch dimension.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "berth._core.Batcher",
    .tp_basicsize = sizeof(BatcherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Batcher(model, *, max_batch_size=64, max_delay_ms=2.0, max_queue=1024, "
              "batching=None, workers=1)\n--\n\n"
              "Dynamic batching in C: concurrent predict() calls are concatenated along the "
              "batch dimension. batching=None lets the model's signature decide; workers "
              "threads run forwards concurrently.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batcher_init,
    .tp_dealloc = (destructor)Batcher_dealloc,
    .tp_methods = Batcher_methods,
    .tp_getset = Batcher_getset,
};

/* ------------------------------------------------------------------ Service */

typedef struct {
    PyObject_HEAD
    PyObject *model_obj;
    bt_service *svc; /* owned; NULL once closed */
    int active;      /* handle()/warmup() calls in progress */
    int servers;     /* Server objects using it */
    int closing;
} ServiceObject;

static void service_release(ServiceObject *self)
{
    bt_service *s = self->svc;
    self->svc = NULL;
    if (s) {
        Py_BEGIN_ALLOW_THREADS
        bt_service_free(s);
        Py_END_ALLOW_THREADS
    }
}

static int Service_init(ServiceObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"model",      "name",     "max_batch_size", "max_delay_ms",
                             "max_queue",  "batching", "auth_token",     "log_requests",
                             "timeout_ms", "workers",  "max_rows",       "max_response_bytes",
                             NULL};
    PyObject *model_obj, *batching = Py_None;
    const char *name, *token = NULL;
    int log_requests = 0;
    long long max_rows = BT_DEFAULT_MAX_ROWS;
    Py_ssize_t max_response = (Py_ssize_t)BT_DEFAULT_MAX_RESPONSE_BYTES;
    bt_service_params p;
    memset(&p, 0, sizeof p);
    p.batch = bt_batcher_default_params();
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Os|$idiOzpdiLn:Service", kwlist, &model_obj,
                                     &name, &p.batch.max_batch_size, &p.batch.max_delay_ms,
                                     &p.batch.max_queue, &batching, &token, &log_requests,
                                     &p.timeout_ms, &p.batch.workers, &max_rows, &max_response))
        return -1;
    if (max_rows < 1 || max_response < 1) {
        PyErr_Format(PyExc_ValueError, "%s must be positive, got %lld",
                     max_rows < 1 ? "max_rows" : "max_response_bytes",
                     max_rows < 1 ? max_rows : (long long)max_response);
        return -1;
    }
    if (!(p.timeout_ms >= 0 && p.timeout_ms <= 86400e3)) {
        PyErr_Format(PyExc_ValueError, "timeout_ms must be between 0 and 86400000, got %g",
                     p.timeout_ms);
        return -1;
    }
    p.max_rows = max_rows;
    p.max_response_bytes = (size_t)max_response;
    if (self->svc) {
        PyErr_SetString(PyExc_RuntimeError, "Service.__init__ called twice");
        return -1;
    }
    bt_model *m = bt_py_model_get(model_obj);
    if (!m || parse_batching(batching, &p.batch.batching) != 0)
        return -1;
    p.name = name;
    p.auth_token = token;
    p.log_requests = log_requests;
    bt_error err = {BT_OK, ""};
    if (bt_service_create(m, &p, &self->svc, &err) != 0) {
        bt_py_raise(&err);
        return -1;
    }
    Py_INCREF(model_obj);
    self->model_obj = model_obj;
    return 0;
}

static void Service_dealloc(ServiceObject *self)
{
    service_release(self);
    Py_XDECREF(self->model_obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static bt_service *service_get(ServiceObject *self)
{
    if (!self->svc || self->closing) {
        PyErr_SetString(PyExc_ValueError, "the service is closed");
        return NULL;
    }
    return self->svc;
}

static void service_leave(ServiceObject *self)
{
    self->active--;
    if (self->closing && self->active == 0 && self->servers == 0)
        service_release(self);
}

static PyObject *Service_handle(ServiceObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"method",        "path",          "body",
                             "content_type",  "authorization", "header_length",
                             "content_encoding", "accept_encoding", "max_body_bytes", NULL};
    const char *method, *path, *ct = NULL, *auth = NULL, *hlen = NULL, *ce = NULL, *ae = NULL;
    unsigned long long max_body = BT_DEFAULT_MAX_BODY;
    Py_buffer body = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ssy*|zzzzzK:handle", kwlist, &method, &path,
                                     &body, &ct, &auth, &hlen, &ce, &ae, &max_body))
        return NULL;
    bt_service *svc = service_get(self);
    if (!svc) {
        PyBuffer_Release(&body);
        return NULL;
    }
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
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    bt_service_handle_sync(svc, &req, &resp);
    bt_http_response_compress(&resp, ae);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&body);
    service_leave(self);
    PyObject *headers = Py_BuildValue("[(ss)]", "Content-Type", resp.content_type);
    PyObject *out_body = PyBytes_FromStringAndSize(resp.body.data ? resp.body.data : "",
                                                   (Py_ssize_t)resp.body.len);
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

static PyObject *Service_warmup(ServiceObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rounds", "tune_batch", NULL};
    int rounds = 3, tune = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|ip:warmup", kwlist, &rounds, &tune))
        return NULL;
    bt_service *svc = service_get(self);
    if (!svc)
        return NULL;
    bt_error err = {BT_OK, ""};
    double seconds = 0;
    int rc;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
    rc = bt_service_warmup(svc, rounds < 1 ? 1 : rounds, tune, &seconds, &err);
    Py_END_ALLOW_THREADS
    service_leave(self);
    if (rc < 0)
        return bt_py_raise(&err);
    if (rc == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(seconds);
}

static PyObject *Service_set_ready(ServiceObject *self, PyObject *arg)
{
    bt_service *svc = service_get(self);
    int v = PyObject_IsTrue(arg);
    if (!svc || v < 0)
        return NULL;
    bt_service_set_ready(svc, v);
    Py_RETURN_NONE;
}

static PyObject *Service_metrics(ServiceObject *self, PyObject *unused)
{
    (void)unused;
    bt_service *svc = service_get(self);
    if (!svc)
        return NULL;
    bt_buf b = {0};
    bt_service_metrics(svc, &b);
    if (b.oom) {
        bt_buf_free(&b);
        return PyErr_NoMemory();
    }
    PyObject *s = PyUnicode_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
    bt_buf_free(&b);
    return s;
}

static PyObject *Service_set_failed(ServiceObject *self, PyObject *arg)
{
    bt_service *svc = service_get(self);
    if (!svc)
        return NULL;
    const char *msg = PyUnicode_AsUTF8(arg);
    if (!msg)
        return NULL;
    bt_service_set_failed(svc, msg);
    Py_RETURN_NONE;
}

static PyObject *Service_stats(ServiceObject *self, PyObject *unused)
{
    (void)unused;
    bt_service *svc = service_get(self);
    if (!svc)
        return NULL;
    return batcher_stats_dict(bt_service_batcher(svc));
}

static PyObject *Service_close(ServiceObject *self, PyObject *unused)
{
    (void)unused;
    if (self->servers > 0) {
        PyErr_SetString(PyExc_RuntimeError, "close the Server using this service first");
        return NULL;
    }
    self->closing = 1;
    if (self->active == 0)
        service_release(self);
    Py_RETURN_NONE;
}

static PyObject *Service_get_ready(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = service_get(self);
    return svc ? PyBool_FromLong(bt_service_ready(svc)) : NULL;
}

static PyObject *Service_get_batching(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = service_get(self);
    return svc ? PyBool_FromLong(bt_service_batching(svc)) : NULL;
}

static PyObject *Service_get_batch_limit(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = service_get(self);
    if (!svc)
        return NULL;
    return PyLong_FromLong(bt_service_batching(svc)
                               ? bt_batcher_batch_limit(bt_service_batcher(svc)) : 1);
}

static PyObject *Service_get_batch_costs(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = service_get(self);
    if (!svc)
        return NULL;
    const bt_batch_cost *costs;
    size_t n = bt_service_tuning(svc, &costs);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *pair = Py_BuildValue("(id)", costs[i].rows, costs[i].seconds_per_row);
        if (!pair) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, pair);
    }
    return list;
}

static PyMethodDef Service_methods[] = {
    {"handle", (PyCFunction)(void (*)(void))Service_handle, METH_VARARGS | METH_KEYWORDS,
     "handle(method, path, body, content_type=None, authorization=None, header_length=None, "
     "content_encoding=None, accept_encoding=None, max_body_bytes=64 MiB)"
     "\n--\n\nAnswers one HTTP request with the C protocol codec (GIL released). A gzip or "
     "deflate body is inflated up to max_body_bytes (413 past it); the response is gzipped "
     "when accept_encoding takes gzip. Returns (status, [(header, value), ...], body_bytes)."},
    {"warmup", (PyCFunction)(void (*)(void))Service_warmup, METH_VARARGS | METH_KEYWORDS,
     "warmup(rounds=3, tune_batch=True)\n--\n\nRuns zero batches of the signature's shape; "
     "returns the seconds spent, or None when the signature has no dtypes/shapes to warm up "
     "with. When batching and tune_batch, times batches of 1, 2, 4, ... max_batch_size rows "
     "and limits batches to the smallest size with about the cheapest rows (see batch_limit "
     "and batch_costs)."},
    {"set_ready", (PyCFunction)Service_set_ready, METH_O,
     "set_ready(flag)\n--\n\nTurns readiness on, or off for shutdown."},
    {"set_failed", (PyCFunction)Service_set_failed, METH_O,
     "set_failed(reason)\n--\n\nThe model failed at start: readiness stays off for good and "
     "the ready endpoints answer 503 with reason. warmup() calls it when forward fails."},
    {"metrics", (PyCFunction)Service_metrics, METH_NOARGS,
     "metrics()\n--\n\nThe Prometheus text of GET /metrics."},
    {"stats", (PyCFunction)Service_stats, METH_NOARGS,
     "stats()\n--\n\nThe batcher's counters (see Batcher.stats)."},
    {"close", (PyCFunction)Service_close, METH_NOARGS,
     "close()\n--\n\nFinishes queued requests and stops the batcher."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Service_getset[] = {
    {"ready", (getter)Service_get_ready, NULL, "Whether readiness probes succeed.", NULL},
    {"batching", (getter)Service_get_batching, NULL, "Whether requests are batched.", NULL},
    {"batch_limit", (getter)Service_get_batch_limit, NULL,
     "Rows per forward in effect: max_batch_size, or less after warmup(tune_batch=True).", NULL},
    {"batch_costs", (getter)Service_get_batch_costs, NULL,
     "[(rows, seconds per row), ...] as timed by warmup(tune_batch=True); [] before.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ServiceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "berth._core.Service",
    .tp_basicsize = sizeof(ServiceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Service(model, name, *, max_batch_size=64, max_delay_ms=2.0, max_queue=1024, "
              "batching=None, auth_token=None, log_requests=False, timeout_ms=0.0, workers=1, "
              "max_rows=65536, max_response_bytes=64 MiB)\n--\n\n"
              "One model behind the Open Inference Protocol v2 and KServe v1, in C: routing, "
              "auth, codec, batcher, metrics and readiness, without a transport.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Service_init,
    .tp_dealloc = (destructor)Service_dealloc,
    .tp_methods = Service_methods,
    .tp_getset = Service_getset,
};

/* ------------------------------------------------------------------ Server */

typedef struct {
    PyObject_HEAD
    ServiceObject *service;
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
        self->service->servers--;
    }
}

static int Server_init(ServerObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"service",  "host",    "port",  "threads", "max_body_bytes",
                             "tls_cert", "tls_key", "connection_limit", "idle_timeout_s",
                             "per_ip_connections", "header_timeout_s", "body_budget",
                             NULL};
    PyObject *service;
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
    Py_ssize_t max_body = (Py_ssize_t)BT_DEFAULT_MAX_BODY_BYTES, budget = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|$siinzziiiin:Server", kwlist, &ServiceType,
                                     &service, &p.host, &p.port, &p.threads, &max_body,
                                     &p.tls_cert, &p.tls_key, &p.connection_limit,
                                     &p.idle_timeout_s, &p.per_ip_connections,
                                     &p.header_timeout_s, &budget))
        return -1;
    if (self->srv) {
        PyErr_SetString(PyExc_RuntimeError, "Server.__init__ called twice");
        return -1;
    }
    struct { const char *name; long long value, lo, hi; } checks[] = {
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
    ServiceObject *so = (ServiceObject *)service;
    bt_service *svc = service_get(so);
    if (!svc)
        return -1;
    bt_error err = {BT_OK, ""};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = bt_server_start(svc, &p, &self->srv, &err);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        bt_py_raise(&err);
        return -1;
    }
    Py_INCREF(service);
    self->service = so;
    so->servers++;
    return 0;
}

static void Server_dealloc(ServerObject *self)
{
    if (self->service)
        server_release(self);
    Py_XDECREF(self->service);
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
    if (self->service)
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
    .tp_doc = "Server(service, *, host='0.0.0.0', port=8080, threads=2, "
              "max_body_bytes=64 MiB, tls_cert=None, tls_key=None, connection_limit=1024, "
              "idle_timeout_s=60, per_ip_connections=256, header_timeout_s=10, "
              "body_budget=4 x max_body_bytes)\n--\n\n"
              "The libmicrohttpd HTTP/1.1 server for a Service; starts listening at once. "
              "tls_cert/tls_key are PEM text.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Server_init,
    .tp_dealloc = (destructor)Server_dealloc,
    .tp_methods = Server_methods,
    .tp_getset = Server_getset,
};

/* ------------------------------------------------------------------ registration */

int bt_py_serving_add_types(PyObject *module)
{
    /* The serving limits' defaults, defined once in server.h; the CLI's flags use them. */
    PyObject *limits = Py_BuildValue(
        "{s:i,s:i,s:d,s:i,s:i,s:i,s:L,s:n,s:n,s:n,s:i,s:i,s:i,s:i,s:i,s:s}", "threads_limit",
        BT_MAX_NUM_THREADS, "max_batch_size_limit",
        BT_BATCH_MAX_SIZE, "max_delay_ms_limit", BT_BATCH_MAX_DELAY_MS, "max_queue_limit",
        BT_BATCH_MAX_QUEUE, "workers_limit", BT_BATCH_MAX_WORKERS, "http_threads_limit",
        BT_MAX_HTTP_THREADS, "max_rows", (long long)BT_DEFAULT_MAX_ROWS,
        "max_response_bytes", (Py_ssize_t)BT_DEFAULT_MAX_RESPONSE_BYTES, "max_body_bytes",
        (Py_ssize_t)BT_DEFAULT_MAX_BODY_BYTES, "max_body_bytes_limit",
        (Py_ssize_t)BT_MAX_BODY_BYTES_LIMIT, "body_budget_factor", BT_DEFAULT_BODY_BUDGET_FACTOR,
        "per_ip_connections", BT_DEFAULT_PER_IP_CONNECTIONS, "connection_limit",
        BT_DEFAULT_CONNECTION_LIMIT, "idle_timeout_s", BT_DEFAULT_IDLE_TIMEOUT_S,
        "header_timeout_s", BT_DEFAULT_HEADER_TIMEOUT_S, "tls_priorities", BT_TLS_PRIORITIES);
    if (!limits || PyModule_AddObject(module, "SERVING_DEFAULTS", limits) != 0) {
        Py_XDECREF(limits);
        return -1;
    }
    PyTypeObject *types[] = {&BatcherType, &ServiceType, &ServerType};
    const char *names[] = {"Batcher", "Service", "Server"};
    for (size_t i = 0; i < 3; i++) {
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
