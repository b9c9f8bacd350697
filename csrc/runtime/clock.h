/*
 * clock.h - time for the runtime and the serving layer: the monotonic clock, sleeps,
 * deadlines for pthread_cond_timedwait, and a double kept in an atomic.
 */
#ifndef BERTH_CLOCK_H
#define BERTH_CLOCK_H

#include <stdint.h>
#include <string.h>
#include <time.h>

/* Monotonic clock in seconds. */
double bt_now(void);
/* Sleeps ms milliseconds (the polling waits of drains and shutdown). */
void bt_sleep_ms(int ms);
/* *ts = CLOCK_MONOTONIC now plus seconds (>= 0), for pthread_cond_timedwait on a
 * condition variable made with that clock. */
void bt_deadline_in(struct timespec *ts, double seconds);

/* A double kept in an _Atomic uint64_t (its bits): C11 has no atomic double. */
static inline uint64_t bt_double_bits(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}
static inline double bt_bits_double(uint64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

#endif /* BERTH_CLOCK_H */
