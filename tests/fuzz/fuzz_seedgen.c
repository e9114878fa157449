/*
 * fuzz_seedgen.c — writes seed inputs for the fuzz targets, made by the library itself so they are
 * valid by construction: a segment body with puts, deletes and a batch (for fuzz_record, prefixed by
 * a dimension byte, and fuzz_recovery), a MANIFEST (for fuzz_manifest), backup files, and a saved
 * HNSW graph (for fuzz_hnsw_file), a keydir checkpoint (for fuzz_kdckpt).
 *   fuzz_seedgen OUTDIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "jvdb.h"

static void write_file(const char *dir, const char *name, const void *p, size_t n, int dim_prefix)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) exit(2);
    if (dim_prefix >= 0) fputc(dim_prefix, f);
    fwrite(p, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    char root[1024];
    snprintf(root, sizeof root, "%s/seed-db", argv[1]);
    fs_remove_tree(root);
    jvdb_env *env;
    jvdb_db *db;
    jvdb_db_options o;
    jvdb_db_options_init(&o, 4);
    setenv("JVDB_KDCKPT_BYTES", "1", 1); /* this tiny database gets a KEYDIR at close */
    if (jvdb_env_open(root, &env) || jvdb_db_create(env, "s", &o, &db)) return 1;
    float v[4] = { 1, -2, 3.5f, 0 };
    jvdb_put(db, "a", v, 4, "{\"k\":\"v\",\"n\":[1,2]}", NULL);
    jvdb_put(db, "bb", v, 4, NULL, NULL);
    jvdb_record b[3] = { { "c", v, 4, NULL }, { "d", v, 4, "{}" }, { "e", v, 4, NULL } };
    jvdb_put_batch(db, b, 3, NULL);
    jvdb_delete(db, "bb", NULL);
    jvdb_env_close(env);
    unsetenv("JVDB_KDCKPT_BYTES");
    char path[1200];
    char *data;
    size_t len;
    snprintf(path, sizeof path, "%s/databases/s/0000000001.seg", root);
    if (fs_read_file(path, &data, &len) || len < 64) return 1;
    write_file(argv[1], "record.seed", data + 64, len - 64, 3 /* dim 4 */);
    write_file(argv[1], "recovery.seed", data + 64, len - 64, -1);
    free(data);
    snprintf(path, sizeof path, "%s/databases/s/MANIFEST", root);
    if (fs_read_file(path, &data, &len)) return 1;
    write_file(argv[1], "manifest.seed", data, len, -1);
    free(data);
    snprintf(path, sizeof path, "%s/databases/s/KEYDIR", root);
    if (fs_read_file(path, &data, &len)) return 1;
    write_file(argv[1], "kdckpt.seed", data, len, -1);
    free(data);

    /* A full backup of the same database: its backup.json and its archive. */
    char repo_dir[1100];
    snprintf(repo_dir, sizeof repo_dir, "%s/seed-repo", argv[1]);
    fs_remove_tree(repo_dir);
    jvdb_repo *repo;
    jvdb_backup_info info;
    jvdb_backup_options bo;
    jvdb_backup_options_init(&bo);
    if (jvdb_env_open(root, &env) || jvdb_db_open(env, "s", &db) || jvdb_repo_open(repo_dir, NULL, &repo) ||
        jvdb_backup_create(db, repo, &bo, &info)) {
        fprintf(stderr, "fuzz_seedgen: backup: %s\n", jvdb_errmsg());
        return 1;
    }
    snprintf(path, sizeof path, "%s/s/%s/backup.json", repo_dir, info.id);
    if (fs_read_file(path, &data, &len)) return 1;
    write_file(argv[1], "backup_meta.seed", data, len, -1);
    free(data);
    snprintf(path, sizeof path, "%s/s/%s/data.jvb.zst", repo_dir, info.id);
    if (fs_read_file(path, &data, &len)) return 1;
    write_file(argv[1], "backup_archive.seed", data, len, -1);
    free(data);
    jvdb_repo_close(repo);
    jvdb_env_close(env);
    fs_remove_tree(repo_dir);

    /* A saved HNSW graph (ext.hnsw) of 80 vectors, a few deleted, for fuzz_hnsw_file. */
    jvdb_db_options_init(&o, 4);
    setenv("JVDB_KDCKPT_BYTES", "1", 1); /* this tiny database gets a KEYDIR at close */
    if (jvdb_env_open(root, &env) || jvdb_db_create(env, "g", &o, &db)) return 1;
    for (int i = 0; i < 80; i++) {
        char id[16];
        float w[4] = { (float)(i % 7), (float)(i % 5) - 2, (float)i / 10, (float)(i % 3) };
        snprintf(id, sizeof id, "g%d", i);
        jvdb_put(db, id, w, 4, NULL, NULL);
    }
    jvdb_result *res;
    size_t nres;
    if (jvdb_search(db, v, 4, NULL, &res, &nres) || jvdb_db_index_wait(db, 60000)) return 1;
    jvdb_results_free(res, nres);
    jvdb_delete(db, "g3", NULL);
    jvdb_delete(db, "g40", NULL);
    if (jvdb_db_index_wait(db, 60000) || jvdb_db_index_save(db)) {
        fprintf(stderr, "fuzz_seedgen: index: %s\n", jvdb_errmsg());
        return 1;
    }
    jvdb_env_close(env);
    snprintf(path, sizeof path, "%s/databases/g/ext.hnsw", root);
    if (fs_read_file(path, &data, &len)) return 1;
    write_file(argv[1], "hnsw_file.seed", data, len, -1);
    free(data);
    fs_remove_tree(root);
    return 0;
}
