/* serving_init.c - the serving parts register themselves here (see serving_init.h). */
#include "serving_init.h"

int bt_serving_init(PyObject *module) {
    (void)module;
    return 0;
}
