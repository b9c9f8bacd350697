/*
 * test_runtime.c - C unit tests of runtime pieces without a Python face: the dtype table
 * (names, casts, half floats), the cgroup CPU quota parser, the strict JSON parser and the
 * batch tuner's climb.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "runtime/json.h"
#include "runtime/tensor.h"
#include "runtime/threads.h"
#include "runtime/tuner.h"

static void test_dtype_names_round_trip(void)
{
    const char *names[] = {"float32", "float64", "float16", "int8", "int16",
                           "int32",   "int64",   "uint8",   "bool"};
    const size_t sizes[] = {4, 8, 2, 1, 2, 4, 8, 1, 1};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        DLDataType t;
        CHECK(bt_dtype_from_name(names[i], &t) == 0);
        CHECK_STR(bt_dtype_str(t), names[i]);
        CHECK(bt_dtype_size(t) == sizes[i]);
    }
    CHECK(bt_dtype_count() == sizeof names / sizeof names[0]);
    for (size_t i = 0; i < bt_dtype_count(); i++) { /* the table's every row, by name */
        DLDataType t = bt_dtype_at(i), back;
        CHECK(bt_dtype_from_name(bt_dtype_str(t), &back) == 0 && bt_dtype_equal(t, back));
        CHECK(bt_dtype_size(t) * 8 == t.bits);
    }
    DLDataType t = {kDLUInt, 16, 1}; /* named in messages, not handled */
    CHECK_STR(bt_dtype_str(t), "uint16");
    CHECK(bt_dtype_size(t) == 0);
    CHECK(bt_dtype_from_name("float", &t) != 0);
    CHECK(bt_dtype_from_name("", &t) != 0);
}

static void test_casts(void)
{
    DLDataType f32, f64, i32, i64, b;
    bt_dtype_from_name("float32", &f32);
    bt_dtype_from_name("float64", &f64);
    bt_dtype_from_name("int32", &i32);
    bt_dtype_from_name("int64", &i64);
    bt_dtype_from_name("bool", &b);
    CHECK(bt_cast_allowed(f64, f32));  /* NumPy's default float meeting a float32 model */
    CHECK(bt_cast_allowed(i32, i64));  /* lossless */
    CHECK(!bt_cast_allowed(f32, i32)); /* lossy */
    CHECK(!bt_cast_allowed(i64, i32));
    CHECK(bt_dtype_equal(f32, f32) && !bt_dtype_equal(f32, f64));
}

static void test_half_floats(void)
{
    int round_trips = 0;
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = bt_half_to_float((uint16_t)h);
        if (f != f) /* NaN: any NaN back */
            CHECK((bt_float_to_half(f) & 0x7c00u) == 0x7c00u && (bt_float_to_half(f) & 0x3ffu));
        else
            round_trips += bt_float_to_half(f) == (uint16_t)h;
    }
    CHECK(round_trips == 0x10000 - 2046); /* every half but the NaNs comes back exactly */
    CHECK(bt_half_to_float(0x3c00u) == 1.0f && bt_half_to_float(0xc000u) == -2.0f);
    CHECK(bt_half_to_float(0x0001u) == 5.9604644775390625e-08f); /* the smallest subnormal */
    CHECK(bt_float_to_half(65504.0f) == 0x7bffu && bt_float_to_half(65520.0f) == 0x7c00u);
    CHECK(bt_float_to_half(1.0f + 1.0f / 2048) == 0x3c00u); /* a tie: to even (down) */
    CHECK(bt_float_to_half(1.0f + 3.0f / 2048) == 0x3c02u); /* a tie: to even (up) */
    CHECK(bt_float_to_half(1e-9f) == 0 && bt_float_to_half(-1e-9f) == 0x8000u);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_cgroup_quota(void)
{
    char root[] = "/tmp/berth-cgroup-XXXXXX";
    if (!mkdtemp(root)) {
        CHECK(!"mkdtemp");
        return;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/pod", root);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/pod/c1", root);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/cpu.max", root);
    write_file(path, "max 100000\n");
    CHECK(bt_cgroup_cpu_limit(root, "/") == 0); /* no limit */
    snprintf(path, sizeof path, "%s/pod/cpu.max", root);
    write_file(path, "150000 100000\n"); /* 1.5 CPUs: rounded up */
    CHECK(bt_cgroup_cpu_limit(root, "/pod/c1") == 2);
    snprintf(path, sizeof path, "%s/pod/c1/cpu.max", root);
    write_file(path, "300000 100000\n"); /* looser than the parent's: the parent's wins */
    CHECK(bt_cgroup_cpu_limit(root, "/pod/c1/") == 2);
    write_file(path, "50000 100000\n");
    CHECK(bt_cgroup_cpu_limit(root, "/pod/c1") == 1);
    unlink(path);
    snprintf(path, sizeof path, "%s/pod/c1", root);
    rmdir(path);
    snprintf(path, sizeof path, "%s/pod/cpu.max", root);
    unlink(path);
    snprintf(path, sizeof path, "%s/pod", root);
    rmdir(path);
    snprintf(path, sizeof path, "%s/cpu.max", root);
    unlink(path);
    rmdir(root);
    CHECK(bt_cgroup_cpu_limit(NULL, "/") == 0);
}

