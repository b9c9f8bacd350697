/*
 * berth/dlpack.h - the DLPack tensor-exchange structs (DLPack ABI v0.6+).
 *
 * The C core never includes a torch header, so it declares the DLPack structs itself.
 * The layout is DLPack's: libtorch ships a layout-identical copy (ATen/dlpack.h) with
 * the same include guard, so whichever header comes first wins and both sides agree.
 *
 * Ownership: a DLTensor owns nothing. A DLManagedTensor owns whatever manager_ctx
 * points at and is released by calling its deleter exactly once (deleter may be NULL).
 */
#ifndef DLPACK_DLPACK_H_
#define DLPACK_DLPACK_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    kDLCPU = 1, /* host memory */
    kDLCUDA = 2 /* CUDA device memory (never produced by berth) */
} DLDeviceType;

typedef struct {
    DLDeviceType device_type; /* where the memory lives */
    int device_id;            /* 0 for host memory */
} DLDevice;

typedef enum {
    kDLInt = 0U,   /* signed integer */
    kDLUInt = 1U,  /* unsigned integer */
    kDLFloat = 2U, /* IEEE floating point */
    kDLBfloat = 4U /* bfloat16 */
} DLDataTypeCode;

typedef struct {
    uint8_t code;   /* a DLDataTypeCode (or BERTH_DL_BOOL) */
    uint8_t bits;   /* bits per lane: 8, 16, 32, 64 */
    uint16_t lanes; /* always 1 here */
} DLDataType;

typedef struct {
    void *data;           /* start of the allocation; element 0 is at data + byte_offset */
    DLDevice device;      /* always kDLCPU in berth */
    int32_t ndim;         /* number of dimensions, 0 for a scalar */
    DLDataType dtype;     /* element type */
    int64_t *shape;       /* ndim extents */
    int64_t *strides;     /* ndim strides in elements, or NULL for C-contiguous */
    uint64_t byte_offset; /* offset of element 0 from data, in bytes */
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;                            /* the tensor view */
    void *manager_ctx;                             /* owner of the memory, for the deleter */
    void (*deleter)(struct DLManagedTensor *self); /* releases everything; called once */
} DLManagedTensor;

#ifdef __cplusplus
}
#endif
#endif /* DLPACK_DLPACK_H_ */

/* DLPack v0.8 names bool as its own type code; v0.6 (libtorch 1.13) has no name for it.
 * berth always exchanges bool as code 6, 8 bits, whatever the header in use. */
#ifndef BERTH_DL_BOOL
#define BERTH_DL_BOOL 6U
#endif
