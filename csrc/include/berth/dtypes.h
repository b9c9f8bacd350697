/*
 * dtypes.h - the one table of the tensor element types berth handles. Each row: its name
 * in berth.json and NumPy, its Open Inference Protocol datatype, its DLPack code and
 * bits, NumPy's type number suffix (NPY_...) and libtorch's scalar type (at::k...).
 * The C core (tensor.c, error.c, the codec, the Python binding) and the shim expand it
 * with their own X; _core.DTYPES hands it to Python. Include dlpack.h first.
 */
#ifndef BERTH_DTYPES_H
#define BERTH_DTYPES_H

/* The columns are the point: clang-format leaves the table alone. */
/* clang-format off */
/*      name       datatype  DLPack code    bits  NPY_      at::k */
#define BERTH_DTYPES(X)                                  \
    X("bool",    "BOOL",  BERTH_DL_BOOL, 8,  BOOL,    Bool)   \
    X("uint8",   "UINT8", kDLUInt,       8,  UINT8,   Byte)   \
    X("int8",    "INT8",  kDLInt,        8,  INT8,    Char)   \
    X("int16",   "INT16", kDLInt,        16, INT16,   Short)  \
    X("int32",   "INT32", kDLInt,        32, INT32,   Int)    \
    X("int64",   "INT64", kDLInt,        64, INT64,   Long)   \
    X("float16", "FP16",  kDLFloat,      16, FLOAT16, Half)   \
    X("float32", "FP32",  kDLFloat,      32, FLOAT32, Float)  \
    X("float64", "FP64",  kDLFloat,      64, FLOAT64, Double)
/* clang-format on */

#endif /* BERTH_DTYPES_H */
