/*
 * server.c - the libmicrohttpd transport around a registry (registry.h): framing checks,
 * connection limits and deadlines, bounded bodies, large bodies parsed off the HTTP
 * threads, suspend/resume while a batch runs, graceful shutdown. No Python here.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#define _GNU_SOURCE /* POLLRDHUP */
#include "serving/server.h"

#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* libmicrohttpd 0.9.75 parses HTTP/1.1 leniently; berth refuses, before routing, what could
 * let a request be read two ways (see check_headers), bounds connections per client and
 * the memory of unfinished bodies, and parses large bodies off the HTTP threads. */

typedef struct conn_ctx conn_ctx;

/* One open connection, for the header deadline: until its first request head is in, the
 * reaper shuts the socket down when the deadline passes (libmicrohttpd's own timeout is
 * reset by every byte, so a client sending one byte at a time would never meet it). */
typedef struct sock_ctx {
    struct sock_ctx *prev, *next;
    int fd;          /* -1 once shut down */
    double deadline; /* bt_now() seconds */
    _Atomic int headed;
} sock_ctx;

struct bt_server {
    bt_registry *reg;
    struct MHD_Daemon *daemon;
    bt_server_params params;
    char *cert;
    char *key;
    int port;
    _Atomic int64_t inflight;    /* requests begun (a conn_ctx alive) */
    _Atomic int64_t suspended;   /* connections suspended and not yet resumed */
    _Atomic int64_t connections; /* open connections */
    _Atomic size_t body_bytes;   /* reserved by unfinished bodies, against body_budget */
    _Atomic int draining;
    int quiesced;
    pthread_mutex_t mu; /* drain and free */
    /* The parse thread: bodies over BT_INLINE_PARSE_BYTES are parsed here. */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    conn_ctx *phead, *ptail;
    int pstop;
    int parser_started;
    pthread_t parser;
    /* Open connections and the reaper that enforces the header deadline. */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    sock_ctx *socks;
    int rstop;
    int reaper_started;
    pthread_t reaper;
};

struct conn_ctx {
    bt_server *srv;
    struct MHD_Connection *conn;
    int started;  /* the handler has seen this request */
    int bad_path; /* the raw URI holds a control byte, plain or percent-encoded */
    int close;    /* answer with Connection: close */
    bt_buf body;
    size_t reserved;   /* bytes of body_budget held */
    size_t expected;   /* Content-Length + 1; 0 when chunked */
    int refused;       /* 413 or 503: a chunked body crossed a limit; the rest is discarded */
    size_t discarded;  /* bytes dropped since */
    _Atomic int state; /* 0 receiving, 1 waiting for the parse or the batch, 2 response ready */
    bt_http_response resp;
    double start;
    /* Copies for the parse thread (the connection's strings live only in its callbacks). */
    char *method, *path, *content_type, *authorization, *header_length, *content_encoding;
    conn_ctx *pnext;
    double received; /* when the body was complete */
};

static void body_release(conn_ctx *c)
{
    bt_buf_free(&c->body);
    if (c->reserved) {
        atomic_fetch_sub(&c->srv->body_bytes, c->reserved);
        c->reserved = 0;
    }
}

/* Reserves `bytes` more of the budget for unfinished bodies; 0, or -1 when it is spent. */
static int body_reserve(conn_ctx *c, size_t bytes)
{
    size_t now = atomic_fetch_add(&c->srv->body_bytes, bytes) + bytes;
    if (now > c->srv->params.body_budget) {
        atomic_fetch_sub(&c->srv->body_bytes, bytes);
        return -1;
    }
    c->reserved += bytes;
    return 0;
}

/* Appends n bytes, growing the buffer as data arrives (never from what Content-Length
 * claims). -1 when the budget is spent, -2 out of memory. */
