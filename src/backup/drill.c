/*
 * drill.c — restore drills: prove that a database's newest backup restores, and restores to what
 * the database held at the backup's LSN.
 *
 * A drill restores the backup (its whole chain) into a scratch environment of its own, then
 * compares, record by record, what came back with the source database when one is given: every
 * source record written at or before the backup's LSN must come back with the same LSN, vector
 * bits and metadata bytes; records written after it are counted as changed, not compared.  It
 * checks the settings the backup carried against the source's, and runs a sample of exact searches
 * on both when the source has not changed since the backup (then both must answer alike), and the
 * restored index against the restored exact scan (its recall).  The scratch environment is removed
 * whatever happened.
 *
 * Invariant: a drill never writes to the source database or to the repository; the only files it
 * creates are below its scratch directory, which it removes before returning.
 */
#include "backup/backup.h"
#include "core/grow.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/clock.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define DRILL_QUERIES_DEFAULT 20
#define DRILL_QUERIES_MAX     1000
#define DRILL_TOPK            10

/* One restored record: what the comparison with the source needs. */
struct drill_rec {
    char *id;
    uint64_t lsn;
    uint64_t digest; /* of the vector's bits and the metadata's bytes */
    int seen;        /* the source has this id */
};

struct drill_set {
    struct drill_rec *recs;
    size_t n, cap;
    uint32_t dim;
    float *samples; /* query vectors taken from the restored records */
    uint32_t nsamples, want_samples;
    uint64_t stride, visited;
};

/* Digest of one record's content: the vector's bits, then the metadata's bytes. */
static uint64_t drill_digest(const float *vector, uint32_t dim, const char *meta, size_t meta_len)
{
    uint64_t h = XXH3_64bits(vector, (size_t)dim * sizeof(float));
    return XXH3_64bits_withSeed(meta ? meta : "", meta_len, h);
}

/* jvdb_iterate callback over the restored database: collects records and query samples. */
static int drill_collect(void *arg, const char *id, size_t id_len, const float *vector, const char *meta,
                         size_t meta_len, uint64_t lsn)
{
    struct drill_set *s = arg;
    struct drill_rec *n = grow_array(s->recs, &s->cap, s->n + 1, sizeof *n, 1024);
    if (!n) return err_set(JVDB_ENOMEM, "drill: out of memory listing the restored records");
    s->recs = n;
    char *copy = malloc(id_len + 1);
    if (!copy) return err_set(JVDB_ENOMEM, "drill: out of memory listing the restored records");
    memcpy(copy, id, id_len);
    copy[id_len] = 0;
    s->recs[s->n++] = (struct drill_rec){ copy, lsn, drill_digest(vector, s->dim, meta, meta_len), 0 };
    if (s->nsamples < s->want_samples && s->visited++ % s->stride == 0)
        memcpy(s->samples + (size_t)s->nsamples++ * s->dim, vector, (size_t)s->dim * sizeof(float));
    return 0;
}

/* qsort order of restored records: by id. */
static int drill_rec_cmp(const void *a, const void *b)
{
    return strcmp(((const struct drill_rec *)a)->id, ((const struct drill_rec *)b)->id);
}

/* The restored record with this id, or NULL. */
static struct drill_rec *drill_find(struct drill_set *s, const char *id)
{
    struct drill_rec key = { (char *)id, 0, 0, 0 };
    return bsearch(&key, s->recs, s->n, sizeof *s->recs, drill_rec_cmp);
}

struct drill_compare {
    struct drill_set *set;
    uint64_t backup_lsn;
    jvdb_drill_report *r;
    char first_bad[300]; /* the first difference found, its id cut to 200 bytes */
};

/* jvdb_iterate callback over the source: each record at or before the backup LSN must be restored
 * identically; later ones are counted as changed since the backup. */
