/*
 * buffer.h - a growable byte buffer: what every response body is written into (the
 * codec's v2/v1 bodies, the service's and registry's JSON, Prometheus text, the
 * statistics), and what inflate and gzip fill. No JSON parsing and no HTTP here.
 */
#ifndef BERTH_BUFFER_H
#define BERTH_BUFFER_H

#include <stddef.h>

/* A growable byte buffer; oom is set (and appends stop) when an allocation fails. */
typedef struct bt_buf {
    char *data; /* owned, NUL-terminated when len > 0 */
    size_t len;
    size_t cap;
    int oom;
} bt_buf;

void bt_buf_append(bt_buf *b, const void *data, size_t n);
void bt_buf_puts(bt_buf *b, const char *s);
void bt_buf_printf(bt_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal (quotes included, escaped). */
void bt_buf_json_string(bt_buf *b, const char *s);
void bt_buf_free(bt_buf *b);

#endif /* BERTH_BUFFER_H */