static int body_append(conn_ctx *c, const char *data, size_t n)
{
    size_t need = c->body.len + n + 1;
    if (need > c->body.cap) {
        size_t cap = c->body.cap ? c->body.cap : 16384;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        size_t limit = c->expected ? c->expected : c->srv->params.max_body_bytes + 1;
        if (cap > limit)
            cap = limit > need ? limit : need;
        if (cap > c->reserved && body_reserve(c, cap - c->reserved) != 0)
            return -1;
        char *p = realloc(c->body.data, cap);
        if (!p)
            return -2;
        c->body.data = p;
        c->body.cap = cap;
    }
    memcpy(c->body.data + c->body.len, data, n);
    c->body.len += n;
    c->body.data[c->body.len] = '\0';
    return 0;
}

static enum MHD_Result send_response(conn_ctx *c)
{
    bt_http_response *r = &c->resp;
    bt_http_response_compress(
        r, MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
    struct MHD_Response *mr = MHD_create_response_from_buffer(
        r->body.len, r->body.len ? r->body.data : NULL,
        r->body.len ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!mr)
        return MHD_NO;
    if (r->body.len)
        memset(&r->body, 0, sizeof r->body); /* MHD frees it now */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (r->header_length >= 0) {
        char v[32];
        snprintf(v, sizeof v, "%lld", r->header_length);
        MHD_add_response_header(mr, "Inference-Header-Content-Length", v);
    }
    if (r->retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", r->retry_after);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (r->www_authenticate)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->allow)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->content_encoding)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_ENCODING, r->content_encoding);
    if (atomic_load(&c->srv->draining) || c->close)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c->conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ok;
}

/* Answers now with status and message, recorded, closing the connection after. */
static enum MHD_Result refuse(conn_ctx *c, const char *url, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result refuse(conn_ctx *c, const char *url, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bt_response_init(&c->resp);
    bt_response_error(&c->resp, status, msg);
    if (status == 503)
        c->resp.retry_after = 1;
    c->close = 1;
    body_release(c);
    bt_registry_record(c->srv->reg, url, status, bt_now() - c->start);
    atomic_store(&c->state, 2);
    return send_response(c);
}

static void resume(conn_ctx *c)
{
    bt_server *srv = c->srv;
    atomic_store(&c->state, 2);
    MHD_resume_connection(c->conn);
    atomic_fetch_sub(&srv->suspended, 1); /* c may be gone now */
}

static void on_job_done(void *ctx, bt_http_response *resp)
{
    conn_ctx *c = ctx;
    c->resp = *resp;
    memset(&resp->body, 0, sizeof resp->body);
    resume(c);
}

/* What the request's headers say about its body, counted over every header line. */
typedef struct header_scan {
    int n_length, n_encoding, n_host;
    const char *length, *encoding;
    const char *bad_name; /* a header name with a space, tab or control byte */
} header_scan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key_size;
    (void)value_size;
    header_scan *h = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        h->n_length++;
        h->length = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        h->n_encoding++;
        h->encoding = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        h->n_host++;
    }
    for (const unsigned char *p = (const unsigned char *)key; *p && !h->bad_name; p++)
        if (*p <= 0x20 || *p == 0x7f)
            h->bad_name = key;
    return MHD_YES;
}

/* Refuses (400, then close) a request whose body could be framed two ways by two HTTP
 * parsers (request smuggling): several Content-Length headers, Content-Length with
 * Transfer-Encoding, a Transfer-Encoding other than chunked, a Content-Length that is not
 * a plain decimal number; also HTTP/1.1 without exactly one Host, and header names with
 * spaces or control bytes. Returns NULL when the headers are fine, else the reason. */
static const char *check_headers(struct MHD_Connection *conn, const char *version, char *why,
                                 size_t size)
{
    header_scan h = {0, 0, 0, NULL, NULL, NULL};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_header, &h);
    if (h.bad_name)
        snprintf(why, size, "malformed header name '%.40s'", h.bad_name);
    else if (h.n_length > 1)
        snprintf(why, size, "%d Content-Length headers: send one", h.n_length);
    else if (h.n_encoding && h.n_length)
        snprintf(why, size, "both Transfer-Encoding and Content-Length: send one");
    else if (h.n_encoding > 1 || (h.n_encoding && strcasecmp(h.encoding, "chunked") != 0))
        snprintf(why, size, "Transfer-Encoding '%.40s' is not supported: only chunked", h.encoding);
    else if (h.n_length && (!h.length[0] || strspn(h.length, "0123456789") != strlen(h.length)))
        snprintf(why, size, "Content-Length '%.40s' is not a non-negative decimal number",
                 h.length);
    else if (h.n_host != 1 && version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        snprintf(why, size, "HTTP/1.1 requests need exactly one Host header, got %d", h.n_host);
    else
        return NULL;
    return why;
}

/* The raw URI, before percent-decoding: a control byte (%00 truncates the decoded path,
 * %0A forges log lines) marks the request for a 400. Also allocates the request's context,
 * which libmicrohttpd hands to on_request and on_completed. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    bt_server *srv = cls;
    conn_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->conn = conn;
    c->start = bt_now();
    atomic_fetch_add(&srv->inflight, 1);
    /* libmicrohttpd ends the URI with a NUL where the space before "HTTP/1.x" was: a URI
     * that ends earlier held a NUL byte of its own (the request line is all in its buffer,
     * so the bytes after the terminator are there to read). */
    size_t len = strlen(uri);
    c->bad_path = strncmp(uri + len + 1, "HTTP/", 5) != 0;
    for (const char *p = uri; *p && !c->bad_path; p++) {
        unsigned char b = (unsigned char)*p;
        if (b == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            b = (unsigned char)strtol(hex, NULL, 16);
        }
        c->bad_path = b < 0x20 || b == 0x7f;
    }
    return c;
}

