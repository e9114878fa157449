/* clock.c — wall and monotonic time in nanoseconds, the two clocks the library uses, and the one way to
 * wait with a timeout.  Invariant: deadlines are CLOCK_MONOTONIC values and every timed condition wait
 * measures CLOCK_MONOTONIC (clock_cond_init), so the wall clock never decides how long a thread sleeps. */
#include "core/clock.h"

#include <stdio.h>
#include <string.h>
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

int clock_parse_rfc3339(const char *s, int64_t *ns)
{
    int y, mo, d, h, mi, sec, n = 0;
    char t;
    if (!s || sscanf(s, "%4d-%2d-%2d%c%2d:%2d:%2d%n", &y, &mo, &d, &t, &h, &mi, &sec, &n) != 7 || n != 19) return -1;
    if ((t != 'T' && t != 't' && t != ' ') || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
        y < 1970)
        return -1;
    const char *p = s + n;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 9) frac = frac * 10 + (*p - '0');
        if (!digits) return -1;
        for (; digits < 9; digits++) frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 || k != 5 || oh > 23 || om > 59) return -1;
        off = (int64_t)(oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -1;
    }
    if (*p) return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = sec };
    time_t secs = timegm(&tm);
    if (secs == (time_t)-1 || tm.tm_mday != d) return -1; /* e.g. February 30 */
    *ns = ((int64_t)secs - off) * 1000000000 + frac;
    return 0;
}

void clock_format_rfc3339(int64_t ns, char *buf, size_t cap)
{
    time_t s = (time_t)(ns / 1000000000);
    long frac = (long)(ns % 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char d[32], f[16] = "";
    strftime(d, sizeof d, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac) {
        int n = snprintf(f, sizeof f, ".%09ld", frac);
        while (n > 1 && f[n - 1] == '0') f[--n] = 0; /* trailing zeros of the fraction say nothing */
    }
    snprintf(buf, cap, "%s%sZ", d, f);
}
