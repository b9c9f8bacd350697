/*
 * py_serving.c - Python bindings of the serving parts: _core.Batcher and _core.Service
 * (one model version behind the protocol); the serving limits. Registry and Server are
 * in py_server.c. Every blocking call releases the GIL.
 */
#include "python/py_serving.h"

#include <structmember.h>

#include "python/py_convert.h"
#include "runtime/batcher.h"
#include "runtime/threads.h"
#include "serving/server.h"
#include "serving/service.h"

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
        PyObject *k =
            i < h->n_bounds ? PyFloat_FromDouble(h->bounds[i]) : PyFloat_FromDouble(Py_HUGE_VAL);
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
    return Py_BuildValue("{s:N,s:K,s:d}", "buckets", buckets, "count", (unsigned long long)total,
                         "sum", bt_histogram_sum(h));
}

static PyObject *batcher_stats_dict(bt_batcher *b)
{
    bt_batcher_stats st;
    bt_batcher_get_stats(b, &st);
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:N,s:N,s:N}", "requests",
        (unsigned long long)st.requests, "batches", (unsigned long long)st.batches, "rows",
        (unsigned long long)st.rows, "errors", (unsigned long long)st.errors, "overloaded",
        (unsigned long long)st.overloaded, "timeouts", (unsigned long long)st.timeouts, "retries",
        (unsigned long long)st.retries, "queued", (unsigned long long)st.queued, "batch_sizes",
        histogram_dict(bt_batcher_batch_sizes(b)), "queue_seconds",
        histogram_dict(bt_batcher_queue_seconds(b)), "compute_seconds",
        histogram_dict(bt_batcher_compute_seconds(b)));
}

/* ------------------------------------------------------------------ Batcher */

