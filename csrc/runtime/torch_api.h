/*
 * torch_api.h - finds and opens berth's libtorch shim (libberth_torch.so, next to the
 * extension module, or BERTH_TORCH_SHIM) on first use. Thread-safe; the library stays
 * loaded for the life of the process.
 */
#ifndef BERTH_TORCH_API_H
#define BERTH_TORCH_API_H

#include "berth/shim.h"
#include "runtime/error.h"

/* The shim's table, loading it on the first call. NULL with err set (BT_ERR_LOAD) when
 * the shim or libtorch cannot be loaded or speaks another ABI version. */
const berth_torch_api *bt_torch(bt_error *err);

/* The table if already loaded, else NULL. Never loads. */
const berth_torch_api *bt_torch_loaded(void);

#endif /* BERTH_TORCH_API_H */
