#ifndef JVDB_CORE_CLOCK_H
#define JVDB_CORE_CLOCK_H
#include <pthread.h>
#include <stddef.h>
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

/* RFC 3339 times ("2026-11-29T21:00:00.5Z", "...+01:00"; fractional seconds up to ns, "T" or
 * space, "Z"/"z" or an offset) -> Unix time in ns.  Returns 0, or -1 for anything else. */
int clock_parse_rfc3339(const char *s, int64_t *ns);
/* Unix time in ns -> "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (UTC; the fraction without trailing zeros). */
void clock_format_rfc3339(int64_t ns, char *buf, size_t cap);
#endif
