/*
 * log.c — one-line log messages to stderr with a UTC timestamp and level.
 *
 * The threshold comes from JVDB_LOG (debug|info|warn|error, default warn for the library so an
 * embedding program is not chatty; the server lowers it to info).  One fprintf per line keeps lines
 * from different threads whole.  `jvdb serve --log-format json` switches to one JSON object per line
 * ({"ts", "level", "msg", and the caller's fields}) for log shippers; every byte is escaped so a
 * line is valid JSON whatever a client sent.
 *
 * An embedding application owns logging through jvdb_set_log_callback(): with a callback installed,
 * each line above the threshold goes to it (level + message) instead of stderr.  The callback is
 * called under a read lock that jvdb_set_log_callback() takes for writing, so once that returns no
 * thread is still inside the old callback; only that rare call ever waits on it.
 */
#include "core/log.h"

#include "core/err.h"
#include "jvdb.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(JVDB_LOG_DEBUG == (int)LOG_DEBUG && JVDB_LOG_ERROR == (int)LOG_ERROR,
               "public and internal log levels must agree");

static atomic_int log_threshold = -1;
static pthread_rwlock_t log_cb_lock = PTHREAD_RWLOCK_INITIALIZER;
static jvdb_log_fn log_cb; /* under log_cb_lock */
static void *log_cb_user;

/* The threshold JVDB_LOG names (debug, info, warn, error); warn when unset or unknown. */
static int log_level_from_env(void)
{
    const char *v = getenv("JVDB_LOG");
    if (!v) return LOG_WARN;
    if (!strcmp(v, "debug")) return LOG_DEBUG;
    if (!strcmp(v, "info")) return LOG_INFO;
    if (!strcmp(v, "error")) return LOG_ERROR;
    return LOG_WARN;
}

void log_set_level(enum log_level level) { atomic_store(&log_threshold, (int)level); }

int jvdb_set_log_level(jvdb_log_level level)
{
    err_clear();
    if ((int)level < LOG_DEBUG || (int)level > LOG_ERROR)
        return err_set(JVDB_EINVAL, "log level %d is not one of JVDB_LOG_DEBUG (0) .. JVDB_LOG_ERROR (3)", (int)level);
    log_set_level((enum log_level)level);
    return JVDB_OK;
}

void jvdb_set_log_callback(jvdb_log_fn fn, void *user)
{
    pthread_rwlock_wrlock(&log_cb_lock);
    log_cb = fn;
    log_cb_user = user;
    pthread_rwlock_unlock(&log_cb_lock);
}

/* Hands the line to the application's callback; returns 0 when none is installed. */
static int log_to_callback(enum log_level level, const char *text)
{
    pthread_rwlock_rdlock(&log_cb_lock);
    int taken = log_cb != NULL;
    if (taken) log_cb(log_cb_user, (jvdb_log_level)level, text);
    pthread_rwlock_unlock(&log_cb_lock);
    return taken;
}

static int log_json;

void log_set_json(int on) { log_json = on; }
int log_is_json(void) { return log_json; }

size_t log_json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    if (!cap) return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        const char *e = tmp;
        if (*p == '"') e = "\\\"";
        else if (*p == '\\') e = "\\\\";
        else if (*p < 0x20 || *p >= 0x7f) snprintf(tmp, sizeof tmp, "\\u%04x", *p);
        else tmp[0] = (char)*p, tmp[1] = 0;
        size_t el = strlen(e);
        if (n + el + 1 > cap) break;
        memcpy(out + n, e, el);
        n += el;
    }
    out[n] = 0;
    return n;
}

/* Formats one message at or above the threshold and hands it to the application's callback, else writes it to
 * stderr as a timestamped line or a JSON object. */
static void log_emit(enum log_level level, const char *fields, const char *fmt, va_list ap)
{
    static const char *names[] = { "debug", "info", "warn", "error" };
    int threshold = atomic_load_explicit(&log_threshold, memory_order_relaxed);
    if (threshold < 0) {
        /* Racing first loggers compute the same value; one that log_set_level() stored wins. */
        int unset = -1;
        threshold = log_level_from_env();
        if (!atomic_compare_exchange_strong(&log_threshold, &unset, threshold)) threshold = unset;
    }
    if ((int)level < threshold) return;
    char text[2048];
    vsnprintf(text, sizeof text, fmt, ap);
    if (log_to_callback(level, text)) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[96];
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    if (!log_json) {
        fprintf(stderr, "%s %-5s %s\n", stamp, names[level], text);
        return;
    }
    char esc[sizeof text * 6 + 1];
    log_json_escape(esc, sizeof esc, text);
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"%s%s}\n", stamp, names[level], esc,
            fields && *fields ? "," : "", fields ? fields : "");
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, NULL, fmt, ap);
    va_end(ap);
}

void log_fields(enum log_level level, const char *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, fields, fmt, ap);
    va_end(ap);
}
