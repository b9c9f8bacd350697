/* tensor.c - dtype policy, element conversion and core-owned tensors. */
#include "runtime/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "berth/dtypes.h"

static const struct {
    const char *name;
    uint8_t code, bits;
} kDtypes[] = {
#define BT_ROW(NAME, DATATYPE, CODE, BITS, NPY, TORCH) {NAME, CODE, BITS},
    BERTH_DTYPES(BT_ROW)
#undef BT_ROW
};
#define N_DTYPES (sizeof kDtypes / sizeof kDtypes[0])

size_t bt_dtype_size(DLDataType t)
{
    for (size_t i = 0; t.lanes == 1 && i < N_DTYPES; ++i)
        if (t.code == kDtypes[i].code && t.bits == kDtypes[i].bits)
            return t.bits / 8u;
    return 0;
}

int bt_dtype_equal(DLDataType a, DLDataType b)
{
    return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

int bt_dtype_from_name(const char *name, DLDataType *out)
{
    for (size_t i = 0; name && i < N_DTYPES; ++i) {
        if (strcmp(name, kDtypes[i].name) == 0) {
            out->code = kDtypes[i].code;
            out->bits = kDtypes[i].bits;
            out->lanes = 1;
            return 0;
        }
    }
    return -1;
}

size_t bt_dtype_count(void) { return N_DTYPES; }

DLDataType bt_dtype_at(size_t i)
{
    DLDataType t = {kDtypes[i].code, kDtypes[i].bits, 1};
    return t;
}

const char *bt_dtype_name(unsigned code, unsigned bits)
{
    for (size_t i = 0; i < N_DTYPES; ++i)
        if (kDtypes[i].code == code && kDtypes[i].bits == bits)
            return kDtypes[i].name;
    static const struct {
        const char *name;
        unsigned code, bits;
    } kUnhandled[] = {
        {"uint16", kDLUInt, 16},
        {"uint32", kDLUInt, 32},
        {"uint64", kDLUInt, 64},
        {"bfloat16", 4 /* kDLBfloat */, 16},
    };
    for (size_t i = 0; i < sizeof kUnhandled / sizeof kUnhandled[0]; ++i)
        if (kUnhandled[i].code == code && kUnhandled[i].bits == bits)
            return kUnhandled[i].name;
    return "unknown";
}

const char *bt_dtype_str(DLDataType t) { return bt_dtype_name(t.code, t.bits); }

int bt_cast_allowed(DLDataType from, DLDataType to)
{
    if (!bt_dtype_size(from) || !bt_dtype_size(to))
        return 0;
    if (bt_dtype_equal(from, to))
        return 1;
    if (from.code == kDLFloat && to.code == kDLFloat) /* widening, or the float64 rule */
        return to.bits > from.bits || (from.bits == 64 && to.bits == 32);
    if (from.code == kDLInt && to.code == kDLInt)
        return to.bits > from.bits;
    if (from.code == kDLUInt && to.code == kDLInt)
        return to.bits > from.bits;
    if ((from.code == kDLInt || from.code == kDLUInt) && to.code == kDLFloat) {
        /* exact when the integer fits the float's significand */
        unsigned significand = to.bits == 16 ? 11 : to.bits == 32 ? 24 : 53;
        return from.bits < significand;
    }
    return 0;
}

int64_t bt_numel(const DLTensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; ++i) {
        if (t->shape[i] < 0)
            return -1;
        if (t->shape[i] == 0)
            return 0;
        if (n > INT64_MAX / t->shape[i])
            return -1;
        n *= t->shape[i];
    }
    return n;
}

int bt_is_contiguous(const DLTensor *t)
{
    if (!t->strides)
        return 1;
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; --i) {
        if (t->shape[i] != 1 && t->strides[i] != expect)
            return 0;
        expect *= t->shape[i];
    }
    return 1;
}

static void free_owned(DLManagedTensor *m) { free(m); }

DLManagedTensor *bt_tensor_new(DLDataType dtype, int ndim, const int64_t *shape, bt_error *err)
{
    size_t item = bt_dtype_size(dtype);
    if (!item || ndim < 0 || ndim > BT_MAX_NDIM) {
        bt_error_set(err, BT_ERR_VALUE, "cannot make a tensor of dtype %s with %d dimensions",
                     bt_dtype_str(dtype), ndim);
        return NULL;
    }
    size_t count = 1;
    for (int i = 0; i < ndim; ++i) {
        if (shape[i] < 0 || (shape[i] > 0 && count > SIZE_MAX / 2 / (size_t)shape[i])) {
            bt_error_set(err, BT_ERR_VALUE, "tensor shape is negative or too large");
            return NULL;
        }
        count *= (size_t)shape[i];
    }
    size_t head = sizeof(DLManagedTensor) + sizeof(int64_t) * (size_t)ndim;
    head = (head + 63) & ~(size_t)63; /* data 64-byte aligned within the block */
    if (count > (SIZE_MAX - head - 64) / item) {
        bt_error_set(err, BT_ERR_VALUE, "tensor of %zu elements is too large", count);
        return NULL;
    }
    DLManagedTensor *m = aligned_alloc(64, (head + count * item + 63) & ~(size_t)63);
    if (!m) {
        bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory allocating a %zu-byte tensor",
                     count * item);
        return NULL;
    }
    memset(m, 0, sizeof *m);
    int64_t *dims = (int64_t *)(m + 1);
    if (ndim)
        memcpy(dims, shape, sizeof(int64_t) * (size_t)ndim);
    m->dl_tensor.data = (char *)m + head;
    m->dl_tensor.device.device_type = kDLCPU;
    m->dl_tensor.ndim = ndim;
    m->dl_tensor.dtype = dtype;
    m->dl_tensor.shape = dims;
    m->dl_tensor.strides = NULL;
    m->dl_tensor.byte_offset = 0;
    m->manager_ctx = NULL;
    m->deleter = free_owned;
    return m;
}

