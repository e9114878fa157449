#ifndef JVDB_CORE_CLOCK_H
#define JVDB_CORE_CLOCK_H
#include <pthread.h>
#include <stdint.h>
int64_t clock_wall_ns(void); /* CLOCK_REALTIME in ns: timestamps that are stored or shown */
int64_t clock_mono_ns(void); /* CLOCK_MONOTONIC in ns: durations and deadlines */

/* The one deadline helper.  Every condition variable that is waited on with a timeout is made by
 * clock_cond_init, so its timed waits measure CLOCK_MONOTONIC and a step of the wall clock (NTP, an
 * administrator) neither stretches nor cuts a wait.  Returns 0 or the pthread error. */
int clock_cond_init(pthread_cond_t *cv);

/* Waits on cv (made by clock_cond_init; mu held) until signalled or until the CLOCK_MONOTONIC time
 * deadline_ns (a clock_mono_ns() value) has passed.  Returns 0, ETIMEDOUT or the pthread error. */
int clock_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ns);

/* clock_cond_wait_until for at most ns nanoseconds from now. */
int clock_cond_wait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ns);
#endif
