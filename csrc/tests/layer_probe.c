/*
 * layer_probe.c - code that breaks the layer rule on purpose, for the build's test of
 * the rule (CMakeLists.txt: layer_rule_include, layer_rule_link). Never part of berth.
 * Built as runtime code, it must fail: with BERTH_PROBE_INCLUDE at compile time (a
 * serving header is out of the runtime's reach), without it at link time (the runtime's
 * objects do not define a serving function).
 */
#ifdef BERTH_PROBE_INCLUDE
#include "serving/codec.h"
#endif
#include "runtime/error.h"

struct bt_buf;
void bt_buf_puts(struct bt_buf *b, const char *s); /* a serving function */

int main(void)
{
    bt_error err = {0};
    bt_buf_puts(0, err.message);
    return 0;
}
