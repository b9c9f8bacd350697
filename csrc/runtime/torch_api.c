/* torch_api.c - dlopen of the libtorch shim, once per process. */
#define _GNU_SOURCE
#include "runtime/torch_api.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic(const berth_torch_api *) api = NULL;
static bt_error load_error;

static void load_shim(void)
{
    char path[PATH_MAX];
    const char *env = getenv("BERTH_TORCH_SHIM");
    if (env && env[0]) {
        snprintf(path, sizeof path, "%s", env);
    } else {
        Dl_info info;
        if (!dladdr((void *)&bt_torch, &info) || !info.dli_fname) {
            bt_error_set(&load_error, BT_ERR_LOAD,
                         "cannot locate berth's extension module on disk");
            return;
        }
        snprintf(path, sizeof path, "%s", info.dli_fname);
        char *slash = strrchr(path, '/');
        size_t dir_len = slash ? (size_t)(slash - path + 1) : 0;
        snprintf(path + dir_len, sizeof path - dir_len, "libberth_torch.so");
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        bt_error_set(&load_error, BT_ERR_LOAD, "cannot load berth's libtorch shim: %s", dlerror());
        return;
    }
    berth_torch_get_api_fn get = NULL;
    *(void **)&get = dlsym(lib, BERTH_TORCH_GET_API_SYMBOL);
    const berth_torch_api *table = get ? get(BERTH_TORCH_ABI_VERSION) : NULL;
    if (!table || table->struct_size < sizeof(berth_torch_api)) {
        bt_error_set(&load_error, BT_ERR_LOAD,
                     "berth's libtorch shim at %s does not speak C ABI version %u: rebuild berth",
                     path, BERTH_TORCH_ABI_VERSION);
        dlclose(lib);
        return;
    }
    atomic_store(&api, table);
}

const berth_torch_api *bt_torch(bt_error *err)
{
    pthread_once(&once, load_shim);
    const berth_torch_api *table = atomic_load(&api);
    if (!table && err)
        *err = load_error;
    return table;
}

const berth_torch_api *bt_torch_loaded(void) { return atomic_load(&api); }