static int drill_compare_source(void *arg, const char *id, size_t id_len, const float *vector, const char *meta,
                                size_t meta_len, uint64_t lsn)
{
    struct drill_compare *c = arg;
    char *key = strndup(id, id_len);
    if (!key) return err_set(JVDB_ENOMEM, "drill: out of memory");
    struct drill_rec *rec = drill_find(c->set, key);
    if (rec) rec->seen = 1;
    if (lsn > c->backup_lsn) {
        c->r->changed_since++;
    } else if (!rec) {
        if (!c->first_bad[0])
            snprintf(c->first_bad, sizeof c->first_bad, "'%.200s' (LSN %llu) was not restored", key,
                     (unsigned long long)lsn);
        c->r->missing++;
    } else if (rec->lsn != lsn || rec->digest != drill_digest(vector, c->set->dim, meta, meta_len)) {
        if (!c->first_bad[0])
            snprintf(c->first_bad, sizeof c->first_bad, "'%.200s' came back different (LSN %llu, restored LSN %llu)",
                     key, (unsigned long long)lsn, (unsigned long long)rec->lsn);
        c->r->differing++;
    } else {
        c->r->checked_records++;
    }
    free(key);
    return 0;
}

/* Whether two exact answers name the same ids with the same scores (ties may come in either order). */
static int drill_same_answer(const jvdb_result *a, size_t na, const jvdb_result *b, size_t nb)
{
    if (na != nb) return 0;
    for (size_t i = 0; i < na; i++) {
        if (fabsf(a[i].score - b[i].score) > 1e-5f * fmaxf(1.0f, fabsf(a[i].score))) return 0;
        int found = 0;
        for (size_t j = 0; j < nb && !found; j++) found = !strcmp(a[i].id, b[j].id);
        if (!found) return 0;
    }
    return 1;
}

/* The sampled searches: restored vs source (exact, when comparable) and restored index vs exact. */
static int drill_searches(jvdb_db *restored, jvdb_db *source, struct drill_set *s, jvdb_drill_report *r)
{
    jvdb_search_params exact, indexed;
    jvdb_search_params_init(&exact);
    exact.k = DRILL_TOPK;
    exact.exact = 1;
    exact.threads = 1;
    jvdb_search_params_init(&indexed);
    indexed.k = DRILL_TOPK;
    uint64_t hits = 0, wanted = 0;
    for (uint32_t q = 0; q < s->nsamples; q++) {
        const float *v = s->samples + (size_t)q * s->dim;
        jvdb_result *want = NULL, *got = NULL, *src = NULL;
        size_t nwant = 0, ngot = 0, nsrc = 0;
        int rc = jvdb_search(restored, v, s->dim, &exact, &want, &nwant);
        if (rc == JVDB_OK) rc = jvdb_search(restored, v, s->dim, &indexed, &got, &ngot);
        if (rc == JVDB_OK && source && r->source_unchanged) {
            rc = jvdb_search(source, v, s->dim, &exact, &src, &nsrc);
            if (rc == JVDB_OK) {
                r->queries_compared++;
                if (drill_same_answer(want, nwant, src, nsrc)) r->queries_equal++;
            }
        }
        if (rc == JVDB_OK) {
            for (size_t i = 0; i < nwant; i++)
                for (size_t j = 0; j < ngot; j++)
                    if (!strcmp(want[i].id, got[j].id)) {
                        hits++;
                        break;
                    }
            wanted += nwant;
            r->queries++;
        }
        jvdb_results_free(want, nwant);
        jvdb_results_free(got, ngot);
        jvdb_results_free(src, nsrc);
        if (rc != JVDB_OK) return rc;
    }
    r->index_recall = wanted ? (double)hits / (double)wanted : 1.0;
    return JVDB_OK;
}

/* The newest restorable backup of db_name (or the one asked for), into *info. */
static int drill_pick(jvdb_repo *repo, const char *db_name, const char *backup_id, jvdb_backup_info *info)
{
    if (backup_id) {
        int rc = jvdb_backup_show(repo, backup_id, info);
        if (rc != JVDB_OK) return rc;
        if (strcmp(info->database, db_name))
            return err_set(JVDB_EINVAL, "backup %s is of database '%s', not '%s'", backup_id, info->database, db_name);
        return JVDB_OK;
    }
    jvdb_backup_info *list = NULL;
    size_t n = 0;
    int rc = jvdb_backup_list(repo, db_name, &list, &n);
    if (rc != JVDB_OK) return rc;
    const jvdb_backup_info *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (list[i].restorable && (!best || list[i].lsn_to > best->lsn_to ||
                                   (list[i].lsn_to == best->lsn_to && list[i].created_ns > best->created_ns)))
            best = &list[i];
    if (best) *info = *best;
    jvdb_free(list);
    if (!best)
        return err_set(JVDB_ENOTFOUND, "no restorable backup of database '%s' in the repository (%zu listed)", db_name,
                       n);
    return JVDB_OK;
}

