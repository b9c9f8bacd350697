/*
 * registry.c - the models a server serves, by name and version; the server's own
 * endpoints; the repository extension's requests queued for their handler.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "serving/registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef BERTH_SERVER_VERSION
#define BERTH_SERVER_VERSION "0.1.0"
#endif

/* One version served. holds: threads between finding it and the end of their
 * bt_service_begin (after which the service's own pending count covers the request). */
typedef struct entry {
    bt_service *svc;
    int64_t version;
    _Atomic int holds;
} entry;

struct bt_control {
    uint64_t id;
    int ep;
    char *model;
    char *body;
    size_t body_len;
    char *log_line;
    double start;
    bt_response_fn done;
    void *ctx;
    bt_control *next;
};

struct bt_registry {
    char *token;
    size_t token_len;
    int log_requests;
    int strict;
    int control;
    pthread_rwlock_t lock; /* entries */
    entry **entries;       /* by name, then version */
    size_t n, cap;
    pthread_mutex_t reason_mu;
    _Atomic int loaded;
    char reason[512];
    _Atomic int draining;
    bt_traffic traffic;
    /* Control requests: queued until taken, then waiting for their answer. */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    bt_control *queue, *queue_tail, *taken;
    uint64_t next_id;
    int stopping;
};

int bt_registry_create(const bt_registry_params *params, bt_registry **out, bt_error *err)
{
    *out = NULL;
    bt_registry *reg = calloc(1, sizeof *reg);
    if (!reg)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    if (params->auth_token && params->auth_token[0]) {
        reg->token = strdup(params->auth_token);
        if (!reg->token) {
            free(reg);
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        }
        reg->token_len = strlen(reg->token);
    }
    reg->log_requests = params->log_requests;
    reg->strict = params->strict_readiness;
    reg->control = params->control;
    atomic_store(&reg->loaded, 1);
    pthread_rwlock_init(&reg->lock, NULL);
    pthread_mutex_init(&reg->reason_mu, NULL);
    pthread_mutex_init(&reg->cmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&reg->ccv, &ca);
    pthread_condattr_destroy(&ca);
    bt_traffic_init(&reg->traffic);
    *out = reg;
    return 0;
}

static void control_free(bt_control *c)
{
    free(c->model);
    free(c->body);
    free(c->log_line);
    free(c);
}

void bt_registry_free(bt_registry *reg)
{
    if (!reg)
        return;
    bt_registry_expire_all(reg);
    for (size_t i = 0; i < reg->n; i++)
        free(reg->entries[i]);
    free(reg->entries);
    pthread_rwlock_destroy(&reg->lock);
    pthread_mutex_destroy(&reg->reason_mu);
    pthread_cond_destroy(&reg->ccv);
    pthread_mutex_destroy(&reg->cmu);
    free(reg->token);
    free(reg);
}

/* ------------------------------------------------------------------ versions */

static int entry_cmp(const entry *e, const char *name, size_t name_len, int64_t version)
{
    const char *en = bt_service_name(e->svc);
    size_t el = strlen(en), k = el < name_len ? el : name_len;
    int c = memcmp(en, name, k);
    if (c)
        return c;
    if (el != name_len)
        return el < name_len ? -1 : 1;
    return e->version < version ? -1 : e->version > version;
}

/* Index of the first entry of name (n when none); under the lock. */
static size_t first_of(bt_registry *reg, const char *name, size_t name_len)
{
    size_t i = 0;
    while (i < reg->n && entry_cmp(reg->entries[i], name, name_len, 0) < 0)
        i++;
    return i;
}

static int same_name(const entry *e, const char *name, size_t name_len)
{
    const char *en = bt_service_name(e->svc);
    return strlen(en) == name_len && memcmp(en, name, name_len) == 0;
}

