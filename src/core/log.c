/*
 * log.c — one-line log messages to stderr with a UTC timestamp and level.
 *
 * The threshold comes from JVDB_LOG (debug|info|warn|error, default warn for the library so an
 * embedding program is not chatty; the server lowers it to info).  One fprintf per line keeps lines
 * from different threads whole.  `jvdb serve --log-format json` switches to one JSON object per line
 * ({"ts", "level", "msg", and the caller's fields}) for log shippers; every byte is escaped so a
 * line is valid JSON whatever a client sent.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int log_threshold = -1;

static int log_level_from_env(void)
{
    const char *v = getenv("JVDB_LOG");
    if (!v) return LOG_WARN;
    if (!strcmp(v, "debug")) return LOG_DEBUG;
    if (!strcmp(v, "info")) return LOG_INFO;
    if (!strcmp(v, "error")) return LOG_ERROR;
    return LOG_WARN;
}

void log_set_level(enum log_level level) { log_threshold = (int)level; }

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

static void log_emit(enum log_level level, const char *fields, const char *fmt, va_list ap)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (log_threshold < 0) log_threshold = log_level_from_env();
    if ((int)level < log_threshold) return;
    char text[2048];
    vsnprintf(text, sizeof text, fmt, ap);
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
