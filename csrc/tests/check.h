/*
 * check.h - the C unit tests' assertions: each failed check prints where and what, the
 * test program goes on and exits 1 at the end (run by CTest: `make test-c`).
 */
#ifndef BERTH_CHECK_H
#define BERTH_CHECK_H

#include <stdio.h>
#include <string.h>

static int bt_check_failures;
static int bt_check_count;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        bt_check_count++;                                                                          \
        if (!(cond)) {                                                                             \
            bt_check_failures++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_STR(got, want)                                                                       \
    do {                                                                                           \
        const char *got_ = (got), *want_ = (want);                                                 \
        bt_check_count++;                                                                          \
        if (!got_ || !want_ ? got_ != want_ : strcmp(got_, want_) != 0) {                          \
            bt_check_failures++;                                                                   \
            fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #got,    \
                    got_ ? got_ : "(null)", want_ ? want_ : "(null)");                             \
        }                                                                                          \
    } while (0)

/* main's last line: the summary and the exit status. */
static int check_report(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, bt_check_count, bt_check_failures);
    return bt_check_failures ? 1 : 0;
}

#endif /* BERTH_CHECK_H */