/* Tells every version of name which versions the model has (metadata lists them). */
static void publish_versions(bt_registry *reg, const char *name)
{
    size_t len = strlen(name), i = first_of(reg, name, len), n = 0;
    int64_t versions[256];
    for (size_t k = i; k < reg->n && same_name(reg->entries[k], name, len) && n < 256; k++)
        versions[n++] = reg->entries[k]->version;
    for (size_t k = i; k < reg->n && same_name(reg->entries[k], name, len); k++)
        bt_service_set_versions(reg->entries[k]->svc, versions, n);
}

int bt_registry_add(bt_registry *reg, bt_service *svc, bt_error *err)
{
    const char *name = bt_service_name(svc);
    int64_t version = strtoll(bt_service_version(svc), NULL, 10);
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    e->svc = svc;
    e->version = version;
    pthread_rwlock_wrlock(&reg->lock);
    size_t i = 0;
    while (i < reg->n && entry_cmp(reg->entries[i], name, strlen(name), version) < 0)
        i++;
    if (i < reg->n && entry_cmp(reg->entries[i], name, strlen(name), version) == 0) {
        pthread_rwlock_unlock(&reg->lock);
        free(e);
        return bt_error_set(err, BT_ERR_VALUE, "model '%.200s' version %lld is served already",
                            name, (long long)version);
    }
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 8;
        entry **p = realloc(reg->entries, cap * sizeof *p);
        if (!p) {
            pthread_rwlock_unlock(&reg->lock);
            free(e);
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        }
        reg->entries = p;
        reg->cap = cap;
    }
    memmove(reg->entries + i + 1, reg->entries + i, (reg->n - i) * sizeof *reg->entries);
    reg->entries[i] = e;
    reg->n++;
    publish_versions(reg, name);
    pthread_rwlock_unlock(&reg->lock);
    return 0;
}

/* Waits until no request holds e, then until its service's requests are answered (503
 * to those left past grace_s); frees e and returns the service. */
static bt_service *drain_entry(entry *e, double grace_s)
{
    while (atomic_load(&e->holds) > 0)
        bt_sleep_ms(1);
    bt_service *svc = e->svc;
    free(e);
    double deadline = bt_now() + (grace_s > 0 ? grace_s : 0);
    while (bt_service_pending(svc) > 0 && bt_now() < deadline)
        bt_sleep_ms(2);
    if (bt_service_pending(svc) > 0)
        bt_service_expire_all(svc);
    while (bt_service_pending(svc) > 0)
        bt_sleep_ms(2);
    return svc;
}

/* Index of name/version among the entries (n when not there); under the lock. */
static size_t index_of(bt_registry *reg, const char *name, int64_t version)
{
    size_t i = 0;
    while (i < reg->n && entry_cmp(reg->entries[i], name, strlen(name), version) != 0)
        i++;
    return i;
}

bt_service *bt_registry_remove(bt_registry *reg, const char *name, int64_t version, double grace_s)
{
    pthread_rwlock_wrlock(&reg->lock);
    size_t i = index_of(reg, name, version);
    if (i == reg->n) {
        pthread_rwlock_unlock(&reg->lock);
        return NULL;
    }
    entry *e = reg->entries[i];
    memmove(reg->entries + i, reg->entries + i + 1, (reg->n - i - 1) * sizeof *reg->entries);
    reg->n--;
    publish_versions(reg, name);
    pthread_rwlock_unlock(&reg->lock);
    return drain_entry(e, grace_s);
}

bt_service *bt_registry_replace(bt_registry *reg, bt_service *svc, double grace_s, bt_error *err)
{
    const char *name = bt_service_name(svc);
    int64_t version = strtoll(bt_service_version(svc), NULL, 10);
    entry *fresh = calloc(1, sizeof *fresh);
    if (!fresh) {
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        return NULL;
    }
    fresh->svc = svc;
    fresh->version = version;
    pthread_rwlock_wrlock(&reg->lock);
    size_t i = index_of(reg, name, version);
    if (i == reg->n) {
        pthread_rwlock_unlock(&reg->lock);
        free(fresh);
        bt_error_set(err, BT_ERR_VALUE, "model '%.200s' version %lld is not served", name,
                     (long long)version);
        return NULL;
    }
    entry *old = reg->entries[i];
    reg->entries[i] = fresh;
    publish_versions(reg, name);
    pthread_rwlock_unlock(&reg->lock);
    return drain_entry(old, grace_s);
}

