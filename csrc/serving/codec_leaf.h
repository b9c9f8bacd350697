/*
 * codec_leaf.h - internal to the codec (codec_leaf.c, codec_v2.c, codec_v1.c), not part
 * of its public face codec.h: the rules both protocols share. A datatype's name and the
 * list of supported ones, how the leaves of JSON data are checked (class and range) and
 * stored, the small helpers of a parse (the body as JSON, a member lookup that refuses
 * duplicates, copies that report running out of memory), and the checks and element text
 * of an output both encoders write.
 */
#ifndef BERTH_CODEC_LEAF_H
#define BERTH_CODEC_LEAF_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "berth/dtypes.h"
#include "serving/codec.h"
#include "serving/json_body.h"

/* cJSON keeps every number as a double, which carries integers exactly only while
 * |v| < 2^53 (the interoperable range of RFC 7493, I-JSON). */
#define JSON_EXACT_LIMIT 9007199254740992.0 /* 2^53 */

#define BT_DATATYPE_LISTED(NAME, DATATYPE, CODE, BITS, NPY, TORCH) DATATYPE ", "

/* "BOOL, UINT8, ..., FP64, BF16 (binary data only)", for messages. */
#define SUPPORTED_DATATYPES BERTH_DTYPES(BT_DATATYPE_LISTED) "BF16 (binary data only)"

#define BODY "the request body"

/* ------------------------------------------------------------------ leaves */

/* How the leaves of one input's data are checked: class and range, worked out once per
 * input rather than from the datatype at every leaf. */
typedef enum leaf_class { LEAF_BOOL, LEAF_INT, LEAF_FLOAT } leaf_class;

typedef struct leaf_rule {
    leaf_class cls;
    DLDataType dt;
    const char *dname; /* "FP32" */
    double lo, hi;     /* LEAF_INT: the accepted range; LEAF_FLOAT: hi is the largest magnitude */
    const char *what;  /* "input 'x'", for messages */
} leaf_rule;

/* The rule for leaves of the supported dtype dt; what names the input in messages. */
void bt_leaf_rule_init(leaf_rule *r, DLDataType dt, const char *what);

/* Checks the values of the sibling list starting at c (all at the given depth), adding
 * the number of leaves to *count. Nested lists are walked, or refused as ragged when
 * flat. 0, or -1 with err set. */
int bt_leaf_check_run(const cJSON *c, const leaf_rule *r, int depth, int flat, int64_t *count,
                      bt_error *err);

/* -1 with err set: "<what>: instances are not all the same shape (ragged lists)". */
int bt_leaf_ragged(const leaf_rule *r, bt_error *err);

/* A store loop: writes the leaves of checked data from c on, in row-major order, from
 * dst on; returns the end of what it wrote. */
typedef char *(*store_fn)(const cJSON *, char *);

/* The store loop of a supported dtype. */
store_fn bt_leaf_store_for(DLDataType dt);

/* v as a one-element sibling list: its own ->next runs on into its parent's members. */
static inline cJSON bt_leaf_alone(const cJSON *v)
{
    cJSON one = *v;
    one.next = NULL;
    return one;
}

/* Whether the number d may be a leaf of data under r (LEAF_INT and LEAF_FLOAT rules; a
 * BOOL leaf may also be true or false). */
static inline int bt_leaf_number_ok(double d, const leaf_rule *r)
{
    switch (r->cls) {
    case LEAF_FLOAT:
        return fabs(d) <= r->hi; /* false for inf and NaN */
    case LEAF_INT:
        /* in range first, so the cast is defined; the cast then tests integrality */
        return d >= r->lo && d <= r->hi && d == (double)(int64_t)d;
    default:
        return d == 0 || d == 1;
    }
}

/* ------------------------------------------------------------------ data from the text */

/* Where the text of one value lies in the body. */
typedef struct bt_text_span {
    const char *at; /* NULL: none */
    size_t len;
} bt_text_span;

/* Finds the text of inputs[k].data in the n bytes of a v2 body at s, for k < max, where
 * that value is a list: spans[k] (cleared first; {NULL, 0} for the others). 1 when at
 * least one was found; 0 when none was, or the body is not simple enough to tell (a
 * duplicate "inputs" or "data", malformed text, more than max inputs). Nothing is
 * validated here: the rest of the body goes through cJSON, the lists through
 * bt_data_parse. */
int bt_data_find(const char *s, size_t n, bt_text_span *spans, size_t max);

/* Parses the n bytes at s, the text of a 'data' list (nested any way), into dst as r's
 * dtype: 1 when it holds exactly numel numbers, each RFC 8259 text that passes r's
 * checks; 0 otherwise, having written at most numel elements, and the caller takes the
 * cJSON path, which accepts the same data (and a few more number forms, such as "01") with
 * the same values, or gives the error. BOOL data is always 0. */
int bt_data_parse(const char *s, size_t n, const leaf_rule *r, int64_t numel, void *dst);

/* Bodies shorter than this take the cJSON path alone: for a few numbers the scan and the
 * copy would cost more than they save. */
#define BT_CODEC_FAST_MIN_BYTES 4096

/* Sets the length from which bt_codec_parse_v2 tries the fast path (the fuzzer and the
 * tests set 0 to try it on every body, SIZE_MAX never to). Not thread-safe. */
void bt_codec_set_fast_min_bytes(size_t bytes);

/* ------------------------------------------------------------------ parse helpers */

/* The request body as JSON (in the thread's arena: bt_json_release it); NULL with err
 * set otherwise. */
cJSON *bt_codec_parse_body(const char *body, size_t len, bt_error *err);

/* obj's member key (NULL when absent); -1 with err set when the key appears twice. */
static inline int bt_codec_get_key(const cJSON *obj, const char *key, const char *where,
                                   const cJSON **out, bt_error *err)
{
    return bt_json_get(obj, key, where, out, BT_ERR_VALUE, err);
}

/* A copy of s, or NULL with err set (out of memory). */
char *bt_codec_dup_str(const char *s, bt_error *err);

/* An empty request, or NULL with err set (out of memory). */
bt_infer_request *bt_codec_request_new(bt_error *err);

/* Calls t's deleter (NULL-tolerant). */
void bt_codec_tensor_release(DLManagedTensor *t);

/* ------------------------------------------------------------------ outputs */

/* -1 with err set (BT_ERR_MODEL) when the protocol cannot carry output o. */
int bt_codec_check_output(const bt_output *o, bt_error *err);

/* Address of the element of t at row-major position linear. */
const char *bt_codec_elem_at(const DLTensor *t, int64_t linear, int contiguous, size_t esize);

/* Appends the element at p as JSON: the shortest text that reads back to the same value
 * (null for NaN and infinities, which JSON has no numbers for). */
void bt_codec_append_elem(bt_buf *b, const char *p, DLDataType dt);

#endif /* BERTH_CODEC_LEAF_H */