static void test_strict_json(void)
{
    bt_json_error e;
    cJSON *v = bt_json_parse("{\"a\": [1, 2.5, true]}", 21, &e);
    CHECK(v != NULL);
    cJSON_Delete(v);
    const char *bad[] = {"[1] x", "\"a\\u0000\"", "[1,]", "{\"a\" 1}", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = bt_json_parse(bad[i], strlen(bad[i]), &e);
        if (v)
            fprintf(stderr, "parsed what it must refuse: %s\n", bad[i]);
        CHECK(v == NULL);
        cJSON_Delete(v);
    }
    /* duplicate keys parse, and are refused when looked up */
    v = bt_json_parse("{\"a\": 1, \"b\": 2, \"a\": 3}", 24, &e);
    const cJSON *member = NULL;
    bt_error err = {BT_OK, ""};
    CHECK(v && bt_json_get(v, "b", "the body", &member, BT_ERR_VALUE, &err) == 0 && member);
    CHECK(v && bt_json_get(v, "a", "the body", &member, BT_ERR_VALUE, &err) == -1);
    CHECK_STR(err.message, "duplicate key 'a' in the body");
    cJSON_Delete(v);
    v = bt_json_parse("{\n  \"a\": tru\n}", 14, &e);
    CHECK(v == NULL && e.line == 2);
    const char nul[] = "[1,\0 2]";
    CHECK(bt_json_parse(nul, sizeof nul - 1, &e) == NULL);
}

/* Times every size the tuner asks for with forwards costing cost(rows) seconds (the first
 * of each size at 10x: it must not count) until the climb ends; returns the sizes timed. */
static size_t climb(bt_tuner *t, int max, double (*cost)(int rows), int *sizes)
{
    size_t n = 0;
    bt_tuner_start(t, max);
    CHECK(t->limit == 1 && !bt_tuner_done(t));
    for (int guard = 0; !bt_tuner_done(t) && guard < 1000; guard++) {
        int rows = t->measuring;
        CHECK(t->limit == rows); /* batches of the size being timed can form */
        CHECK(bt_tuner_observe(t, rows + 1, 1.0) == 0); /* other sizes do not count */
        CHECK(bt_tuner_observe(t, rows, 10 * cost(rows)) == 0);
        for (int i = 0; i < BT_TUNE_TIMED; i++) {
            int ended = bt_tuner_observe(t, rows, cost(rows) * (i == 1 ? 1.0 : 1.1));
            CHECK(ended == (i == BT_TUNE_TIMED - 1));
        }
        sizes[n++] = rows;
    }
    return n;
}

static double same_per_row(int rows) { return 0.05 * rows; }
static double halving(int rows) { return 0.001 * (rows < 8 ? 8 : rows); } /* up to 8 rows */
static double squared(int rows) { return 0.001 * rows * rows; }

static void test_tuner_climbs(void)
{
    bt_tuner t;
    int sizes[BT_TUNE_MAX_STEPS];
    /* rows that cost the same: two flat steps end it, and 1 row is as cheap as any */
    CHECK(climb(&t, 64, same_per_row, sizes) == 3 && sizes[2] == 4);
    CHECK(t.limit == 1 && bt_tuner_done(&t));
    CHECK(t.steps[0].rows == 1 && t.steps[0].seconds_per_row == 0.05); /* the best of 3 */
    char text[256];
    bt_tuner_text(&t, text, sizeof text);
    CHECK_STR(text, "batch limit 1 rows; ms per row at 1/2/4 rows: 50/50/50");
    /* a forward that costs the same whatever the batch up to 8 rows: the limit is 8, after
     * two flat sizes (16 and 32) */
    CHECK(climb(&t, 64, halving, sizes) == 6 && sizes[5] == 32 && t.limit == 8);
    /* rows that cost ever more: at twice the cheapest the climb stops */
    CHECK(climb(&t, 64, squared, sizes) == 3 && t.limit == 1);
    /* a max that is not a power of two ends the ladder */
    size_t n = climb(&t, 24, halving, sizes);
    CHECK(n == 6 && sizes[4] == 16 && sizes[5] == 24 && t.limit == 8);
    CHECK(bt_tuner_forwards_left(&t) == 0); /* ended */
    /* the forwards still to run, BT_TUNE_TIMED + 1 of each size: 1, 2, 4, ... 16, 24 */
    bt_tuner_start(&t, 24);
    CHECK(bt_tuner_forwards_left(&t) == (BT_TUNE_TIMED + 1) * 6);
    /* while it climbs, the text says what it is timing */
    bt_tuner_start(&t, 64);
    CHECK(bt_tuner_forwards_left(&t) == (BT_TUNE_TIMED + 1) * 7);
    bt_tuner_text(&t, text, sizeof text);
    CHECK_STR(text, "batch limit 1 rows for now, timing batches of 1 rows as they are served; no "
                    "batch size timed yet");
    for (int i = 0; i <= BT_TUNE_TIMED; i++)
        bt_tuner_observe(&t, 1, 0.004);
    bt_tuner_text(&t, text, sizeof text);
    CHECK_STR(text, "batch limit 2 rows for now, timing batches of 2 rows as they are served; ms "
                    "per row at 1 rows: 4");
    bt_tuner_observe(&t, 2, 0.004); /* the untimed first of size 2 */
    CHECK(bt_tuner_forwards_left(&t) == BT_TUNE_TIMED + (BT_TUNE_TIMED + 1) * 5);
    bt_tuner_text(&t, text, 12); /* cut, still terminated */
    CHECK_STR(text, "batch limit");
    CHECK(bt_tuner_observe(&t, 1, 0.001) == 0); /* size 1 is done: no longer counted */
}

int main(void)
{
    test_dtype_names_round_trip();
    test_casts();
    test_half_floats();
    test_cgroup_quota();
    test_strict_json();
    test_tuner_climbs();
    return check_report("test_runtime");
}