size_t bt_registry_count(bt_registry *reg)
{
    pthread_rwlock_rdlock(&reg->lock);
    size_t n = reg->n;
    pthread_rwlock_unlock(&reg->lock);
    return n;
}

void bt_registry_set_loaded(bt_registry *reg, int loaded, const char *reason)
{
    pthread_mutex_lock(&reg->reason_mu);
    snprintf(reg->reason, sizeof reg->reason, "%s", reason ? reason : "");
    atomic_store(&reg->loaded, loaded != 0);
    pthread_mutex_unlock(&reg->reason_mu);
}

/* 1 when ready; else 0 with the reason in why. */
static int readiness(bt_registry *reg, char *why, size_t size)
{
    if (atomic_load(&reg->draining)) {
        snprintf(why, size, "not ready: the server is shutting down");
        return 0;
    }
    if (!reg->strict)
        return 1;
    if (!atomic_load(&reg->loaded)) {
        pthread_mutex_lock(&reg->reason_mu);
        snprintf(why, size, "%s", reg->reason[0] ? reg->reason : "not ready: models are loading");
        pthread_mutex_unlock(&reg->reason_mu);
        return 0;
    }
    int ready = 1;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->n && ready; i++) {
        bt_service *svc = reg->entries[i]->svc;
        if (!bt_service_ready(svc)) {
            ready = 0;
            if (reg->n == 1)
                snprintf(why, size, "%s", bt_service_ready_reason(svc));
            else
                snprintf(why, size, "model '%s' version %s is %s", bt_service_name(svc),
                         bt_service_version(svc), bt_service_ready_reason(svc));
        }
    }
    pthread_rwlock_unlock(&reg->lock);
    return ready;
}

int bt_registry_ready(bt_registry *reg)
{
    char why[8];
    return readiness(reg, why, sizeof why);
}

void bt_registry_drain(bt_registry *reg)
{
    atomic_store(&reg->draining, 1);
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->n; i++)
        bt_service_set_ready(reg->entries[i]->svc, 0);
    pthread_rwlock_unlock(&reg->lock);
}

/* ------------------------------------------------------------------ requests */

static void finish(bt_registry *reg, int ep, double start, const bt_http_request *req,
                   const bt_http_response *resp)
{
    bt_traffic_finish(&reg->traffic, reg->log_requests, ep, start, req, resp->status);
}

void bt_registry_record(bt_registry *reg, const char *path, int status, double seconds)
{
    bt_route r;
    bt_route_path(path, &r);
    bt_traffic_record(&reg->traffic, r.ep, status, seconds);
}

/* The names served, quoted, for error messages; under the lock. */
static void names_served(bt_registry *reg, char *out, size_t size)
{
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < reg->n && k + 80 < size; i++) {
        const char *name = bt_service_name(reg->entries[i]->svc);
        if (i && strcmp(name, bt_service_name(reg->entries[i - 1]->svc)) == 0)
            continue;
        k += (size_t)snprintf(out + k, size - k, "%s'%.64s'", k ? ", " : "", name);
    }
    if (!reg->n)
        snprintf(out, size, "no models");
}

/* "1, 2, 3" for name's versions; under the lock. */
static void versions_of(bt_registry *reg, size_t first, const bt_route *r, char *out, size_t size,
                        size_t *count)
{
    size_t k = 0, n = 0;
    out[0] = '\0';
    for (size_t i = first; i < reg->n && same_name(reg->entries[i], r->name, r->name_len); i++) {
        if (k + 24 < size)
            k += (size_t)snprintf(out + k, size - k, "%s%lld", n ? ", " : "",
                                  (long long)reg->entries[i]->version);
        n++;
    }
    *count = n;
}