/* libmicrohttpd reports a connection closed before it closes the socket, so the reaper
 * (which holds smu) never shuts down a descriptor that was reused. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    bt_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&srv->connections, 1);
        sock_ctx *sc = calloc(1, sizeof *sc);
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!sc || !info) { /* untracked: libmicrohttpd's timeout still applies */
            free(sc);
            return;
        }
        sc->fd = info->connect_fd;
        sc->deadline = bt_now() + srv->params.header_timeout_s;
        pthread_mutex_lock(&srv->smu);
        sc->next = srv->socks;
        if (srv->socks)
            srv->socks->prev = sc;
        srv->socks = sc;
        pthread_mutex_unlock(&srv->smu);
        *socket_context = sc;
        return;
    }
    atomic_fetch_sub(&srv->connections, 1);
    sock_ctx *sc = *socket_context;
    if (!sc)
        return;
    pthread_mutex_lock(&srv->smu);
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        srv->socks = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    pthread_mutex_unlock(&srv->smu);
    free(sc);
    *socket_context = NULL;
}

/* Every 200 ms: shuts down connections past the header deadline, and those whose client
 * already closed. libmicrohttpd's edge-triggered epoll misses a FIN that arrives with the
 * last bytes of a half-sent head (2,200 clients that sent 60 bytes and closed sat in
 * CLOSE-WAIT until the timeout); after shutdown() it sees the end and closes them. */
