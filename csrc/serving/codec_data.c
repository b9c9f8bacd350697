/*
 * codec_data.c - the fast path of a v2 request's numeric "data": the lists are found in
 * the body's text and parsed straight into the tensor, without a cJSON node per number.
 *
 * A 224x224x3 image is 150,528 numbers; through cJSON each one becomes a 64-byte node
 * parsed by strtod, then is checked and stored by walking the nodes. Here the body is
 * first scanned for the text of each inputs[i].data (bt_data_find), the rest of the body
 * (each of those lists left as []) goes through cJSON as before, and each list is parsed
 * by a strict RFC 8259 number reader into the tensor (bt_data_parse).
 *
 * The fast path only ever accepts what the cJSON path accepts, with the same values: it
 * declines (returns 0) on anything else, from a string in the data to a number strtod
 * would round differently than the reader, and the caller then parses the whole body
 * the cJSON way, which gives the exact error. csrc/fuzz/fuzz_codec.c checks that both
 * paths agree on every input it makes.
 */
#include "runtime/tensor.h"
#include "serving/codec_leaf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ finding the lists */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* One past the closing quote of the string that opens at s[i], or 0. */
static size_t string_end(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* The bytes a skip over a list or object must stop at. */
static const unsigned char STRUCTURAL[256] = {
    ['"'] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1};

/* One past the value that starts at s[i], or 0. Only brackets and strings are followed:
 * the values are checked later, by cJSON or by bt_data_parse. */
static size_t value_end(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return string_end(s, n, i);
    if (s[i] != '[' && s[i] != '{') {
        while (i < n && s[i] != ',' && s[i] != ']' && s[i] != '}' && s[i] != ' ' && s[i] != '\t' &&
               s[i] != '\n' && s[i] != '\r')
            i++;
        return i;
    }
    size_t depth = 0;
    for (; i < n; i++) {
        while (i < n && !STRUCTURAL[(unsigned char)s[i]])
            i++;
        if (i >= n)
            break;
        char c = s[i];
        if (c == '"') {
            size_t e = string_end(s, n, i);
            if (!e)
                return 0;
            i = e - 1;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (--depth == 0) {
            return i + 1;
        }
    }
    return 0;
}

/* The walk of a member's value that object_member is asked for: returns one past it, or
 * 0 when the body is not simple enough. */
typedef size_t (*member_walk)(const char *s, size_t n, size_t i, void *ctx);

/* Walks the object that opens at s[i]: one past it, or 0 when it is not a well-formed
 * object at this level or names `key` (raw, quotes included) twice. The value of `key`
 * goes to walk when given, else its text to *found ({NULL, 0} when absent). */
static size_t object_member(const char *s, size_t n, size_t i, const char *key, member_walk walk,
                            void *ctx, bt_text_span *found)
{
    size_t key_len = strlen(key);
    int seen = 0;
    if (found)
        *found = (bt_text_span){NULL, 0};
    if (i >= n || s[i] != '{')
        return 0;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return i + 1;
    for (;;) {
        size_t key_end = i < n && s[i] == '"' ? string_end(s, n, i) : 0;
        if (!key_end)
            return 0;
        int match = key_end - i == key_len && memcmp(s + i, key, key_len) == 0;
        if (match && seen++)
            return 0;
        i = skip_ws(s, n, key_end);
        if (i >= n || s[i] != ':')
            return 0;
        i = skip_ws(s, n, i + 1);
        size_t end = match && walk ? walk(s, n, i, ctx) : value_end(s, n, i);
        if (!end)
            return 0;
        if (match && found)
            *found = (bt_text_span){s + i, end - i};
        i = skip_ws(s, n, end);
        if (i < n && s[i] == '}')
            return i + 1;
        if (i >= n || s[i] != ',')
            return 0;
        i = skip_ws(s, n, i + 1);
    }
}

typedef struct inputs_walk {
    bt_text_span *spans;
    size_t max;
    int any;
} inputs_walk;

/* The "inputs" list at s[i]: each element's "data" text into the spans, when a list. */
static size_t walk_inputs(const char *s, size_t n, size_t i, void *ctx)
{
    inputs_walk *w = ctx;
    if (i >= n || s[i] != '[')
        return 0;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == ']')
        return i + 1;
    for (size_t k = 0;; k++) {
        if (k >= w->max)
            return 0;
        bt_text_span *span = &w->spans[k];
        size_t end = i < n && s[i] == '{' ? object_member(s, n, i, "\"data\"", NULL, NULL, span)
                                          : value_end(s, n, i);
        if (!end)
            return 0;
        if (span->at && span->at[0] != '[')
            *span = (bt_text_span){NULL, 0}; /* not a list: the cJSON path says what is wrong */
        w->any |= span->at != NULL;
        i = skip_ws(s, n, end);
        if (i < n && s[i] == ']')
            return i + 1;
        if (i >= n || s[i] != ',')
            return 0;
        i = skip_ws(s, n, i + 1);
    }
}

int bt_data_find(const char *s, size_t n, bt_text_span *spans, size_t max)
{
    memset(spans, 0, max * sizeof *spans);
    inputs_walk w = {spans, max, 0};
    if (!object_member(s, n, skip_ws(s, n, 0), "\"inputs\"", walk_inputs, &w, NULL))
        return 0;
    return w.any;
}

/* ------------------------------------------------------------------ reading the numbers */

/* Powers of ten a double holds exactly. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Reads the RFC 8259 number at s[*i] into *out, the value strtod gives, and moves *i past
 * it. 0 when the text there is not one (cJSON accepts a few more forms, such as "01").
 * The text must end in a byte that is not part of a number (the list's ']'): the loops
 * stop there without counting. */
static int read_number(const char *s, size_t *i, double *out)
{
    const char *start = s + *i, *p = start;
    int neg = *p == '-';
    p += neg;
    if (!is_digit(p[0]) || (p[0] == '0' && is_digit(p[1])))
        return 0;
    uint64_t m = 0; /* the digits, exact while there are at most 19 of them */
    const char *digits = p;
    while (is_digit(*p))
        m = m * 10 + (uint64_t)(*p++ - '0');
    size_t n_digits = (size_t)(p - digits);
    int exp10 = 0;
    if (*p == '.') {
        const char *frac = ++p;
        if (!is_digit(*p))
            return 0;
        while (is_digit(*p))
            m = m * 10 + (uint64_t)(*p++ - '0');
        exp10 = -(int)(p - frac);
        n_digits += (size_t)(p - frac);
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        int eneg = *p == '-';
        p += *p == '-' || *p == '+';
        if (!is_digit(*p))
            return 0;
        int e = 0;
        for (; is_digit(*p); p++)
            if (e < 100000)
                e = e * 10 + (*p - '0');
        exp10 += eneg ? -e : e;
    }
    /* Both m and 10^|exp10| exact in a double: one correctly rounded operation gives the
     * correctly rounded value, as strtod does (Clinger's fast path). */
    if (n_digits <= 19 && m <= (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
        double d = (double)m;
        d = exp10 < 0 ? d / POW10[-exp10] : d * POW10[exp10];
        *out = neg ? -d : d;
        *i += (size_t)(p - start);
        return 1;
    }
    char text[64];
    size_t len = (size_t)(p - start);
    if (len >= sizeof text)
        return 0;
    memcpy(text, start, len);
    text[len] = '\0';
    char *end;
    *out = strtod(text, &end);
    if (end != text + len) /* a locale whose decimal point is not '.' */
        return 0;
    *i += len;
    return 1;
}

/* How a number is stored: one of the supported dtypes, as bt_leaf_store_for does. */
typedef enum store_kind { K_U8, K_I8, K_I16, K_I32, K_I64, K_F16, K_F32, K_F64 } store_kind;

static store_kind kind_of(DLDataType dt)
{
    if (dt.code == kDLUInt)
        return K_U8;
    if (dt.code == kDLFloat)
        return dt.bits == 16 ? K_F16 : dt.bits == 32 ? K_F32 : K_F64;
    return dt.bits == 8 ? K_I8 : dt.bits == 16 ? K_I16 : dt.bits == 32 ? K_I32 : K_I64;
}

static char *store(char *dst, double d, store_kind k)
{
    switch (k) {
#define STORE(KIND, CTYPE, VALUE)                                                                  \
    case KIND: {                                                                                   \
        CTYPE x = VALUE;                                                                           \
        memcpy(dst, &x, sizeof x);                                                                 \
        return dst + sizeof x;                                                                     \
    }
        STORE(K_U8, uint8_t, (uint8_t)d)
        STORE(K_I8, int8_t, (int8_t)d)
        STORE(K_I16, int16_t, (int16_t)d)
        STORE(K_I32, int32_t, (int32_t)d)
        STORE(K_I64, int64_t, (int64_t)d)
        STORE(K_F16, uint16_t, bt_float_to_half((float)d))
        STORE(K_F32, float, (float)d)
        STORE(K_F64, double, d)
#undef STORE
    }
    return dst;
}

int bt_data_parse(const char *s, size_t n, const leaf_rule *r, int64_t numel, void *dst)
{
    if (r->cls == LEAF_BOOL || n < 2 || s[0] != '[' || s[n - 1] != ']')
        return 0; /* the ']' at the end stops read_number's loops */
    store_kind kind = kind_of(r->dt);
    char *out = dst;
    int64_t count = 0;
    int depth = 0;
    size_t i = 0;
    for (;;) {
        /* a value */
        i = skip_ws(s, n, i);
        if (i < n && s[i] == '[') {
            if (++depth >= BT_CODEC_MAX_NDIM)
                return 0;
            i = skip_ws(s, n, i + 1);
            if (i >= n || s[i] != ']')
                continue;
        } else {
            double d;
            if (count >= numel || !read_number(s, &i, &d) || !bt_leaf_number_ok(d, r))
                return 0;
            out = store(out, d, kind);
            count++;
            i = skip_ws(s, n, i);
        }
        /* what follows it: a comma, or the ends of lists */
        while (i < n && s[i] == ']') {
            i++;
            if (--depth == 0)
                return i == n && count == numel;
            i = skip_ws(s, n, i);
        }
        if (i >= n || s[i] != ',')
            return 0;
        i++;
    }
}