/* A version in a path: digits, no sign, no leading zero; -1 otherwise. */
static int64_t parse_version(const char *s, size_t n)
{
    if (n == 0 || n > 18 || s[0] == '0')
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The version r asks for, with a hold taken: the one named, else the newest ready one,
 * else the newest. NULL with resp set when there is none. */
static entry *find(bt_registry *reg, const bt_route *r, int authorized, bt_http_response *resp)
{
    entry *found = NULL;
    pthread_rwlock_rdlock(&reg->lock);
    size_t i = first_of(reg, r->name, r->name_len);
    if (i == reg->n || !same_name(reg->entries[i], r->name, r->name_len)) {
        char names[1024];
        names_served(reg, names, sizeof names);
        if (authorized)
            bt_response_errorf(resp, 404, "model '%.*s' not found: this server serves %s",
                               (int)(r->name_len > 200 ? 200 : r->name_len), r->name, names);
        else
            bt_response_errorf(resp, 404, "model '%.*s' not found",
                               (int)(r->name_len > 200 ? 200 : r->name_len), r->name);
        pthread_rwlock_unlock(&reg->lock);
        return NULL;
    }
    if (r->version) {
        int64_t v = parse_version(r->version, r->version_len);
        for (size_t k = i; v > 0 && k < reg->n && same_name(reg->entries[k], r->name, r->name_len);
             k++)
            if (reg->entries[k]->version == v)
                found = reg->entries[k];
        if (!found) {
            char versions[512];
            size_t count;
            versions_of(reg, i, r, versions, sizeof versions, &count);
            bt_response_errorf(resp, 404, "model '%.*s' has no version '%.*s': its %s %s",
                               (int)(r->name_len > 200 ? 200 : r->name_len), r->name,
                               (int)(r->version_len > 64 ? 64 : r->version_len), r->version,
                               count == 1 ? "only version is" : "versions are", versions);
        }
    } else {
        for (size_t k = i; k < reg->n && same_name(reg->entries[k], r->name, r->name_len); k++)
            if (!found || bt_service_ready(reg->entries[k]->svc) || !bt_service_ready(found->svc))
                found = reg->entries[k];
    }
    if (found)
        atomic_fetch_add(&found->holds, 1);
    pthread_rwlock_unlock(&reg->lock);
    return found;
}

static void server_metadata(bt_registry *reg, bt_buf *b)
{
    bt_buf_puts(b, "{\"name\":\"berth\",\"version\":\"" BERTH_SERVER_VERSION
                   "\",\"extensions\":[\"binary_tensor_data\",\"model_configuration\","
                   "\"statistics\"");
    if (reg->control)
        bt_buf_puts(b, ",\"model_repository\"");
    bt_buf_puts(b, "]}");
}

/* /v2/models/stats, or /v2/models/{name}/stats without a version: every version's. */
static int all_stats(bt_registry *reg, const bt_route *r, bt_http_response *resp)
{
    int any = 0;
    bt_buf_puts(&resp->body, "{\"model_stats\":[");
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->n; i++) {
        if (r->name && !same_name(reg->entries[i], r->name, r->name_len))
            continue;
        if (any++)
            bt_buf_puts(&resp->body, ",");
        bt_service_stats_json(reg->entries[i]->svc, &resp->body);
    }
    pthread_rwlock_unlock(&reg->lock);
    bt_buf_puts(&resp->body, "]}");
    return any;
}

