/*
 * fuzz_recovery.c — libFuzzer target for recovery at open: the input becomes the body of the
 * active segment of a real database directory (after a valid header), and the database is opened.
 * Whatever the bytes, open must either succeed with a consistent keydir or fail with a clear error;
 * never crash, hang or read out of bounds.  When it succeeds, a write must work afterwards (the
 * torn tail really was cut).  Before that, a read-only open must change no byte of the file, and
 * jvdb_db_repair must leave a database that opens.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fs.h"
#include "jvdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[256];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        snprintf(root, sizeof root, "/tmp/jvdb-fuzz-recovery-%d", (int)getpid());
    }
    fs_remove_tree(root);
    jvdb_env *env;
    jvdb_db *db;
    jvdb_db_options o;
    jvdb_db_options_init(&o, 4);
    o.sync = JVDB_SYNC_NEVER;
    if (jvdb_env_open(root, &env) != JVDB_OK || jvdb_db_create(env, "f", &o, &db) != JVDB_OK) abort();
    jvdb_env_close(env);
    char seg[512];
    snprintf(seg, sizeof seg, "%s/databases/f/0000000001.seg", root);
    int fd = open(seg, O_WRONLY | O_APPEND);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    struct stat before, after;
    if (stat(seg, &before) != 0) abort();
    if (jvdb_env_open_readonly(root, &env) != JVDB_OK) abort();
    if (jvdb_db_open(env, "f", &db) == JVDB_OK) jvdb_count(db);
    jvdb_env_close(env);
    if (stat(seg, &after) != 0 || after.st_size != before.st_size || after.st_mtim.tv_nsec != before.st_mtim.tv_nsec)
        abort();
    if (size % 2) {
        /* Half the inputs go through repair first: afterwards the database must open. */
        if (jvdb_env_open(root, &env) != JVDB_OK) abort();
        if (jvdb_db_repair(env, "f", NULL, NULL, NULL) == JVDB_OK && jvdb_db_open(env, "f", &db) != JVDB_OK) abort();
        jvdb_env_close(env);
    }
    if (jvdb_env_open(root, &env) != JVDB_OK) abort();
    if (jvdb_db_open(env, "f", &db) == JVDB_OK) {
        jvdb_stats st;
        jvdb_stats_get(db, &st);
        float v[4] = { 1, 2, 3, 4 };
        if (jvdb_put(db, "after-recovery", v, 4, NULL, NULL) != JVDB_OK) abort();
        if (jvdb_get(db, "after-recovery", v, NULL) != JVDB_OK) abort();
    }
    jvdb_env_close(env);
    return 0;
}
