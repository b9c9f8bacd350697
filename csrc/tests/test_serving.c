/*
 * test_serving.c - C unit tests of serving pieces without a Python face: how paths map to
 * endpoints (the registry's routing), the bearer token check and the growable buffer's JSON
 * strings.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "check.h"
#include "serving/codec.h"
#include "serving/endpoints.h"

static void check_route(const char *path, int ep, const char *name, const char *version)
{
    bt_route r;
    bt_route_path(path, &r);
    char got_name[256] = "", got_version[64] = "";
    if (r.name)
        snprintf(got_name, sizeof got_name, "%.*s", (int)r.name_len, r.name);
    if (r.version)
        snprintf(got_version, sizeof got_version, "%.*s", (int)r.version_len, r.version);
    if (r.ep != ep)
        fprintf(stderr, "route %s: endpoint %s, expected %s\n", path, BT_EP_NAMES[r.ep],
                BT_EP_NAMES[ep]);
    CHECK(r.ep == ep);
    CHECK_STR(r.name ? got_name : NULL, name);
    CHECK_STR(r.version ? got_version : NULL, version);
}

static void test_routes(void)
{
    check_route("/", BT_EP_LIVE, NULL, NULL);
    check_route("/v2/health/live", BT_EP_LIVE, NULL, NULL);
    check_route("/v2/health/ready", BT_EP_READY, NULL, NULL);
    check_route("/v2", BT_EP_SERVER_META, NULL, NULL);
    check_route("/metrics", BT_EP_METRICS, NULL, NULL);
    check_route("/v2/models/stats", BT_EP_STATS, NULL, NULL);
    check_route("/v2/models/m", BT_EP_MODEL_META, "m", NULL);
    check_route("/v2/models/m/ready", BT_EP_MODEL_READY, "m", NULL);
    check_route("/v2/models/m/config", BT_EP_MODEL_CONFIG, "m", NULL);
    check_route("/v2/models/m/stats", BT_EP_STATS, "m", NULL);
    check_route("/v2/models/m/infer", BT_EP_INFER, "m", NULL);
    check_route("/v2/models/m/versions/12/infer", BT_EP_INFER, "m", "12");
    check_route("/v2/models/m/versions/2", BT_EP_MODEL_META, "m", "2");
    check_route("/v2/models/m/versions/x/stats", BT_EP_STATS, "m", "x"); /* 404 later */
    check_route("/v1/models/m", BT_EP_V1_META, "m", NULL);
    check_route("/v1/models/m:predict", BT_EP_V1_PREDICT, "m", NULL);
    check_route("/v2/repository/index", BT_EP_REPO_INDEX, NULL, NULL);
    check_route("/v2/repository/models/m/load", BT_EP_REPO_LOAD, "m", NULL);
    check_route("/v2/repository/models/m/unload", BT_EP_REPO_UNLOAD, "m", NULL);
    /* nothing else names a model */
    const char *other[] = {"/v2/models//infer",
                           "/v2/models/m/versions//infer",
                           "/v2/models/m/versions/",
                           "/v2/models/m/infer/x",
                           "/v1/models/m/x",
                           "/v1/models/",
                           "/v2/repository/models//load",
                           "/v2/repository/models/m/1/load",
                           "/v2/repository/models/m",
                           "/v2/repository/models/../../load/x",
                           "/v3",
                           "/v2/health"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        check_route(other[i], BT_EP_OTHER, NULL, NULL);
    CHECK(bt_endpoint_is_model(BT_EP_INFER) && !bt_endpoint_is_model(BT_EP_REPO_LOAD) &&
          !bt_endpoint_is_model(BT_EP_STATS));
}

static void test_token(void)
{
    const char *token = "s3cret";
    CHECK(bt_token_ok(NULL, 0, NULL));
    CHECK(bt_token_ok(token, 6, "Bearer s3cret"));
    CHECK(bt_token_ok(token, 6, "bearer   s3cret \t"));
    CHECK(!bt_token_ok(token, 6, NULL));
    CHECK(!bt_token_ok(token, 6, "Bearer s3cre"));
    CHECK(!bt_token_ok(token, 6, "Bearer s3cretX"));
    CHECK(!bt_token_ok(token, 6, "Basic s3cret"));
    CHECK(!bt_token_ok(token, 6, "Bearer "));
}

static void test_buffer_strings(void)
{
    bt_buf b = {0};
    for (int i = 0; i < 1000; i++)
        bt_buf_printf(&b, "%d,", i);
    CHECK(b.len == 3890 && !b.oom);
    b.len = 0;
    bt_buf_json_string(&b, "a\"b\\c\n\x01");
    CHECK(b.len == 17 && memcmp(b.data, "\"a\\\"b\\\\c\\n\\u0001\"", 17) == 0);
    b.len = 0;
    bt_buf_json_string(&b, "x\xff"
                           "y"); /* a byte that starts no character: U+FFFD */
    CHECK(b.len == 10 && memcmp(b.data, "\"x\\ufffdy\"", 10) == 0);
    bt_buf_free(&b);
}

int main(void)
{
    test_routes();
    test_token();
    test_buffer_strings();
    return check_report("test_serving");
}