static void *reaper_main(void *arg)
{
    bt_server *srv = arg;
    struct pollfd *polls = NULL;
    sock_ctx **which = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&srv->smu);
    while (!srv->rstop) {
        double now = bt_now();
        size_t n = 0;
        for (sock_ctx *sc = srv->socks; sc; sc = sc->next) {
            if (sc->fd < 0 || atomic_load(&sc->headed))
                continue;
            if (now > sc->deadline) {
                shutdown(sc->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
                sc->fd = -1;
                continue;
            }
            if (n == cap) {
                size_t grown = cap ? cap * 2 : 64;
                struct pollfd *p = realloc(polls, grown * sizeof *p);
                if (p)
                    polls = p;
                sock_ctx **w = p ? realloc(which, grown * sizeof *w) : NULL;
                if (w)
                    which = w;
                if (!p || !w)
                    continue; /* out of memory: this one waits for its deadline */
                cap = grown;
            }
            polls[n] = (struct pollfd){.fd = sc->fd, .events = POLLRDHUP};
            which[n++] = sc;
        }
        if (n > 0 && poll(polls, (nfds_t)n, 0) > 0) {
            for (size_t i = 0; i < n; i++) {
                if (polls[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
                    shutdown(which[i]->fd, SHUT_RDWR);
                    which[i]->fd = -1;
                }
            }
        }
        struct timespec ts;
        bt_deadline_in(&ts, 0.2);
        pthread_cond_timedwait(&srv->scv, &srv->smu, &ts);
    }
    pthread_mutex_unlock(&srv->smu);
    free(polls);
    free(which);
    return NULL;
}

static char *dup_or_null(const char *s, int *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

/* Hands a large body to the parse thread (the connection stays suspended meanwhile). */
static int defer_parse(conn_ctx *c, const char *method, const char *url)
{
    struct MHD_Connection *conn = c->conn;
    int oom = 0;
    c->method = dup_or_null(method, &oom);
    c->path = dup_or_null(url, &oom);
    c->content_type = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE), &oom);
    c->authorization = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &oom);
    c->header_length = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Inference-Header-Content-Length"),
        &oom);
    c->content_encoding = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING), &oom);
    if (oom)
        return -1;
    bt_server *srv = c->srv;
    c->received = bt_now();
    atomic_store(&c->state, 1);
    atomic_fetch_add(&srv->suspended, 1);
    MHD_suspend_connection(conn);
    pthread_mutex_lock(&srv->pmu);
    c->pnext = NULL;
    if (srv->ptail)
        srv->ptail->pnext = c;
    else
        srv->phead = c;
    srv->ptail = c;
    pthread_cond_signal(&srv->pcv);
    pthread_mutex_unlock(&srv->pmu);
    return 0;
}

static void *parser_main(void *arg)
{
    bt_server *srv = arg;
    pthread_mutex_lock(&srv->pmu);
    for (;;) {
        while (!srv->phead && !srv->pstop)
            pthread_cond_wait(&srv->pcv, &srv->pmu);
        conn_ctx *c = srv->phead;
        if (!c)
            break;
        srv->phead = c->pnext;
        if (!srv->phead)
            srv->ptail = NULL;
        pthread_mutex_unlock(&srv->pmu);
        bt_http_request req = {.method = c->method,
                               .path = c->path,
                               .content_type = c->content_type,
                               .authorization = c->authorization,
                               .header_length = c->header_length,
                               .content_encoding = c->content_encoding,
                               .body = c->body.data,
                               .body_len = c->body.len,
                               .max_body = srv->params.max_body_bytes,
                               .received = c->received};
        bt_call call;
        int rc = bt_registry_begin(srv->reg, &req, &c->resp, &call);
        body_release(c);
        if (rc == 0)
            resume(c);
        else
            bt_registry_submit(srv->reg, &call, on_job_done, c);
        pthread_mutex_lock(&srv->pmu);
    }
    pthread_mutex_unlock(&srv->pmu);
    return NULL;
}

