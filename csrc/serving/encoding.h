/*
 * encoding.h - HTTP content codings for the serving path, with zlib: request bodies sent
 * with Content-Encoding gzip or deflate are inflated (never past a limit, so a small
 * compressed body cannot make the server allocate gigabytes), and responses are gzipped
 * for clients that send Accept-Encoding: gzip. No HTTP library and no Python here: both
 * transports (libmicrohttpd, the Flask/FastAPI adapters) call these.
 */
#ifndef BERTH_ENCODING_H
#define BERTH_ENCODING_H

#include <stddef.h>

#include "runtime/error.h"
#include "serving/buffer.h"

/* Responses smaller than this go out as they are: gzip's header and the CPU time cost
 * more than the bytes saved. */
#define BT_GZIP_MIN_BYTES 1024

/* What a Content-Encoding header asks for. */
typedef enum bt_coding { BT_CODING_IDENTITY, BT_CODING_GZIP, BT_CODING_DEFLATE } bt_coding;

/* Parses a Content-Encoding value (NULL or "": identity; "gzip", "x-gzip", "deflate",
 * "identity", case-insensitive). -1 with err set (BT_ERR_VALUE, naming what is
 * supported) for anything else. */
int bt_coding_parse(const char *content_encoding, bt_coding *out, bt_error *err);

/* Inflates body (gzip: RFC 1952; deflate: the zlib format of RFC 1950, or raw RFC 1951
 * data as some clients send) into *out (cleared first; owned by the caller, freed with
 * bt_buf_free on every path). Fails with BT_ERR_TOO_LARGE once the inflated size would
 * pass max_bytes, and with BT_ERR_VALUE for data that is not of that coding. */
int bt_inflate(bt_coding coding, const char *body, size_t len, size_t max_bytes, bt_buf *out,
               bt_error *err);

/* Whether an Accept-Encoding value accepts gzip (a "gzip" or "*" entry whose q is not 0). */
int bt_accepts_gzip(const char *accept_encoding);

/* Replaces body with its gzip form when it is at least BT_GZIP_MIN_BYTES and gzip makes
 * it smaller. Returns 1 when it did (send Content-Encoding: gzip), 0 when body is
 * unchanged (too small, incompressible, or out of memory). */
int bt_gzip_body(bt_buf *body);

#endif /* BERTH_ENCODING_H */
