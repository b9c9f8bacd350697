/*
 * tensor.h - DLPack helpers for the C core: dtype names and sizes, the cast policy,
 * and tensors whose memory the core allocates itself (one malloc, freed by the deleter).
 */
#ifndef BERTH_TENSOR_H
#define BERTH_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "berth/dlpack.h"
#include "runtime/error.h"

/* The deepest tensor the core handles (NumPy 2's own limit); deeper ones are refused where
 * they enter (py_convert.c, bt_tensor_new), so fixed arrays of this size hold any shape. */
#define BT_MAX_NDIM 64

/* IEEE binary16 <-> binary32, round-to-nearest-even on the way down (the codec's FP16 and
 * the casts use these). */
float bt_half_to_float(uint16_t h);
uint16_t bt_float_to_half(float f);

/* Bytes per element (0 for a type berth does not handle). */
size_t bt_dtype_size(DLDataType t);

/* 1 if equal. */
int bt_dtype_equal(DLDataType a, DLDataType b);

/* Parses a numpy-style name ("float32", "int64", "bool"); 0 on success, -1 if unknown. */
int bt_dtype_from_name(const char *name, DLDataType *out);

/* The dtypes berth handles (berth/dtypes.h), in the table's order: i < bt_dtype_count(). */
size_t bt_dtype_count(void);
DLDataType bt_dtype_at(size_t i);

/* numpy-style dtype name ("float32") for a DLPack type, also for the unsigned and
 * bfloat16 types berth names in messages but does not handle; else "unknown". */
const char *bt_dtype_name(unsigned code, unsigned bits);

/* numpy-style name of t ("float32"). */
const char *bt_dtype_str(DLDataType t);

/* Whether the core casts from -> to on its own: widening casts that lose nothing, and
 * float64 -> float32 (documented: NumPy's default float meeting a float32 model). */
int bt_cast_allowed(DLDataType from, DLDataType to);

/* Elements in t (product of the shape; 1 for a scalar). -1 on overflow. */
int64_t bt_numel(const DLTensor *t);

/* 1 if t is C-contiguous (strides NULL or matching the shape). */
int bt_is_contiguous(const DLTensor *t);

/* A new C-contiguous host tensor of dtype/shape whose data is uninitialised; the struct,
 * shape and data are one allocation released by its deleter. NULL with err set on
 * overflow or out of memory. */
DLManagedTensor *bt_tensor_new(DLDataType dtype, int ndim, const int64_t *shape, bt_error *err);

/* Copies src (any strides, byte_offset honoured) into a new C-contiguous tensor of dtype
 * to, converting each element. NULL with err set on failure. */
DLManagedTensor *bt_tensor_cast(const DLTensor *src, DLDataType to, bt_error *err);

#endif /* BERTH_TENSOR_H */