/* IEEE half <-> single, round-to-nearest-even on the way down. */
float bt_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) {
                man <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t bt_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
    uint32_t man = x & 0x7fffffu;
    if (((x >> 23) & 0xffu) == 0xffu)
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rest = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1u)))
            ++half;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13), rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        ++half;
    return (uint16_t)half;
}

static double load_float(const char *p, DLDataType t)
{
    switch (t.code) {
    case kDLFloat:
        if (t.bits == 16) {
            uint16_t h;
            memcpy(&h, p, 2);
            return bt_half_to_float(h);
        }
        if (t.bits == 32) {
            float v;
            memcpy(&v, p, 4);
            return v;
        }
        {
            double v;
            memcpy(&v, p, 8);
            return v;
        }
    case kDLInt:
        if (t.bits == 8)
            return *(const int8_t *)p;
        if (t.bits == 16) {
            int16_t v;
            memcpy(&v, p, 2);
            return v;
        }
        if (t.bits == 32) {
            int32_t v;
            memcpy(&v, p, 4);
            return v;
        }
        {
            int64_t v;
            memcpy(&v, p, 8);
            return (double)v;
        }
    default: /* uint8, bool */
        return *(const uint8_t *)p;
    }
}

static int64_t load_int(const char *p, DLDataType t)
{
    if (t.code == kDLFloat)
        return (int64_t)load_float(p, t);
    if (t.code == kDLInt) {
        if (t.bits == 8)
            return *(const int8_t *)p;
        if (t.bits == 16) {
            int16_t v;
            memcpy(&v, p, 2);
            return v;
        }
        if (t.bits == 32) {
            int32_t v;
            memcpy(&v, p, 4);
            return v;
        }
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    return *(const uint8_t *)p;
}

static void store(char *p, DLDataType t, const char *src, DLDataType from)
{
    if (t.code == kDLFloat) {
        double v = load_float(src, from);
        if (t.bits == 16) {
            uint16_t h = bt_float_to_half((float)v);
            memcpy(p, &h, 2);
        } else if (t.bits == 32) {
            float f = (float)v;
            memcpy(p, &f, 4);
        } else
            memcpy(p, &v, 8);
        return;
    }
    if (t.code == BERTH_DL_BOOL) {
        *(uint8_t *)p =
            from.code == kDLFloat ? load_float(src, from) != 0.0 : load_int(src, from) != 0;
        return;
    }
    int64_t v = load_int(src, from);
    switch (t.bits) {
    case 8: {
        int8_t x = (int8_t)v;
        memcpy(p, &x, 1);
        break;
    }
    case 16: {
        int16_t x = (int16_t)v;
        memcpy(p, &x, 2);
        break;
    }
    case 32: {
        int32_t x = (int32_t)v;
        memcpy(p, &x, 4);
        break;
    }
    default:
        memcpy(p, &v, 8);
        break;
    }
}

DLManagedTensor *bt_tensor_cast(const DLTensor *src, DLDataType to, bt_error *err)
{
    size_t in_item = bt_dtype_size(src->dtype), out_item = bt_dtype_size(to);
    if (!in_item || !out_item) {
        bt_error_set(err, BT_ERR_TYPE, "cannot convert %s to %s", bt_dtype_str(src->dtype),
                     bt_dtype_str(to));
        return NULL;
    }
    DLManagedTensor *dst = bt_tensor_new(to, src->ndim, src->shape, err);
    if (!dst)
        return NULL;
    int64_t n = bt_numel(src);
    const char *base = (const char *)src->data + src->byte_offset;
    char *out = dst->dl_tensor.data;
    if (n > 0 && bt_is_contiguous(src) && bt_dtype_equal(src->dtype, to)) {
        memcpy(out, base, (size_t)n * in_item);
        return dst;
    }
    int64_t index[BT_MAX_NDIM] = {0};
    for (int64_t k = 0; k < n; ++k) {
        int64_t off = 0;
        if (src->strides) {
            for (int d = 0; d < src->ndim; ++d)
                off += index[d] * src->strides[d];
        } else {
            off = k;
        }
        store(out + (size_t)k * out_item, to, base + off * (int64_t)in_item, src->dtype);
        for (int d = src->ndim - 1; d >= 0; --d) { /* advance the N-d index */
            if (++index[d] < src->shape[d])
                break;
            index[d] = 0;
        }
    }
    return dst;
}