/* Settings the backup restored against the source's; a difference is written to r->settings_diff. */
static void drill_settings(jvdb_db *restored, jvdb_db *source, jvdb_drill_report *r)
{
    r->settings_match = 1;
    if (!source) return;
    jvdb_db_options a, b;
    jvdb_db_get_options(restored, &a);
    jvdb_db_get_options(source, &b);
    if (a.dim != b.dim || a.metric != b.metric || a.sync != b.sync || a.sync_interval_ms != b.sync_interval_ms) {
        r->settings_match = 0;
        snprintf(r->settings_diff, sizeof r->settings_diff,
                 "restored dim %u, metric %s, sync %d/%u; source dim %u, metric %s, sync %d/%u", a.dim,
                 jvdb_metric_name(a.metric), (int)a.sync, a.sync_interval_ms, b.dim, jvdb_metric_name(b.metric),
                 (int)b.sync, b.sync_interval_ms);
    }
}

/* Sets r->passed and r->failure from the figures. */
static void drill_verdict(jvdb_drill_report *r, const struct drill_compare *c, uint64_t count_mismatch)
{
    const char *why = NULL;
    char buf[sizeof r->failure];
    if (count_mismatch) {
        snprintf(buf, sizeof buf, "the restore reported %llu vectors but the restored database holds %llu",
                 (unsigned long long)count_mismatch, (unsigned long long)r->restored_vectors);
        why = buf;
    } else if (!r->settings_match) {
        snprintf(buf, sizeof buf, "settings differ: %s", r->settings_diff);
        why = buf;
    } else if (r->missing || r->differing) {
        snprintf(buf, sizeof buf, "%llu records missing and %llu different from the source (first: %s)",
                 (unsigned long long)r->missing, (unsigned long long)r->differing, c->first_bad);
        why = buf;
    } else if (r->source_unchanged && r->not_in_source) {
        snprintf(buf, sizeof buf, "%llu restored records are not in the unchanged source",
                 (unsigned long long)r->not_in_source);
        why = buf;
    } else if (r->queries_compared != r->queries_equal) {
        snprintf(buf, sizeof buf, "%u of %u sampled searches answered differently on the restored database",
                 r->queries_compared - r->queries_equal, r->queries_compared);
        why = buf;
    }
    r->passed = why == NULL;
    snprintf(r->failure, sizeof r->failure, "%s", why ? why : "");
}

void jvdb_drill_options_init(jvdb_drill_options *o)
{
    memset(o, 0, sizeof *o);
    o->queries = DRILL_QUERIES_DEFAULT;
}

