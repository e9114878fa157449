/*
 * fuzz_seedgen.c — writes seed inputs for the fuzz targets, made by the library itself so they are
 * valid by construction: a segment body with puts, deletes and a batch (for fuzz_record, prefixed by
 * a dimension byte, and fuzz_recovery), a MANIFEST (for fuzz_manifest), backup files, and a saved
 * HNSW graph and a checkpoint followed by its delta file (for fuzz_hnsw_file), a keydir checkpoint (for
 * fuzz_kdckpt).
 *   fuzz_seedgen OUTDIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fs.h"
#include "jvdb.h"
#include "search/hnsw_persist.h"

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

/* Identity of slot s in the delta seed's graph. */
static int seed_ident(void *ctx, uint32_t slot, const char **id, uint16_t *id_len, uint64_t *lsn)
{
    static char ids[64][8];
    (void)ctx;
    snprintf(ids[slot % 64], sizeof ids[0], "d%u", slot % 64);
    *id = ids[slot % 64];
    *id_len = (uint16_t)strlen(*id);
    *lsn = slot + 1;
    return 1;
}

/* hnsw_delta.seed: a float graph of 40 nodes saved whole, then 6 more, one re-made and one deleted
 * appended as a delta (two batches); the seed is the checkpoint's bytes followed by the delta's. */
static int delta_seed(const char *dir)
{
    static float vecs[48][4];
    const float *slots[48];
    for (int i = 0; i < 48; i++) {
        for (int d = 0; d < 4; d++) vecs[i][d] = (float)((i * 7 + d * 3) % 11) - 5;
        slots[i] = vecs[i];
    }
    struct hnsw_params p;
    hnsw_params_init(&p);
    p.M = 4;
    struct hnsw *h;
    struct hnsw_numbering num = { 0 };
    char path[1024], dpath[1100];
    snprintf(path, sizeof path, "%s/delta-seed.hnsw", dir);
    snprintf(dpath, sizeof dpath, "%s.log", path);
    if (hnsw_create(4, JVDB_METRIC_L2, &p, &h)) return 1;
    for (uint32_t s = 0; s < 40; s++) hnsw_insert(h, slots, 48, s);
    if (hnsw_save(h, slots, 48, NULL, 0, path, 1, seed_ident, NULL, NULL, NULL, &num, NULL)) return 1;
    hnsw_dirty_clear(h);
    for (uint32_t s = 40; s < 44; s++) hnsw_insert(h, slots, 48, s);
    hnsw_insert(h, slots, 48, 7);
    if (hnsw_delta_append(h, slots, 48, dpath, 2, seed_ident, NULL, NULL, NULL, &num, NULL)) return 1;
    for (uint32_t s = 44; s < 46; s++) hnsw_insert(h, slots, 48, s);
    hnsw_mark_deleted(h, 3);
    if (hnsw_delta_append(h, slots, 48, dpath, 3, seed_ident, NULL, NULL, NULL, &num, NULL)) return 1;
    hnsw_free(h);
    hnsw_numbering_free(&num);
    char *a = NULL, *b = NULL;
    size_t alen, blen;
    if (fs_read_file(path, &a, &alen) || fs_read_file(dpath, &b, &blen)) return 1;
    char *both = malloc(alen + blen);
    if (!both) return 1;
    memcpy(both, a, alen);
    memcpy(both + alen, b, blen);
    write_file(dir, "hnsw_delta.seed", both, alen + blen, -1);
    free(a);
    free(b);
    free(both);
    remove(path);
    remove(dpath);
    return 0;
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
    if (delta_seed(argv[1])) {
        fprintf(stderr, "fuzz_seedgen: delta seed: %s\n", jvdb_errmsg());
        return 1;
    }
    return 0;
}
