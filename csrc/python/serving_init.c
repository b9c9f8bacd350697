/* serving_init.c - the serving parts register themselves in berth._core here. */
#include "python/serving_init.h"

#include "python/py_serving.h"

int bt_serving_init(PyObject *module)
{
    return bt_py_serving_add_types(module) == 0 && bt_py_server_add_types(module) == 0 ? 0 : -1;
}