/* The first call for a request: its headers are all in. */
static enum MHD_Result begin_request(conn_ctx *c, const char *url, const char *version)
{
    bt_server *srv = c->srv;
    struct MHD_Connection *conn = c->conn;
    c->started = 1;
    /* A connection that sent a whole request head gets the idle timeout (once: libmicrohttpd
     * keeps such connections on a list it walks); until then the header deadline (the
     * reaper) and the shorter timeout set on the daemon apply. */
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    sock_ctx *sc = info ? info->socket_context : NULL;
    if (!sc || !atomic_load(&sc->headed)) {
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)srv->params.idle_timeout_s);
        if (sc)
            atomic_store(&sc->headed, 1);
    }
    char why[160];
    if (check_headers(conn, version, why, sizeof why))
        return refuse(c, url, 400, "%s", why);
    if (c->bad_path)
        return refuse(c, url, 400, "the path contains a control byte (after percent-decoding)");
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        errno = 0;
        unsigned long long n = strtoull(cl, NULL, 10);
        if (errno || n > srv->params.max_body_bytes)
            return refuse(c, url, 413,
                          "request body of %s bytes is over the limit of %zu bytes "
                          "(--max-body-mb)",
                          cl, srv->params.max_body_bytes);
        /* Held against the budget from now on (but not allocated before it arrives). */
        c->expected = (size_t)n + 1;
        if (n > 0 && body_reserve(c, c->expected) != 0)
            return refuse(c, url, 503,
                          "the server holds too many unfinished request bodies "
                          "(--max-pending-body-mb): retry later");
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    conn_ctx *c = *con_cls;
    if (!c)
        return MHD_NO; /* out of memory in on_uri */
    if (!c->started)
        return begin_request(c, url, version);
    if (atomic_load(&c->state) == 2)
        return send_response(c);
    bt_server *srv = c->srv;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* Only a chunked body gets here over the limits (a Content-Length was checked
         * first). Its memory goes at once. libmicrohttpd 0.9.75 can answer only before or
         * after a body, so up to another max_body_bytes are read and dropped for the 413 or
         * 503 to be sent after the body; past that the connection is closed. */
        if (c->refused) {
            c->discarded += n;
            if (c->discarded <= srv->params.max_body_bytes)
                return MHD_YES;
            bt_registry_record(srv->reg, url, c->refused, bt_now() - c->start);
            return MHD_NO;
        }
        int rc = c->body.len + n > srv->params.max_body_bytes ? 413
                 : body_append(c, upload_data, n) != 0        ? 503
                                                              : 0;
        if (rc) {
            c->refused = rc;
            body_release(c);
        }
        return MHD_YES;
    }
    if (c->refused == 413)
        return refuse(c, url, 413, "request body is over the limit of %zu bytes (--max-body-mb)",
                      srv->params.max_body_bytes);
    if (c->refused)
        return refuse(c, url, 503,
                      "the server holds too many unfinished request bodies, or "
                      "is out of memory: retry later");
    if (c->body.len > BT_INLINE_PARSE_BYTES && defer_parse(c, method, url) == 0)
        return MHD_YES;
    bt_http_request req = {
        .method = method,
        .path = url,
        .content_type =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .authorization =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .header_length =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Inference-Header-Content-Length"),
        .content_encoding =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING),
        .body = c->body.data,
        .body_len = c->body.len,
        .max_body = srv->params.max_body_bytes,
    };
    bt_call call;
    if (bt_registry_begin(srv->reg, &req, &c->resp, &call) == 0) {
        body_release(c);
        atomic_store(&c->state, 2);
        return send_response(c);
    }
    body_release(c); /* the job holds its own tensors */
    atomic_store(&c->state, 1);
    atomic_fetch_add(&srv->suspended, 1);
    MHD_suspend_connection(conn);
    bt_registry_submit(srv->reg, &call, on_job_done, c);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    bt_server *srv = cls;
    conn_ctx *c = *con_cls;
    if (!c)
        return;
    body_release(c);
    bt_buf_free(&c->resp.body);
    free(c->method);
    free(c->path);
    free(c->content_type);
    free(c->authorization);
    free(c->header_length);
    free(c->content_encoding);
    free(c);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->inflight, 1);
}

static void read_pem_free(bt_server *srv)
{
    free(srv->cert);
    free(srv->key);
}

