/* json.c - strict parsing, duplicate-free lookup and UTF-8 checks on top of cJSON. */
#include "runtime/json.h"

#include <stdio.h>
#include <string.h>

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* First "\u" escape in [p, end) that cJSON would turn into a NUL byte: "\u0000" itself,
 * or one without four hex digits (cJSON reads those as U+0000 instead of refusing them).
 * NULL when there is none. *why says which. Only real escapes count: in "\\u0000" the
 * backslash is itself escaped. Backslashes are rare in tensor bodies, so memchr skips
 * through the numbers. */
static const char *find_nul_escape(const char *p, const char *end, const char **why)
{
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        const char *q = p;
        while (q < end && *q == '\\')
            q++;
        if (((q - p) & 1) && q < end && *q == 'u') {
            const char *esc = q - 1; /* the backslash that starts the escape */
            int zero = 1;
            for (int k = 1; k <= 4; k++) {
                if (q + k >= end || !is_hex((unsigned char)q[k])) {
                    *why = "invalid \\u escape (expected four hex digits)";
                    return esc;
                }
                zero &= q[k] == '0';
            }
            if (zero) {
                *why = "\\u0000 (NUL) is not allowed in strings";
                return esc;
            }
        }
        p = q;
    }
    return NULL;
}

static void locate(const char *text, const char *at, bt_json_error *e)
{
    int line = 1, column = 1;
    for (const char *p = text; p < at; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n') {
            line++;
            column = 1;
        } else if ((c & 0xC0) != 0x80) { /* count characters, not UTF-8 continuation bytes */
            column++;
        }
    }
    e->line = line;
    e->column = column;
}

/* What is wrong at `at`: "<prefix> near 'xyz'", quoting only printable ASCII so that the
 * message stays valid UTF-8 and readable whatever the body holds. */
static void describe(const char *prefix, const char *at, const char *end, int from_cjson,
                     bt_json_error *e)
{
    if (at >= end) {
        snprintf(e->text, sizeof e->text, "unexpected end of input");
        return;
    }
    char near[24];
    size_t n = 0;
    while (n < 16 && at + n < end && (unsigned char)at[n] >= 0x20 && (unsigned char)at[n] < 0x7f) {
        near[n] = at[n];
        n++;
    }
    near[n] = '\0';
    /* cJSON reports an error at the last byte when it ran out of input */
    const char *tail = from_cjson && at == end - 1 ? " at the end of the body" : "";
    if (n == 0)
        snprintf(e->text, sizeof e->text, "%s at byte 0x%02x%s", prefix, (unsigned char)*at, tail);
    else
        snprintf(e->text, sizeof e->text, "%s near '%s'%s", prefix, near, tail);
}

/* cJSON's error position for a string that does not start with '"' (an unquoted key,
 * 'single quotes') or never ends is one byte into it: back up to where the token starts. */
static const char *token_start(const char *text, const char *at)
{
    if (at > text && !strchr(" \t\r\n,:[]{}", at[-1]))
        return at - 1;
    return at;
}

cJSON *bt_json_parse(const char *text, size_t len, bt_json_error *e)
{
    if (!text || len == 0) {
        snprintf(e->text, sizeof e->text, "unexpected end of input");
        e->line = e->column = 1;
        return NULL;
    }
    const char *end = text + len;
    const char *why = NULL;
    const char *bad = memchr(text, '\0', len);
    if (bad)
        why = "NUL byte";
    const char *esc = find_nul_escape(text, bad ? bad : end, &why);
    if (esc)
        bad = esc;
    if (bad) {
        snprintf(e->text, sizeof e->text, "%s", why);
        locate(text, bad, e);
        return NULL;
    }
    /* Not cJSON_ParseWithLength: the end pointer of the Opts variant gives the error
     * position without reading cJSON_GetErrorPtr()'s process-wide global. */
    const char *stop = text;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
    if (!root) {
        if (!stop || stop < text || stop > end)
            stop = text;
        stop = token_start(text, stop);
        describe("syntax error", stop, end, 1, e);
        locate(text, stop, e);
        return NULL;
    }
    while (stop < end && (*stop == ' ' || *stop == '\t' || *stop == '\n' || *stop == '\r'))
        stop++;
    if (stop != end) {
        cJSON_Delete(root);
        describe("unexpected data after the JSON value", stop, end, 0, e);
        locate(text, stop, e);
        return NULL;
    }
    return root;
}

int bt_json_get(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                bt_error_kind kind, bt_error *err)
{
    const cJSON *found = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, key) == 0) {
            if (found)
                return bt_error_set(err, kind, "duplicate key '%.64s' in %s", key, where);
            found = c;
        }
    }
    *out = found;
    return 0;
}

size_t bt_json_size(const cJSON *v)
{
    size_t n = 0;
    for (const cJSON *c = v ? v->child : NULL; c; c = c->next)
        n++;
    return n;
}

const char *bt_json_kind(const cJSON *v)
{
    switch (bt_json_type(v)) {
    case cJSON_Object:
        return "an object";
    case cJSON_Array:
        return "a list";
    case cJSON_String:
        return "a string";
    case cJSON_Number:
        return "a number";
    case cJSON_True:
    case cJSON_False:
        return "a boolean";
    default:
        return "null";
    }
}

size_t bt_utf8_sequence(const unsigned char *p)
{
    unsigned char c = *p;
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
    }
    if (p[1] < lo || p[1] > hi)
        return 0; /* also stops at the NUL terminator */
    for (size_t k = 2; k <= n; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return n + 1;
}

int bt_json_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = bt_utf8_sequence(p);
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}
