/*
 * test_api.c — the library as an embedding application sees it: linked against libjvdb.so and
 * including only jvdb.h, so every call here must be exported (hidden visibility hides the rest).
 * Covers the version calls and the log callback (the application owns logging; NULL gives the
 * stderr default back).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jvdb.h"

struct captured {
    int lines;
    jvdb_log_level level;
    char last[512];
};

/* The application's log callback: keeps the last line and counts them. */
static void capture(void *user, jvdb_log_level level, const char *message)
{
    struct captured *c = user;
    c->lines++;
    c->level = level;
    snprintf(c->last, sizeof c->last, "%s", message);
}

/* Makes a data directory whose databases/ holds a leftover of an interrupted create, which the
 * next jvdb_env_open removes with an info line naming it. */
static char *data_with_leftover(void)
{
    static char tmpl[64];
    snprintf(tmpl, sizeof tmpl, "/tmp/jvdb-api-XXXXXX");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    jvdb_env *env;
    assert_int_equal(jvdb_env_open(dir, &env), JVDB_OK);
    jvdb_env_close(env);
    char p[256];
    snprintf(p, sizeof p, "%s/databases/.tmp-leftover", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    return dir;
}

/* Removes the data directory data_with_leftover made. */
static void remove_data(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_version(void **state)
{
    (void)state;
    assert_string_equal(jvdb_version(), JVDB_VERSION);
    assert_int_equal(jvdb_version_number(), JVDB_VERSION_NUMBER);
    int major, minor, patch;
    assert_int_equal(sscanf(jvdb_version(), "%d.%d.%d", &major, &minor, &patch), 3);
    assert_int_equal(major, JVDB_VERSION_MAJOR);
    assert_int_equal(minor, JVDB_VERSION_MINOR);
    assert_int_equal(patch, JVDB_VERSION_PATCH);
    assert_int_equal(jvdb_version_number(), major * 1000000 + minor * 1000 + patch);
}

/* With a callback installed, the library's lines reach the application, not stderr. */
static void test_log_callback_receives_lines(void **state)
{
    (void)state;
    struct captured c = { 0 };
    jvdb_set_log_level(JVDB_LOG_INFO);
    jvdb_set_log_callback(capture, &c);
    char *dir = data_with_leftover();
    jvdb_env *env;
    assert_int_equal(jvdb_env_open(dir, &env), JVDB_OK);
    jvdb_env_close(env);
    jvdb_set_log_callback(NULL, NULL);
    assert_int_equal(c.lines, 1);
    assert_int_equal(c.level, JVDB_LOG_INFO);
    assert_non_null(strstr(c.last, "removing leftover"));
    assert_non_null(strstr(c.last, ".tmp-leftover"));
    assert_null(strchr(c.last, '\n'));
    remove_data(dir);
}

/* Lines below the threshold never reach the callback; a level that is not one is refused. */
static void test_log_level_filters(void **state)
{
    (void)state;
    struct captured c = { 0 };
    assert_int_equal(jvdb_set_log_level((jvdb_log_level)7), JVDB_EINVAL);
    assert_non_null(strstr(jvdb_errmsg(), "log level 7"));
    assert_int_equal(jvdb_set_log_level(JVDB_LOG_WARN), JVDB_OK);
    jvdb_set_log_callback(capture, &c);
    char *dir = data_with_leftover();
    jvdb_env *env;
    assert_int_equal(jvdb_env_open(dir, &env), JVDB_OK);
    jvdb_env_close(env);
    jvdb_set_log_callback(NULL, NULL);
    assert_int_equal(c.lines, 0);
    remove_data(dir);
}

/* Without a callback (or after removing one) a line goes to stderr as before: timestamp, level,
 * message. */
static void test_log_default_is_stderr(void **state)
{
    (void)state;
    struct captured c = { 0 };
    jvdb_set_log_callback(capture, &c);
    jvdb_set_log_callback(NULL, NULL);
    jvdb_set_log_level(JVDB_LOG_INFO);
    char *dir = data_with_leftover();
    char errfile[300];
    snprintf(errfile, sizeof errfile, "%s/stderr", dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(errfile, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    jvdb_env *env;
    int rc = jvdb_env_open(dir, &env);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_int_equal(rc, JVDB_OK);
    jvdb_env_close(env);
    assert_int_equal(c.lines, 0);
    char text[1024] = { 0 };
    FILE *f = fopen(errfile, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    assert_true(n > 0);
    assert_non_null(strstr(text, "info  removing leftover"));
    assert_true(text[n - 1] == '\n');
    remove_data(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_log_callback_receives_lines),
        cmocka_unit_test(test_log_level_filters),
        cmocka_unit_test(test_log_default_is_stderr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