static int begin_control(bt_registry *reg, const bt_route *r, const bt_http_request *req,
                         double start, bt_http_response *resp, bt_call *call)
{
    bt_control *c = calloc(1, sizeof *c);
    if (c) {
        c->ep = r->ep;
        c->start = start;
        c->model = r->name ? strndup(r->name, r->name_len) : strdup("");
        c->body = malloc(req->body_len + 1);
        c->body_len = req->body_len;
        if (c->body) {
            if (req->body_len)
                memcpy(c->body, req->body, req->body_len);
            c->body[req->body_len] = '\0';
        }
        if (reg->log_requests) {
            size_t l = strlen(req->path) + 24;
            c->log_line = malloc(l);
            if (c->log_line)
                snprintf(c->log_line, l, "%.16s %s", req->method, req->path);
        }
    }
    if (!c || !c->model || !c->body) {
        if (c)
            control_free(c);
        bt_response_error(resp, 500, "out of memory");
        finish(reg, r->ep, start, req, resp);
        return 0;
    }
    call->control = c;
    return 1;
}

int bt_registry_begin(bt_registry *reg, const bt_http_request *req, bt_http_response *resp,
                      bt_call *call)
{
    memset(call, 0, sizeof *call);
    bt_response_init(resp);
    double start = req->received > 0 ? req->received : bt_now();
    bt_route r;
    bt_route_path(req->path, &r);
    for (const unsigned char *p = (const unsigned char *)req->path; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            bt_response_errorf(resp, 400, "the path contains the control byte 0x%02x", *p);
            finish(reg, BT_EP_OTHER, start, req, resp);
            return 0;
        }
    }
    /* Auth before anything that could name a model (a 404 would reveal it). */
    int open_ep = r.ep == BT_EP_LIVE || r.ep == BT_EP_READY || r.ep == BT_EP_MODEL_READY;
    int authorized = bt_token_ok(reg->token, reg->token_len, req->authorization);
    if (!open_ep && !authorized) {
        bt_response_unauthorized(resp, req->authorization);
        finish(reg, r.ep, start, req, resp);
        return 0;
    }
    int is_repo = r.ep == BT_EP_REPO_INDEX || r.ep == BT_EP_REPO_LOAD || r.ep == BT_EP_REPO_UNLOAD;
    if (r.ep == BT_EP_OTHER || (is_repo && !reg->control)) {
        const char *one = "{name}";
        pthread_rwlock_rdlock(&reg->lock);
        if (reg->n > 0 && same_name(reg->entries[reg->n - 1], bt_service_name(reg->entries[0]->svc),
                                    strlen(bt_service_name(reg->entries[0]->svc))))
            one = bt_service_name(reg->entries[0]->svc); /* valid while a request holds it */
        char hint[1200];
        snprintf(hint, sizeof hint,
                 "see /v2, /v2/models/%.64s, /v2/models/%.64s/infer, /v2/models/%.64s/config, "
                 "/v2/models/%.64s/stats, /v1/models/%.64s:predict",
                 one, one, one, one, one);
        pthread_rwlock_unlock(&reg->lock);
        if (is_repo)
            bt_response_errorf(resp, 404,
                               "no such endpoint: %.16s %.200s (the model repository "
                               "extension is off here)",
                               req->method, req->path);
        else
            bt_response_errorf(resp, 404, "no such endpoint: %.16s %.200s (%s)", req->method,
                               req->path, hint);
        finish(reg, r.ep, start, req, resp);
        return 0;
    }
    int is_get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    int is_post = strcmp(req->method, "POST") == 0;
    int wants_post = r.ep == BT_EP_INFER || r.ep == BT_EP_V1_PREDICT || is_repo;
    if (wants_post ? !is_post : !is_get) {
        bt_response_errorf(resp, 405, "method %.16s is not allowed on %.200s: use %s", req->method,
                           req->path, wants_post ? "POST" : "GET");
        resp->allow = wants_post ? "POST" : "GET, HEAD";
        finish(reg, r.ep, start, req, resp);
        return 0;
    }
    if (is_repo)
        return begin_control(reg, &r, req, start, resp, call);
    if (bt_endpoint_is_model(r.ep) || (r.ep == BT_EP_STATS && r.version)) {
        entry *e = find(reg, &r, authorized, resp);
        if (!e) {
            finish(reg, r.ep, start, req, resp);
            return 0;
        }
        bt_job *job = NULL;
        int rc = bt_service_begin(e->svc, r.ep, req, resp, &job);
        if (rc == 1) {
            call->svc = e->svc;
            call->job = job;
        }
        atomic_fetch_sub(&e->holds, 1); /* the service's pending count covers it now */
        return rc;
    }
    char why[1024];
    switch (r.ep) {
    case BT_EP_LIVE:
        bt_buf_puts(&resp->body,
                    strcmp(req->path, "/") == 0 ? "{\"status\":\"alive\"}" : "{\"live\":true}");
        break;
    case BT_EP_READY:
        if (readiness(reg, why, sizeof why)) {
            bt_buf_puts(&resp->body, "{\"ready\":true}");
        } else {
            resp->status = 503; /* the probes' answer; the body says why */
            bt_buf_puts(&resp->body, "{\"ready\":false,\"error\":");
            bt_buf_json_string(&resp->body, why);
            bt_buf_puts(&resp->body, "}");
        }
        break;
    case BT_EP_SERVER_META:
        server_metadata(reg, &resp->body);
        break;
    case BT_EP_METRICS:
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        bt_registry_metrics(reg, &resp->body);
        break;
    case BT_EP_STATS:
        if (!all_stats(reg, &r, resp) && r.name) {
            resp->body.len = 0;
            bt_route named = r;
            entry *e = find(reg, &named, authorized, resp); /* sets the 404 */
            if (e)
                atomic_fetch_sub(&e->holds, 1);
        }
        break;
    default:
        bt_response_error(resp, 500, "unrouted endpoint");
        break;
    }
    finish(reg, r.ep, start, req, resp);
    return 0;
}

