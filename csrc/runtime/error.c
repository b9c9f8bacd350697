/* error.c - building bt_error values and the small text helpers used in messages. */
#include "runtime/error.h"

#include <stdarg.h>
#include <stdio.h>

int bt_error_set(bt_error *err, bt_error_kind kind, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->kind = kind;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *bt_shape_str(char *buf, size_t size, const int64_t *shape, int ndim)
{
    size_t used = 0;
    if (size == 0)
        return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, size - used, "(");
    for (int i = 0; i < ndim && used < size; ++i) {
        used +=
            (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    }
    if (used < size)
        used += (size_t)snprintf(buf + used, size - used, ndim == 1 ? ",)" : ")");
    return buf;
}
