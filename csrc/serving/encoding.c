/* encoding.c - gzip/deflate request bodies (bounded) and gzip responses, with zlib. */
#define _POSIX_C_SOURCE 200809L
#include "serving/encoding.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

int bt_coding_parse(const char *ce, bt_coding *out, bt_error *err)
{
    *out = BT_CODING_IDENTITY;
    if (!ce)
        return 0;
    while (*ce == ' ' || *ce == '\t')
        ce++;
    size_t n = strlen(ce);
    while (n > 0 && (ce[n - 1] == ' ' || ce[n - 1] == '\t'))
        n--;
    if (n == 0 || (n == 8 && strncasecmp(ce, "identity", 8) == 0))
        return 0;
    if ((n == 4 && strncasecmp(ce, "gzip", 4) == 0) ||
        (n == 6 && strncasecmp(ce, "x-gzip", 6) == 0)) {
        *out = BT_CODING_GZIP;
        return 0;
    }
    if (n == 7 && strncasecmp(ce, "deflate", 7) == 0) {
        *out = BT_CODING_DEFLATE;
        return 0;
    }
    return bt_error_set(err, BT_ERR_VALUE,
                        "unsupported Content-Encoding '%.*s': expected gzip, deflate or identity",
                        (int)(n > 64 ? 64 : n), ce);
}

/* One inflate pass with the given window bits; 0, or Z_* error / -2 for the limit. */
static int inflate_with(int window_bits, const char *body, size_t len, size_t max_bytes,
                        bt_buf *out)
{
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, window_bits) != Z_OK)
        return Z_MEM_ERROR;
    out->len = 0;
    const unsigned char *in = (const unsigned char *)body;
    size_t left = len;
    int rc = Z_OK;
    while (rc != Z_STREAM_END) {
        if (zs.avail_in == 0) {
            if (left == 0)
                break; /* truncated */
            zs.next_in = (unsigned char *)in;
            zs.avail_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
            in += zs.avail_in;
            left -= zs.avail_in;
        }
        /* Room for 64 KiB more (but never past the limit + 1, which proves the excess). */
        size_t room = 65536;
        if (out->len + room > max_bytes + 1)
            room = max_bytes + 1 - out->len;
        if (out->cap < out->len + room + 1) {
            size_t cap = out->cap ? out->cap : 65536;
            while (cap < out->len + room + 1)
                cap *= 2;
            char *p = realloc(out->data, cap);
            if (!p) {
                inflateEnd(&zs);
                return Z_MEM_ERROR;
            }
            out->data = p;
            out->cap = cap;
        }
        zs.next_out = (unsigned char *)out->data + out->len;
        zs.avail_out = (uInt)room;
        rc = inflate(&zs, Z_NO_FLUSH);
        out->len += room - zs.avail_out;
        if (rc != Z_OK && rc != Z_STREAM_END && !(rc == Z_BUF_ERROR && zs.avail_out == 0)) {
            inflateEnd(&zs);
            return rc == Z_BUF_ERROR ? Z_DATA_ERROR : rc;
        }
        if (out->len > max_bytes) {
            inflateEnd(&zs);
            return -2;
        }
    }
    inflateEnd(&zs);
    if (rc != Z_STREAM_END)
        return Z_DATA_ERROR;
    if (zs.avail_in != 0 || left != 0)
        return Z_DATA_ERROR; /* bytes after the end of the stream */
    if (out->data)
        out->data[out->len] = '\0';
    return 0;
}

int bt_inflate(bt_coding coding, const char *body, size_t len, size_t max_bytes, bt_buf *out,
               bt_error *err)
{
    bt_buf_free(out);
    const char *name = coding == BT_CODING_GZIP ? "gzip" : "deflate";
    /* gzip: 16 + 15; deflate: the zlib wrapper, else raw deflate (-15) as IE once sent. */
    int rc = inflate_with(coding == BT_CODING_GZIP ? 16 + MAX_WBITS : MAX_WBITS, body, len,
                          max_bytes, out);
    if (rc == Z_DATA_ERROR && coding == BT_CODING_DEFLATE)
        rc = inflate_with(-MAX_WBITS, body, len, max_bytes, out);
    if (rc == 0)
        return 0;
    bt_buf_free(out);
    if (rc == -2)
        return bt_error_set(err, BT_ERR_TOO_LARGE,
                            "the %s request body inflates to more than the limit of %zu bytes "
                            "(--max-body-mb)",
                            name, max_bytes);
    if (rc == Z_MEM_ERROR)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory inflating the request body");
    return bt_error_set(err, BT_ERR_VALUE,
                        "the request body is not valid %s data (Content-Encoding: %s)", name, name);
}

int bt_accepts_gzip(const char *ae)
{
    if (!ae)
        return 0;
    const char *p = ae;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *tok = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t n = (size_t)(p - tok);
        int match = (n == 4 && strncasecmp(tok, "gzip", 4) == 0) ||
                    (n == 6 && strncasecmp(tok, "x-gzip", 6) == 0) || (n == 1 && *tok == '*');
        double q = 1.0;
        while (*p && *p != ',') {
            if (*p == ';') {
                p++;
                while (*p == ' ' || *p == '\t')
                    p++;
                if ((*p == 'q' || *p == 'Q') && p[1] == '=')
                    q = strtod(p + 2, NULL);
            } else {
                p++;
            }
        }
        if (match && q > 0)
            return 1;
    }
    return 0;
}

int bt_gzip_body(bt_buf *body)
{
    if (body->len < BT_GZIP_MIN_BYTES || body->oom)
        return 0;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return 0;
    size_t bound = deflateBound(&zs, (uLong)body->len) + 32;
    if (bound > body->len)
        bound = body->len; /* no gain beyond this: give up */
    bt_buf z = {0};
    z.data = malloc(bound + 1);
    if (!z.data) {
        deflateEnd(&zs);
        return 0;
    }
    z.cap = bound + 1;
    zs.next_in = (unsigned char *)body->data;
    zs.next_out = (unsigned char *)z.data;
    int rc = Z_OK;
    size_t left = body->len;
    while (rc == Z_OK) {
        if (zs.avail_in == 0 && left > 0) {
            zs.avail_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
            left -= zs.avail_in;
        }
        size_t room = bound - (size_t)((char *)zs.next_out - z.data);
        zs.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
        if (zs.avail_out == 0)
            break; /* not smaller */
        rc = deflate(&zs, left == 0 ? Z_FINISH : Z_NO_FLUSH);
    }
    size_t made = (size_t)((char *)zs.next_out - z.data);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END || made >= body->len) {
        bt_buf_free(&z);
        return 0;
    }
    z.len = made;
    z.data[made] = '\0';
    bt_buf_free(body);
    *body = z;
    return 1;
}
