/*
 * server.h - berth's HTTP server: libmicrohttpd around a registry (registry.h), hardened
 * against what libmicrohttpd 0.9.75 accepts leniently (see docs/ARCHITECTURE.md).
 *
 * Request bodies may be sent with Content-Encoding gzip or deflate; responses are gzipped
 * for Accept-Encoding: gzip (see encoding.h). Every error body is {"error": "..."}.
 * Client faults are 4xx; the model's and the server's are 5xx.
 */
#ifndef BERTH_SERVER_H
#define BERTH_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"
#include "serving/registry.h"

typedef struct bt_server bt_server;

/* Limits: each default is defined here once (the largest body's in endpoints.h); the
 * Python CLI reads them from _core. */
#define BT_MAX_BODY_BYTES_LIMIT       ((size_t)4 << 30) /* the largest --max-body-mb accepted */
#define BT_DEFAULT_BODY_BUDGET_FACTOR 4 /* memory for unfinished bodies: x max body */
#define BT_DEFAULT_PER_IP_CONNECTIONS 256
#define BT_DEFAULT_CONNECTION_LIMIT   1024
#define BT_DEFAULT_IDLE_TIMEOUT_S     60
#define BT_DEFAULT_HEADER_TIMEOUT_S   10
#define BT_MAX_HTTP_THREADS           1024
/* TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1). */
#define BT_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
/* Bodies larger than this are parsed on the server's parse thread, not on the HTTP thread
 * that received them (a 30 MB JSON body takes seconds to parse). */
#define BT_INLINE_PARSE_BYTES ((size_t)64 << 10)

typedef struct bt_server_params {
    const char *host;       /* "0.0.0.0", "127.0.0.1", "::" or a name */
    int port;               /* 0: any free port (see bt_server_port) */
    int threads;            /* HTTP threads, >= 1 */
    size_t max_body_bytes;  /* larger bodies get 413 */
    const char *tls_cert;   /* PEM text; NULL: plain HTTP */
    const char *tls_key;    /* PEM text */
    int connection_limit;   /* open connections at most */
    int idle_timeout_s;     /* close idle keep-alive connections after this */
    int per_ip_connections; /* open connections per client address at most */
    int header_timeout_s;   /* a new connection must send its first request's headers in time */
    size_t body_budget;     /* bytes all unfinished request bodies may hold together (503) */
} bt_server_params;

/* Starts listening for the registry (readiness stays as the registry says). */
int bt_server_start(bt_registry *reg, const bt_server_params *params, bt_server **out,
                    bt_error *err);
int bt_server_port(const bt_server *srv);
/* Graceful stop: readiness fails at once, accepted requests finish (answers carry
 * Connection: close); at grace_s whatever is still unanswered gets 503 (forwards still
 * running are not waited for), then the listener closes. Returns within grace_s plus
 * about a second of flushing. Idempotent. */
void bt_server_drain(bt_server *srv, double grace_s);
/* Stops the daemon (after drain when called first). NULL-tolerant. */
void bt_server_free(bt_server *srv);

#endif /* BERTH_SERVER_H */