static void answer_control(bt_registry *reg, bt_control *c, bt_http_response *resp)
{
    double t = bt_now() - c->start;
    bt_traffic_record(&reg->traffic, c->ep, resp->status, t);
    if (c->log_line)
        bt_log_request(c->log_line, resp->status, t);
    c->done(c->ctx, resp);
    bt_buf_free(&resp->body);
    control_free(c);
}

static void control_unavailable(bt_registry *reg, bt_control *c)
{
    bt_http_response resp;
    bt_response_init(&resp);
    bt_response_error(&resp, 503, "the server is shutting down");
    resp.retry_after = 1;
    answer_control(reg, c, &resp);
}

void bt_registry_submit(bt_registry *reg, bt_call *call, bt_response_fn done, void *ctx)
{
    if (call->job) {
        bt_service_submit(call->svc, call->job, done, ctx);
        return;
    }
    bt_control *c = call->control;
    c->done = done;
    c->ctx = ctx;
    pthread_mutex_lock(&reg->cmu);
    int stopping = reg->stopping;
    if (!stopping) {
        c->id = ++reg->next_id;
        if (reg->queue_tail)
            reg->queue_tail->next = c;
        else
            reg->queue = c;
        reg->queue_tail = c;
        pthread_cond_signal(&reg->ccv);
    }
    pthread_mutex_unlock(&reg->cmu);
    if (stopping)
        control_unavailable(reg, c);
}

int bt_registry_next_control(bt_registry *reg, double timeout_s, bt_control_request *out)
{
    struct timespec ts;
    bt_deadline_in(&ts, timeout_s);
    pthread_mutex_lock(&reg->cmu);
    while (!reg->queue && !reg->stopping)
        if (pthread_cond_timedwait(&reg->ccv, &reg->cmu, &ts) != 0)
            break;
    if (reg->stopping || !reg->queue) {
        int rc = reg->stopping ? -1 : 0;
        pthread_mutex_unlock(&reg->cmu);
        return rc;
    }
    bt_control *c = reg->queue;
    reg->queue = c->next;
    if (!reg->queue)
        reg->queue_tail = NULL;
    c->next = reg->taken;
    reg->taken = c;
    out->id = c->id;
    out->action = c->ep == BT_EP_REPO_INDEX  ? "index"
                  : c->ep == BT_EP_REPO_LOAD ? "load"
                                             : "unload";
    out->model = c->model;
    out->body = c->body;
    out->body_len = c->body_len;
    pthread_mutex_unlock(&reg->cmu);
    return 1;
}