int jvdb_backup_drill(jvdb_repo *repo, const char *db_name, jvdb_db *source, const jvdb_drill_options *opts,
                      jvdb_drill_report *r)
{
    jvdb_drill_options defaults;
    if (!opts) {
        jvdb_drill_options_init(&defaults);
        opts = &defaults;
    }
    memset(r, 0, sizeof *r);
    if (!repo || !db_name) return err_set(JVDB_EINVAL, "drill: a repository and a database name are required");
    if (opts->queries > DRILL_QUERIES_MAX)
        return err_set(JVDB_EINVAL, "drill: %u sampled searches asked, at most %u", opts->queries, DRILL_QUERIES_MAX);
    if (source && strcmp(jvdb_db_name(source), db_name))
        return err_set(JVDB_EINVAL, "drill: the source database is '%s', not '%s'", jvdb_db_name(source), db_name);

    jvdb_backup_info info;
    int rc = drill_pick(repo, db_name, opts->backup_id, &info);
    if (rc != JVDB_OK) return rc;
    snprintf(r->backup_id, sizeof r->backup_id, "%s", info.id);
    r->backup_lsn = info.lsn_to;
    r->backup_created_ns = info.created_ns;
    if (source) {
        jvdb_stats st;
        rc = jvdb_stats_get(source, &st);
        if (rc != JVDB_OK) return rc;
        r->source_unchanged = st.last_lsn == info.lsn_to;
    }

    const char *base = opts->scratch_dir ? opts->scratch_dir : getenv("TMPDIR");
    char *scratch = fs_join(base && *base ? base : "/tmp", "jvdb-drill-XXXXXX");
    if (!scratch) return err_set(JVDB_ENOMEM, "drill: out of memory");
    if (!mkdtemp(scratch)) {
        rc = err_set(JVDB_EIO, "drill: cannot make a scratch directory %s: %s", scratch, strerror(errno));
        free(scratch);
        return rc;
    }
    jvdb_env *env = NULL;
    jvdb_db *restored = NULL;
    struct drill_set set = { 0 };
    struct drill_compare cmp = { &set, info.lsn_to, r, "" };
    jvdb_restore_result res;
    memset(&res, 0, sizeof res);
    int64_t t0 = clock_mono_ns();
    rc = jvdb_env_open(scratch, &env);
    if (rc == JVDB_OK) {
        jvdb_restore_options ro = { 0 };
        ro.progress = opts->progress;
        ro.progress_arg = opts->progress_arg;
        ro.result = &res;
        rc = jvdb_backup_restore(env, repo, info.id, &ro, &restored);
        if (rc != JVDB_OK) {
            /* What a drill exists to find: the verdict, not an error of the drill itself. */
            snprintf(r->failure, sizeof r->failure, "the restore failed: %s", jvdb_errmsg());
            r->restore_failed = 1;
            rc = JVDB_OK;
        }
    }
    r->restore_seconds = (double)(clock_mono_ns() - t0) / 1e9;
    int64_t t1 = clock_mono_ns();
    if (rc == JVDB_OK && r->restore_failed) goto done;
    if (rc == JVDB_OK) {
        set.dim = jvdb_db_dim(restored);
        set.want_samples = opts->queries;
        jvdb_stats st;
        rc = jvdb_stats_get(restored, &st);
        set.stride = set.want_samples && st.live_records > set.want_samples ? st.live_records / set.want_samples : 1;
        set.samples = malloc((size_t)(set.want_samples ? set.want_samples : 1) * set.dim * sizeof(float));
        if (rc == JVDB_OK && !set.samples) rc = err_set(JVDB_ENOMEM, "drill: out of memory");
    }
    if (rc == JVDB_OK) rc = jvdb_iterate(restored, drill_collect, &set);
    if (rc == JVDB_OK) {
        r->restored_vectors = set.n;
        qsort(set.recs, set.n, sizeof *set.recs, drill_rec_cmp);
        drill_settings(restored, source, r);
        if (source) rc = jvdb_iterate(source, drill_compare_source, &cmp);
    }
    if (rc == JVDB_OK && source)
        for (size_t i = 0; i < set.n; i++) r->not_in_source += !set.recs[i].seen;
    if (rc == JVDB_OK) rc = drill_searches(restored, source, &set, r);
    r->check_seconds = (double)(clock_mono_ns() - t1) / 1e9;
    if (rc == JVDB_OK) drill_verdict(r, &cmp, res.vectors != set.n ? res.vectors : 0);
done:;

    /* The error message of a failure must survive the clean-up below. */
    char *msg = rc != JVDB_OK ? strdup(jvdb_errmsg()) : NULL;
    jvdb_free(res.database_description);
    if (env) jvdb_env_close(env);
    fs_remove_tree(scratch);
    free(scratch);
    for (size_t i = 0; i < set.n; i++) free(set.recs[i].id);
    free(set.recs);
    free(set.samples);
    if (rc != JVDB_OK) {
        rc = err_set(rc, "drill of '%s' (backup %s): %s", db_name, info.id, msg ? msg : "failed");
        free(msg);
    }
    return rc;
}
