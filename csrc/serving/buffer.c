/*
 * buffer.c - the growable byte buffer responses are written into (buffer.h). Appends
 * after a failed allocation are dropped and remembered in oom, so a writer checks once,
 * at the end.
 */
#include "serving/buffer.h"
#include "runtime/json.h" /* bt_utf8_sequence */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int buf_reserve(bt_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = 1;
            return -1;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void bt_buf_append(bt_buf *b, const void *data, size_t n)
{
    if (n == 0 || buf_reserve(b, n) != 0)
        return;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void bt_buf_puts(bt_buf *b, const char *s) { bt_buf_append(b, s, strlen(s)); }

void bt_buf_printf(bt_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        bt_buf_append(b, small, (size_t)n);
        return;
    }
    if (buf_reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void bt_buf_json_string(bt_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    bt_buf_append(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;
    for (; *p; p++) {
        unsigned char c = *p;
        if (c >= 0x80) {
            /* Well-formed UTF-8 passes through; a stray byte (an error message that cut a
             * name inside a character, say) becomes U+FFFD so the body stays valid. */
            size_t n = bt_utf8_sequence(p);
            if (n > 0) {
                p += n - 1;
                continue;
            }
            bt_buf_append(b, run, (size_t)(p - run));
            bt_buf_append(b, "\\ufffd", 6);
            run = p + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        bt_buf_append(b, run, (size_t)(p - run));
        run = p + 1;
        switch (c) {
        case '"':
            bt_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            bt_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            bt_buf_append(b, "\\n", 2);
            break;
        case '\r':
            bt_buf_append(b, "\\r", 2);
            break;
        case '\t':
            bt_buf_append(b, "\\t", 2);
            break;
        default: {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            bt_buf_append(b, esc, 6);
        }
        }
    }
    bt_buf_append(b, run, (size_t)(p - run));
    bt_buf_append(b, "\"", 1);
}

void bt_buf_free(bt_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}