typedef struct {
    PyObject_HEAD PyObject *model_obj; /* the berth.Model, kept alive */
    bt_batcher *batcher;               /* owned; NULL once closed */
    int active;                        /* predict calls in progress (GIL-protected) */
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
    static char *kwlist[] = {
        "model", "max_batch_size", "max_delay_ms", "max_queue", "batching", "workers", NULL};
    PyObject *model_obj, *batching = Py_None;
    bt_batcher_params p = bt_batcher_default_params();
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$idiOi:Batcher", kwlist, &model_obj,
                                     &p.max_batch_size, &p.max_delay_ms, &p.max_queue, &batching,
                                     &p.workers))
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
                PyErr_Format(PyExc_ValueError,
                             "timeout must be a positive number of seconds, "
                             "got %R",
                             t);
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
    if (bt_py_to_tensors(&PyTuple_GET_ITEM(args, 0), (size_t)n, m, in, views, &err) != 0) {
        batcher_leave(self);
        return bt_py_raise(&err);
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
    return bt_py_outputs(m, outs, n_out, is_tuple);
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

static void service_release(ServiceObject *self)
{
    bt_service *s = self->svc;
    bt_registry *own = self->own;
    self->svc = NULL;
    self->own = NULL;
    if (s) {
        Py_BEGIN_ALLOW_THREADS
            if (own)
                bt_registry_remove(own, bt_service_name(s),
                                   strtoll(bt_service_version(s), NULL, 10), 0);
            bt_registry_free(own);
            bt_service_free(s);
        Py_END_ALLOW_THREADS
    }
}

static int Service_init(ServiceObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"model",        "name",           "max_batch_size",
                             "max_delay_ms", "max_queue",      "batching",
                             "auth_token",   "log_requests",   "timeout_ms",
                             "workers",      "max_rows",       "max_response_bytes",
                             "version",      "version_policy", NULL};
    PyObject *model_obj, *batching = Py_None;
    const char *name, *token = NULL;
    int log_requests = 0;
    long long max_rows = BT_DEFAULT_MAX_ROWS;
    Py_ssize_t max_response = (Py_ssize_t)BT_DEFAULT_MAX_RESPONSE_BYTES;
    long long version = 1;
    bt_service_params p;
    memset(&p, 0, sizeof p);
    p.batch = bt_batcher_default_params();
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Os|$idiOzpdiLnLz:Service", kwlist, &model_obj,
                                     &name, &p.batch.max_batch_size, &p.batch.max_delay_ms,
                                     &p.batch.max_queue, &batching, &token, &log_requests,
                                     &p.timeout_ms, &p.batch.workers, &max_rows, &max_response,
                                     &version, &p.version_policy_json))
        return -1;
    if (version < 1) {
        PyErr_Format(PyExc_ValueError, "version must be a positive integer, got %lld", version);
        return -1;
    }
    p.version = version;
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
    p.log_requests = log_requests;
    bt_error err = {BT_OK, ""};
    bt_registry_params rp = {
        .auth_token = token, .log_requests = log_requests, .strict_readiness = 1};
    if (bt_service_create(m, &p, &self->svc, &err) != 0 ||
        bt_registry_create(&rp, &self->own, &err) != 0 ||
        bt_registry_add(self->own, self->svc, &err) != 0) {
        service_release(self);
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

bt_service *bt_py_service_get(ServiceObject *self)
{
    if (!self->svc || self->closing) {
        PyErr_SetString(PyExc_ValueError, "the service is closed");
        return NULL;
    }
    return self->svc;
}

void bt_py_service_leave(ServiceObject *self)
{
    self->active--;
    if (self->closing && self->active == 0 && self->servers == 0)
        service_release(self);
}

static PyObject *Service_handle(ServiceObject *self, PyObject *args, PyObject *kw)
{
    if (!bt_py_service_get(self))
        return NULL;
    self->active++;
    PyObject *result = bt_py_handle(self->own, args, kw);
    bt_py_service_leave(self);
    return result;
}

static PyObject *Service_warmup(ServiceObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"rounds", "tune_batch", "tune_seconds", NULL};
    int rounds = BT_WARMUP_ROUNDS, tune = 1;
    double budget = BT_TUNE_READY_SECONDS;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|ipd:warmup", kwlist, &rounds, &tune, &budget))
        return NULL;
    if (!(budget >= 0))
        return PyErr_Format(PyExc_ValueError,
                            "warmup: tune_seconds must be a number of seconds >= 0, got %R",
                            PyTuple_Size(args) > 2 ? PyTuple_GET_ITEM(args, 2)
                                                   : PyDict_GetItemString(kw, "tune_seconds"));
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    bt_error err = {BT_OK, ""};
    double seconds = 0;
    int rc;
    self->active++;
    Py_BEGIN_ALLOW_THREADS
        rc = bt_service_warmup(svc, rounds < 1 ? 1 : rounds, tune, budget, &seconds, &err);
    Py_END_ALLOW_THREADS
    bt_py_service_leave(self);
    if (rc < 0)
        return bt_py_raise(&err);
    if (rc == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(seconds);
}

static PyObject *Service_set_ready(ServiceObject *self, PyObject *arg)
{
    bt_service *svc = bt_py_service_get(self);
    int v = PyObject_IsTrue(arg);
    if (!svc || v < 0)
        return NULL;
    bt_service_set_ready(svc, v);
    Py_RETURN_NONE;
}

static PyObject *Service_metrics(ServiceObject *self, PyObject *unused)
{
    (void)unused;
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    bt_buf b = {0};
    bt_registry_metrics(self->own, &b);
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
    bt_service *svc = bt_py_service_get(self);
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
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    return batcher_stats_dict(bt_service_batcher(svc));
}

static PyObject *Service_close(ServiceObject *self, PyObject *unused)
{
    (void)unused;
    if (self->servers > 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "remove this service from the Registry serving it first");
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
    bt_service *svc = bt_py_service_get(self);
    return svc ? PyBool_FromLong(bt_service_ready(svc)) : NULL;
}

static PyObject *Service_get_batching(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = bt_py_service_get(self);
    return svc ? PyBool_FromLong(bt_service_batching(svc)) : NULL;
}

static PyObject *Service_get_batch_limit(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    return PyLong_FromLong(
        bt_service_batching(svc) ? bt_batcher_batch_limit(bt_service_batcher(svc)) : 1);
}

static PyObject *Service_get_batch_costs(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    bt_batch_cost costs[BT_TUNE_MAX_STEPS];
    int done;
    size_t n = bt_batcher_tuning(bt_service_batcher(svc), costs, BT_TUNE_MAX_STEPS, &done, NULL, 0);
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

static PyObject *Service_get_batch_tuning(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    bt_batch_cost costs[BT_TUNE_MAX_STEPS];
    char text[512];
    int done;
    bt_batcher *b = bt_service_batcher(svc);
    size_t n = bt_batcher_tuning(b, costs, BT_TUNE_MAX_STEPS, &done, text, sizeof text);
    if (n == 0 && !bt_batcher_tuning_rows(b))
        Py_RETURN_NONE;
    return PyUnicode_FromString(text);
}

static PyObject *Service_get_batch_tuned(ServiceObject *self, void *c)
{
    (void)c;
    bt_service *svc = bt_py_service_get(self);
    if (!svc)
        return NULL;
    bt_batch_cost costs[BT_TUNE_MAX_STEPS];
    int done;
    bt_batcher_tuning(bt_service_batcher(svc), costs, BT_TUNE_MAX_STEPS, &done, NULL, 0);
    return PyBool_FromLong(done);
}

static PyMethodDef Service_methods[] = {
    {"handle", (PyCFunction)(void (*)(void))Service_handle, METH_VARARGS | METH_KEYWORDS,
     "handle(method, path, body, content_type=None, authorization=None, header_length=None, "
     "content_encoding=None, accept_encoding=None, max_body_bytes=64 MiB)"
     "\n--\n\nAnswers one HTTP request with the C protocol codec (GIL released). A gzip or "
     "deflate body is inflated up to max_body_bytes (413 past it); the response is gzipped "
     "when accept_encoding takes gzip. Returns (status, [(header, value), ...], body_bytes)."},
    {"warmup", (PyCFunction)(void (*)(void))Service_warmup, METH_VARARGS | METH_KEYWORDS,
     "warmup(rounds=2, tune_batch=True, tune_seconds=0.05)\n--\n\nRuns zero batches of the "
     "signature's shape; returns the seconds spent, or None when the signature has no "
     "dtypes/shapes to warm up with. When batching and tune_batch, starts timing batches of 1, "
     "2, 4, ... max_batch_size rows, to limit batches to the smallest size with about the "
     "cheapest rows: zero batches for up to tune_seconds (none when the forwards the climb "
     "needs would exceed it even at one row's cost), then served batches of the size "
     "being timed (see batch_limit, batch_costs and batch_tuning)."},
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
     "Rows per forward in effect: max_batch_size, or the tuning's after "
     "warmup(tune_batch=True).",
     NULL},
    {"batch_costs", (getter)Service_get_batch_costs, NULL,
     "[(rows, seconds per row), ...] timed so far since warmup(tune_batch=True); [] before.", NULL},
    {"batch_tuning", (getter)Service_get_batch_tuning, NULL,
     "The tuning's line, 'batch limit 8 rows; ms per row at 1/2/4/8/16 rows: ...' ('batch "
     "limit 2 rows for now, timing batches of 2 rows as they are served; ...' while it "
     "climbs), or None when it never started.",
     NULL},
    {"batch_tuned", (getter)Service_get_batch_tuned, NULL,
     "True once the tuning's climb has ended: batch_limit is then final, and the batcher "
     "has logged batch_tuning to stderr as \"berth: '<name>' version <v>: ...\".",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject BtServiceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "berth._core.Service",
    .tp_basicsize = sizeof(ServiceObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Service(model, name, *, max_batch_size=64, max_delay_ms=2.0, max_queue=1024, "
              "batching=None, auth_token=None, log_requests=False, timeout_ms=0.0, workers=1, "
              "max_rows=65536, max_response_bytes=64 MiB, version=1, version_policy=None)"
              "\n--\n\n"
              "One model version behind the Open Inference Protocol v2 and KServe v1, in C: "
              "codec, batcher, metrics and readiness, without a transport. handle() answers "
              "as a server of this model alone would (auth_token guards it); Registry.add "
              "serves it beside others. version_policy: Triton's version_policy JSON for "
              "/config.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Service_init,
    .tp_dealloc = (destructor)Service_dealloc,
    .tp_methods = Service_methods,
    .tp_getset = Service_getset,
};

/* ------------------------------------------------------------------ registration */

int bt_py_serving_add_types(PyObject *module)
{
    /* The serving limits' defaults, defined once in server.h; the CLI's flags use them. */
    /* ... and the batcher's (bt_batcher_default_params): every Python default is these. */
    bt_batcher_params batch = bt_batcher_default_params();
    PyObject *limits = Py_BuildValue(
        "{s:i,s:i,s:d,s:i,s:i,s:i,s:L,s:n,s:n,s:n,s:i,s:i,s:i,s:i,s:i,s:s,s:i,s:d,s:i,s:i}",
        "threads_limit", BT_MAX_NUM_THREADS, "max_batch_size_limit", BT_BATCH_MAX_SIZE,
        "max_delay_ms_limit", BT_BATCH_MAX_DELAY_MS, "max_queue_limit", BT_BATCH_MAX_QUEUE,
        "workers_limit", BT_BATCH_MAX_WORKERS, "http_threads_limit", BT_MAX_HTTP_THREADS,
        "max_rows", (long long)BT_DEFAULT_MAX_ROWS, "max_response_bytes",
        (Py_ssize_t)BT_DEFAULT_MAX_RESPONSE_BYTES, "max_body_bytes",
        (Py_ssize_t)BT_DEFAULT_MAX_BODY, "max_body_bytes_limit",
        (Py_ssize_t)BT_MAX_BODY_BYTES_LIMIT, "body_budget_factor", BT_DEFAULT_BODY_BUDGET_FACTOR,
        "per_ip_connections", BT_DEFAULT_PER_IP_CONNECTIONS, "connection_limit",
        BT_DEFAULT_CONNECTION_LIMIT, "idle_timeout_s", BT_DEFAULT_IDLE_TIMEOUT_S,
        "header_timeout_s", BT_DEFAULT_HEADER_TIMEOUT_S, "tls_priorities", BT_TLS_PRIORITIES,
        "max_batch_size", batch.max_batch_size, "max_delay_ms", batch.max_delay_ms, "max_queue",
        batch.max_queue, "workers", batch.workers);
    if (!limits || PyModule_AddObject(module, "SERVING_DEFAULTS", limits) != 0) {
        Py_XDECREF(limits);
        return -1;
    }
    PyTypeObject *types[] = {&BatcherType, &BtServiceType};
    const char *names[] = {"Batcher", "Service"};
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
