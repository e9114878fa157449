/*
 * log.c — one-line log messages to stderr with a UTC timestamp and level.
 *
 * The threshold comes from JVDB_LOG (debug|info|warn|error, default warn for the library so an
 * embedding program is not chatty; the server lowers it to info).  One fprintf per line keeps lines
 * from different threads whole.
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

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (log_threshold < 0) log_threshold = log_level_from_env();
    if ((int)level < log_threshold) return;
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n", tm.tm_year + 1900, tm.tm_mon + 1,
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, names[level], text);
}
