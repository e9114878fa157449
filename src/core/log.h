#ifndef JVDB_CORE_LOG_H
#define JVDB_CORE_LOG_H
#include <stddef.h>
enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same with extra members for the JSON format: `fields` is NULL or a list of JSON members
 * without braces ("\"status\":200,\"path\":\"/x\""), written after "msg"; the text format ignores it. */
void log_fields(enum log_level level, const char *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void log_set_level(enum log_level level);
/* 1: one JSON object per line ({"ts","level","msg",...}); 0: text (the default). */
void log_set_json(int on);
int log_is_json(void);
/* Appends s to out (capacity cap, always NUL-terminated) as the inside of a JSON string: quotes,
 * backslashes, control characters and bytes beyond ASCII escaped (\u00XX), so any bytes give
 * valid JSON.  Returns the length written. */
size_t log_json_escape(char *out, size_t cap, const char *s);
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#endif
