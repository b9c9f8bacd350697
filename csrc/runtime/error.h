/*
 * error.h - the C core's error value: a kind (mapped to a Python exception class or an
 * HTTP status by the caller) and a message in the user's terms.
 */
#ifndef BERTH_ERROR_H
#define BERTH_ERROR_H

#include <stddef.h>
#include <stdint.h>

typedef enum bt_error_kind {
    BT_OK = 0,
    BT_ERR_TYPE = 1,       /* wrong kind of value: TypeError / HTTP 400 */
    BT_ERR_VALUE = 2,      /* right kind, wrong value (shape, count): ValueError / 400 */
    BT_ERR_LOAD = 3,       /* model file unusable: berth.ModelLoadError */
    BT_ERR_INFERENCE = 4,  /* forward raised on input berth could not fully check:
                              berth.InferenceError / HTTP 400 (the client's to fix) */
    BT_ERR_NO_MEMORY = 5,  /* MemoryError / 500 */
    BT_ERR_OVERLOADED = 6, /* queue full: berth.Overloaded / 503 */
    BT_ERR_TIMEOUT = 7,    /* request timed out in the queue: TimeoutError / 503 */
    BT_ERR_INTERNAL = 8,   /* a bug: RuntimeError / 500 */
    BT_ERR_MODEL = 9,      /* the model's fault, not the request's: forward raised on input
                              that matched its complete signature, or it returned what berth
                              cannot serve (a non-tensor, a dtype the protocol cannot carry,
                              no batch dimension): berth.InferenceError / HTTP 500 */
    BT_ERR_TOO_LARGE = 10  /* a request over a size limit: ValueError / HTTP 413 */
} bt_error_kind;

typedef struct bt_error {
    bt_error_kind kind;
    char message[1024];
} bt_error;

/* Sets err (if not NULL) with a printf-style message; always returns -1. */
int bt_error_set(bt_error *err, bt_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "(2, 10)" style shape text into buf; returns buf. */
char *bt_shape_str(char *buf, size_t size, const int64_t *shape, int ndim);

#endif /* BERTH_ERROR_H */
