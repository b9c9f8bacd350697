/* error.c - building bt_error values and the small text helpers used in messages. */
#include "runtime/error.h"

#include <stdarg.h>
#include <stdio.h>

#include "berth/dlpack.h"
#include "berth/dtypes.h"

int bt_error_set(bt_error *err, bt_error_kind kind, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->kind = kind;
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *bt_shape_str(char *buf, size_t size, const int64_t *shape, int ndim) {
    size_t used = 0;
    if (size == 0) return buf;
    buf[0] = '\0';
    used += (size_t)snprintf(buf + used, size - used, "(");
    for (int i = 0; i < ndim && used < size; ++i) {
        used += (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    }
    if (used < size) used += (size_t)snprintf(buf + used, size - used, ndim == 1 ? ",)" : ")");
    return buf;
}

const char *bt_dtype_name(unsigned code, unsigned bits) {
    static const struct {
        const char *name;
        unsigned code, bits;
    } kNames[] = {
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH) {NAME, CODE, BITS},
        BERTH_DTYPES(BT_ROW)
#undef BT_ROW
        /* types berth does not handle, named in its error messages */
        {"uint16", kDLUInt, 16}, {"uint32", kDLUInt, 32}, {"uint64", kDLUInt, 64},
        {"bfloat16", 4 /* kDLBfloat */, 16},
    };
    for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; ++i)
        if (kNames[i].code == code && kNames[i].bits == bits) return kNames[i].name;
    return "unknown";
}