static void server_release(bt_server *srv)
{
    if (srv->reaper_started) {
        pthread_mutex_lock(&srv->smu);
        srv->rstop = 1;
        pthread_cond_signal(&srv->scv);
        pthread_mutex_unlock(&srv->smu);
        pthread_join(srv->reaper, NULL);
    }
    if (srv->parser_started) {
        pthread_mutex_lock(&srv->pmu);
        srv->pstop = 1;
        pthread_cond_signal(&srv->pcv);
        pthread_mutex_unlock(&srv->pmu);
        pthread_join(srv->parser, NULL);
    }
    pthread_cond_destroy(&srv->pcv);
    pthread_mutex_destroy(&srv->pmu);
    pthread_cond_destroy(&srv->scv);
    pthread_mutex_destroy(&srv->smu);
    pthread_mutex_destroy(&srv->mu);
    read_pem_free(srv);
    free(srv);
}

int bt_server_start(bt_registry *reg, const bt_server_params *params, bt_server **out,
                    bt_error *err)
{
    *out = NULL;
    if (params->port < 0 || params->port > 65535)
        return bt_error_set(err, BT_ERR_VALUE, "port must be between 0 and 65535, got %d",
                            params->port);
    if (params->threads < 1 || params->threads > BT_MAX_HTTP_THREADS)
        return bt_error_set(err, BT_ERR_VALUE, "threads must be between 1 and %d, got %d",
                            BT_MAX_HTTP_THREADS, params->threads);
    if (params->max_body_bytes < 1 || params->max_body_bytes > BT_MAX_BODY_BYTES_LIMIT)
        return bt_error_set(err, BT_ERR_VALUE, "max_body_bytes must be between 1 and %zu, got %zu",
                            BT_MAX_BODY_BYTES_LIMIT, params->max_body_bytes);
    if (!params->tls_cert != !params->tls_key)
        return bt_error_set(err, BT_ERR_VALUE,
                            "HTTPS needs both a certificate and a key (--tls-cert and --tls-key)");
    bt_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    srv->reg = reg;
    srv->params = *params;
    srv->params.host = NULL;
    bt_server_params *p = &srv->params;
    if (p->connection_limit <= 0)
        p->connection_limit = BT_DEFAULT_CONNECTION_LIMIT;
    if (p->idle_timeout_s <= 0)
        p->idle_timeout_s = BT_DEFAULT_IDLE_TIMEOUT_S;
    if (p->header_timeout_s <= 0)
        p->header_timeout_s = BT_DEFAULT_HEADER_TIMEOUT_S;
    if (p->per_ip_connections <= 0)
        p->per_ip_connections = BT_DEFAULT_PER_IP_CONNECTIONS;
    if (p->body_budget == 0)
        p->body_budget = p->max_body_bytes > SIZE_MAX / BT_DEFAULT_BODY_BUDGET_FACTOR
                             ? SIZE_MAX
                             : p->max_body_bytes * BT_DEFAULT_BODY_BUDGET_FACTOR;
    if (p->body_budget < p->max_body_bytes + 1)
        p->body_budget = p->max_body_bytes + 1; /* one largest body always fits */
    pthread_mutex_init(&srv->mu, NULL);
    pthread_mutex_init(&srv->pmu, NULL);
    pthread_cond_init(&srv->pcv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&srv->smu, NULL);
    pthread_cond_init(&srv->scv, &ca);
    pthread_condattr_destroy(&ca);
    if (params->tls_cert) {
        srv->cert = strdup(params->tls_cert);
        srv->key = strdup(params->tls_key);
        if (!srv->cert || !srv->key) {
            server_release(srv);
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        }
    }
    int e = pthread_create(&srv->parser, NULL, parser_main, srv);
    if (e != 0) {
        server_release(srv);
        return bt_error_set(err, BT_ERR_INTERNAL, "cannot start the parse thread: %s", strerror(e));
    }
    srv->parser_started = 1;
    e = pthread_create(&srv->reaper, NULL, reaper_main, srv);
    if (e != 0) {
        server_release(srv);
        return bt_error_set(err, BT_ERR_INTERNAL, "cannot start the header-deadline thread: %s",
                            strerror(e));
    }
    srv->reaper_started = 1;

    char port[16];
    snprintf(port, sizeof port, "%d", params->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    const char *host = params->host && params->host[0] ? params->host : "0.0.0.0";
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0 || !res) {
        server_release(srv);
        return bt_error_set(err, BT_ERR_VALUE, "cannot use host '%.200s': %s", host,
                            gai_strerror(gai));
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (srv->cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[16];
    int k = 0;
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, res->ai_addr};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, srv};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, srv};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, p->connection_limit, NULL};
    opts[k++] =
        (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, p->per_ip_connections, NULL};
    /* The daemon-wide timeout is the header timeout; begin_request raises it to the idle
     * timeout once a connection has sent a request head. */
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, p->header_timeout_s, NULL};
    if (params->threads > 1)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, params->threads, NULL};
    if (srv->cert) {
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, srv->cert};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->key};
        opts[k++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)BT_TLS_PRIORITIES};
    }
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_ARRAY, opts,
                                   MHD_OPTION_END);
    freeaddrinfo(res);
    if (!srv->daemon) {
        int e2 = errno;
        server_release(srv);
        if (params->tls_cert)
            return bt_error_set(err, BT_ERR_VALUE,
                                "cannot start HTTPS on %.200s:%d: the TLS certificate and key "
                                "must be PEM text of a certificate and its matching private key"
                                "%s%s",
                                host, params->port, e2 ? "; or the address failed: " : "",
                                e2 ? strerror(e2) : "");
        return bt_error_set(err, BT_ERR_VALUE, "cannot listen on %.200s:%d: %s", host, params->port,
                            e2 ? strerror(e2) : "the address is not usable");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : params->port;
    *out = srv;
    return 0;
}

