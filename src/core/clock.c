/* clock.c — wall and monotonic time in nanoseconds, the two clocks the library uses, and the one way to
 * wait with a timeout.  Invariant: deadlines are CLOCK_MONOTONIC values and every timed condition wait
 * measures CLOCK_MONOTONIC (clock_cond_init), so the wall clock never decides how long a thread sleeps. */
#include "core/clock.h"

#include <time.h>

int64_t clock_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int clock_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc) return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!rc) rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

int clock_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns)
{
    if (deadline_ns < 0) deadline_ns = 0;
    struct timespec ts = { (time_t)(deadline_ns / 1000000000), (long)(deadline_ns % 1000000000) };
    return pthread_cond_timedwait(cv, mu, &ts);
}

int clock_cond_wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ns)
{
    int64_t now = clock_mono_ns();
    return clock_cond_wait_until(cv, mu, ns > INT64_MAX - now ? INT64_MAX : now + ns);
}
