/* json_body.c - request bodies parsed into a per-thread arena (see json_body.h). */
#include "serving/json_body.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ body arena */

typedef struct arena_chunk {
    struct arena_chunk *next; /* older, smaller chunks of the same body */
    size_t cap, used;
    alignas(max_align_t) unsigned char data[];
} arena_chunk;

#define ARENA_FIRST ((size_t)256 << 10)

static atomic_int hooks_installed;
static pthread_key_t arena_key; /* this thread's newest chunk; freed when the thread ends */
static _Thread_local arena_chunk *t_chunks;
static _Thread_local int t_active;
static _Thread_local size_t t_used;         /* bytes handed out since the body's parse began */
static _Thread_local unsigned char *t_last; /* the latest allocation, NULL once freed */

static void free_chunks(arena_chunk *c)
{
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

static void arena_thread_exit(void *chunks) { free_chunks(chunks); }

static void *arena_malloc(size_t n)
{
    if (!t_active)
        return malloc(n);
    if (n > SIZE_MAX - 16)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    arena_chunk *c = t_chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = c ? c->cap : ARENA_FIRST;
        while (cap < n || (c && cap <= c->cap)) {
            if (cap > (SIZE_MAX - sizeof *c) / 2)
                return NULL;
            cap *= 2;
        }
        arena_chunk *fresh = malloc(sizeof *fresh + cap);
        if (!fresh)
            return NULL;
        fresh->cap = cap;
        fresh->used = 0;
        fresh->next = c;
        t_chunks = c = fresh;
        pthread_setspecific(arena_key, fresh);
    }
    unsigned char *p = c->data + c->used;
    c->used += n;
    t_used += n;
    t_last = p;
    return p;
}

static void arena_free(void *p)
{
    if (!t_active) {
        free(p);
        return;
    }
    /* Inside a scope, nodes go with the whole arena in bt_json_release; but the latest
     * allocation is given back at once: cJSON 1.7.15 copies each number into a buffer it
     * frees right away, which would otherwise cost 16 more bytes per number. */
    arena_chunk *c = t_chunks;
    if (p && p == t_last && c && (unsigned char *)p >= c->data) {
        size_t n = (size_t)(c->data + c->used - (unsigned char *)p);
        c->used -= n;
        t_used -= n;
        t_last = NULL;
    }
}

static void arena_end(void)
{
    arena_chunk *head = t_chunks;
    t_active = 0;
    t_last = NULL;
    if (!head)
        return;
    /* Keep the newest (largest) chunk for the next body unless it is oversized. */
    free_chunks(head->next);
    head->next = NULL;
    head->used = 0;
    if (head->cap > BT_JSON_ARENA_KEEP) {
        free(head);
        head = NULL;
    }
    t_chunks = head;
    pthread_setspecific(arena_key, head);
}

void bt_json_init(void)
{
    if (atomic_load(&hooks_installed) || pthread_key_create(&arena_key, arena_thread_exit) != 0)
        return;
    cJSON_Hooks hooks = {arena_malloc, arena_free};
    cJSON_InitHooks(&hooks);
    atomic_store(&hooks_installed, 1);
}

/* At most how many cJSON nodes text can make: the root, then every value follows a comma
 * or opens a non-empty container (keys live in their value's node). */
static size_t node_bound(const char *text, size_t len)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i], next = i + 1 < len ? text[i + 1] : 0;
        n += ch == ',' || (ch == '[' && next != ']') || (ch == '{' && next != '}');
    }
    return n;
}

cJSON *bt_json_parse_body(const char *text, size_t len, bt_json_error *e)
{
    size_t nodes = text ? node_bound(text, len) : 0;
    if (nodes > BT_JSON_MAX_NODES(len)) {
        snprintf(e->text, sizeof e->text,
                 "%zu JSON values in %zu bytes is more than one per 2 bytes", nodes, len);
        e->line = e->column = 1;
        return NULL;
    }
    t_used = 0;
    if (atomic_load(&hooks_installed))
        t_active = 1;
    cJSON *root = bt_json_parse(text, len, e);
    if (!root && t_active)
        arena_end();
    return root;
}

size_t bt_json_body_bytes(void) { return t_used; }

void bt_json_release(cJSON *root)
{
    if (t_active)
        arena_end();
    else
        cJSON_Delete(root);
}
