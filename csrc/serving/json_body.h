/*
 * json_body.h - request bodies parsed as strict JSON (runtime/json.h) into a per-thread
 * arena, with the parse's memory bounded by the body's length.
 */
#ifndef BERTH_JSON_BODY_H
#define BERTH_JSON_BODY_H

#include <stddef.h>

#include "runtime/json.h"

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

#endif /* BERTH_JSON_BODY_H */