int bt_registry_answer_control(bt_registry *reg, uint64_t id, int status, const char *body,
                               size_t len)
{
    pthread_mutex_lock(&reg->cmu);
    bt_control **p = &reg->taken;
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    bt_control *c = *p;
    if (c)
        *p = c->next;
    pthread_mutex_unlock(&reg->cmu);
    if (!c)
        return -1;
    bt_http_response resp;
    bt_response_init(&resp);
    resp.status = status;
    bt_buf_append(&resp.body, body, len);
    answer_control(reg, c, &resp);
    return 0;
}

void bt_registry_expire_all(bt_registry *reg)
{
    pthread_mutex_lock(&reg->cmu);
    reg->stopping = 1;
    bt_control *queued = reg->queue, *taken = reg->taken;
    reg->queue = reg->queue_tail = reg->taken = NULL;
    pthread_cond_broadcast(&reg->ccv);
    pthread_mutex_unlock(&reg->cmu);
    for (bt_control *lists[2] = {queued, taken}, **l = lists; l < lists + 2; l++)
        while (*l) {
            bt_control *c = *l;
            *l = c->next;
            control_unavailable(reg, c);
        }
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->n; i++)
        bt_service_expire_all(reg->entries[i]->svc);
    pthread_rwlock_unlock(&reg->lock);
}

typedef struct sync_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    bt_http_response *resp;
} sync_ctx;

static void sync_done(void *ctx, bt_http_response *resp)
{
    sync_ctx *s = ctx;
    pthread_mutex_lock(&s->mu);
    *s->resp = *resp;
    memset(&resp->body, 0, sizeof resp->body);
    s->finished = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void bt_registry_handle_sync(bt_registry *reg, const bt_http_request *req, bt_http_response *resp)
{
    bt_call call;
    if (bt_registry_begin(reg, req, resp, &call) == 0)
        return;
    sync_ctx s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.resp = resp;
    bt_registry_submit(reg, &call, sync_done, &s);
    pthread_mutex_lock(&s.mu);
    while (!s.finished)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
}

/* ------------------------------------------------------------------ metrics */

void bt_registry_metrics(bt_registry *reg, bt_buf *out)
{
    bt_buf_printf(out,
                  "# HELP berth_ready Whether the server is ready (1) or not (0).\n"
                  "# TYPE berth_ready gauge\nberth_ready %d\n",
                  bt_registry_ready(reg));
    pthread_rwlock_rdlock(&reg->lock);
    for (int f = 0; f < BT_MF_COUNT; f++) {
        const bt_metric_family *mf = &BT_SERVICE_METRICS[f];
        bt_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", mf->name, mf->help, mf->name, mf->type);
        if (f == BT_MF_REQUESTS) {
            bt_traffic_render_counts(&reg->traffic, "", out);
        } else if (f == BT_MF_DURATION) {
            int first = 0;
            bt_traffic_render_latency(&reg->traffic, "", &first, out);
        }
        for (size_t i = 0; i < reg->n; i++) {
            bt_service *svc = reg->entries[i]->svc;
            char labels[320];
            snprintf(labels, sizeof labels, "model=\"%.200s\",version=\"%s\"", bt_service_name(svc),
                     bt_service_version(svc));
            bt_service_metric(svc, f, labels, out);
        }
    }
    pthread_rwlock_unlock(&reg->lock);
}