int bt_server_port(const bt_server *srv) { return srv->port; }

static int settled(bt_server *srv)
{
    return atomic_load(&srv->inflight) == 0 && atomic_load(&srv->suspended) == 0;
}

void bt_server_drain(bt_server *srv, double grace_s)
{
    pthread_mutex_lock(&srv->mu);
    bt_registry_drain(srv->reg);
    atomic_store(&srv->draining, 1);
    double deadline = bt_now() + (grace_s > 0 ? grace_s : 0);
    while (!settled(srv) && bt_now() < deadline)
        bt_sleep_ms(5);
    /* Keep-alive clients get Connection: close with their answers; give them a moment to
     * close before the listener does, so that nothing arrives on a closing connection. */
    double settle = bt_now() + 0.25 < deadline ? bt_now() + 0.25 : deadline;
    while (atomic_load(&srv->connections) > 0 && settled(srv) && bt_now() < settle)
        bt_sleep_ms(5);
    if (!settled(srv))
        bt_registry_expire_all(srv->reg); /* the grace period is over: 503 to what is left */
    if (!srv->quiesced) {
        MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        srv->quiesced = 1;
    }
    double flush = bt_now() + 1.0;
    while (!settled(srv) && bt_now() < flush) {
        if (atomic_load(&srv->suspended) > 0 && bt_now() >= deadline)
            bt_registry_expire_all(srv->reg);
        bt_sleep_ms(5);
    }
    pthread_mutex_unlock(&srv->mu);
}

void bt_server_free(bt_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->mu);
    /* No connection may stay suspended when the daemon stops (libmicrohttpd aborts):
     * forwards get a moment to finish, then what is left is answered 503. */
    double patience = bt_now() + 2.0;
    while (atomic_load(&srv->suspended) > 0) {
        if (bt_now() >= patience)
            bt_registry_expire_all(srv->reg);
        bt_sleep_ms(5);
    }
    MHD_stop_daemon(srv->daemon);
    pthread_mutex_unlock(&srv->mu);
    server_release(srv);
}
