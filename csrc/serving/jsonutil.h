/*
 * jsonutil.h - what berth needs on top of cJSON to parse untrusted JSON the way a strict
 * parser would: a parse that reports line and column without cJSON's global error
 * pointer, object lookup that refuses duplicate keys, and UTF-8 validation (cJSON
 * checks none of that).
 *
 * cJSON arrays and objects are linked lists: cJSON_GetArrayItem and cJSON_GetArraySize
 * are O(n), so berth walks them with ->child / ->next and never indexes them.
 */
#ifndef BERTH_JSONUTIL_H
#define BERTH_JSONUTIL_H

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

/* Request bodies: bt_json_parse into the calling thread's arena. A 224x224x3 image as
 * JSON is 150,528 number nodes; allocating and freeing each with malloc was a quarter of
 * the parse's CPU. With the arena, nodes are carved from a per-thread block that is kept
 * between requests (up to BT_JSON_ARENA_KEEP bytes per thread that parsed a body: a
 * 1.5 MB image body settles at 16 MiB) and released all at once. Release
 * the tree with bt_json_release, on the same thread, before parsing the next body there;
 * copy out whatever must outlive it. Needs bt_json_init(); without it these are
 * bt_json_parse and cJSON_Delete. */
cJSON *bt_json_parse_body(const char *text, size_t len, bt_json_error *e);
void bt_json_release(cJSON *root);

/* Memory bound of a body's parse. A cJSON node is 64 bytes (sizeof(cJSON) on 64-bit
 * targets) and valid JSON needs at least 2 bytes per value ("0,"), so bodies are refused
 * beyond BT_JSON_MAX_NODES(len) values (counted before parsing, from commas and
 * brackets). A string of k bytes takes k + 1 rounded up to 16 and at least k + 3 bytes of
 * body. A parse therefore takes at most 32 x the body plus 4 KiB ("[0,0,...]" is the worst
 * case), which tests/serving/test_serving_hardening.py measures with bt_json_body_bytes. */
#define BT_JSON_MAX_NODES(len) ((len) / 2 + 64)

/* Bytes the arena handed out for the calling thread's latest body parse. */
size_t bt_json_body_bytes(void);

/* Installs the arena's allocation hooks into cJSON (process-wide; allocations outside a
 * bt_json_parse_body scope still go to malloc/free). Call once, before other threads use
 * cJSON. */
void bt_json_init(void);

#define BT_JSON_ARENA_KEEP ((size_t)16 << 20)

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

#endif /* BERTH_JSONUTIL_H */
