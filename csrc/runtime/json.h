/*
 * json.h - what berth needs on top of cJSON to parse untrusted JSON the way a strict
 * parser would: a parse that reports line and column without cJSON's global error
 * pointer, object lookup that refuses duplicate keys, and UTF-8 validation (cJSON
 * checks none of that). The runtime reads berth.json with it, the serving layer request
 * bodies (through serving/json_body.h's arena).
 *
 * cJSON arrays and objects are linked lists: cJSON_GetArrayItem and cJSON_GetArraySize
 * are O(n), so berth walks them with ->child / ->next and never indexes them.
 */
#ifndef BERTH_JSON_H
#define BERTH_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "runtime/error.h"

/* Where and why a body is not valid JSON. */
typedef struct bt_json_error {
    char text[96]; /* what is wrong, e.g. "syntax error near '}'" */
    int line;      /* 1-based */
    int column;    /* 1-based, in characters */
} bt_json_error;

/* Parses the len bytes at text (no NUL terminator needed) as one JSON value with only
 * whitespace after it. Like a strict parser, and unlike cJSON alone, it refuses NUL
 * bytes, "\u0000" and malformed \u escapes (which cJSON decodes to NUL) anywhere in the
 * text. Returns the tree (free it with cJSON_Delete), or NULL with *e filled. Does not
 * touch cJSON_GetErrorPtr()'s global, so it may run on several threads at once. */
cJSON *bt_json_parse(const char *text, size_t len, bt_json_error *e);

/* The JSON type of v (cJSON_Number, cJSON_Array, ...), without cJSON's flag bits. */
static inline int bt_json_type(const cJSON *v) { return v ? v->type & 0xFF : cJSON_Invalid; }

/* The member named key (case-sensitive) of object obj, found in one pass over its
 * members: 0 with *out set (NULL when absent), or -1 with err set to
 * "duplicate key 'KEY' in WHERE" (of the given kind) when the key appears twice. */
int bt_json_get(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                bt_error_kind kind, bt_error *err);

/* Number of elements of an array or members of an object (one pass). */
size_t bt_json_size(const cJSON *v);

/* "an object", "a list", "a string", "a number", "a boolean" or "null". */
const char *bt_json_kind(const cJSON *v);

/* 1 when the NUL-terminated s is well-formed UTF-8: no overlong forms, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF, no truncated sequences. */
int bt_json_utf8_valid(const char *s);

/* Length (1-4) of the well-formed UTF-8 sequence at p, which is NUL-terminated; 0 when
 * p does not start one. */
size_t bt_utf8_sequence(const unsigned char *p);

#endif /* BERTH_JSON_H */
