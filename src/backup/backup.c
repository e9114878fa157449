/*
 * backup.c — the backup operations of jvdb.h (docs/ARCHITECTURE.md 7): chains, create, list, show, verify,
 * restore, delete and prune, on top of a repository (repo_*.c), the archive format (archive.c) and
 * the store's snapshot / raw-append / hidden-build primitives.
 *
 * Chains.  Every backup names its parent; a chain runs from a full backup through incrementals
 * (each based on the previous backup) or one differential (based on the full).  A backup is
 * restorable when its metadata is intact, its data object has the recorded size, and its parent is
 * restorable and links up exactly (same database incarnation, dimension and metric; lsn_from equal
 * to the parent's lsn_to).  Listing reports that status without reading archives; verify reads
 * every archive of the chain.
 *
 * Exactness of incrementals rests on the backup horizon H, the LSN of the newest full backup,
 * which compaction honours by keeping every tombstone above it.  A parent at P >= H therefore
 * still finds every delete in (P, L].  H is read after the snapshot is taken: any compaction that
 * could have dropped a tombstone above P must have started with a horizon above P, which we would
 * then see, and fall back to a full backup.  A database that was dropped and re-created, or
 * restored, has a new incarnation (its MANIFEST creation time) and a horizon of 0, so it never
 * continues a chain that is not its own.
 *
 * Restore verifies the whole chain first (nothing is written if any byte is wrong, or if any record
 * holds what put would refuse: checksums can be forged, the rules cannot), then applies it oldest
 * first with db_append_raw into a hidden database, created with the settings the newest backup
 * carries (backup.json "settings": sync, segment size, the MANIFEST's index and compaction keys),
 * that env_build_publish renames into place (or swaps in atomically with force).  Only create may
 * create a repository (repo_ops.init); a name given for the restored database is used exactly as
 * given or refused, and what restore did is reported in jvdb_restore_result.  For chains longer
 * than one, the verify pass notes the newest LSN of every id, so the apply pass writes only the
 * records that survive: the restored database holds no dead versions and no tombstones.
 */
#include "backup/backup.h"
#include "backup/wal.h"

#include "core/grow.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"
#include "search/hnsw_persist.h"
#include "store/db.h"
#include "store/record.h"
#include "store/segment.h"
#include "store/swap.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#define BACKUP_APPLY_BATCH   (8u << 20)
/* A restore starts the write-back of what it appended every this many bytes. */
#define BACKUP_APPLY_KICK    (32u << 20)
#define BACKUP_CLEANUP_AGE_S 3600

void jvdb_backup_options_init(jvdb_backup_options *o)
{
    memset(o, 0, sizeof *o);
    o->type = JVDB_BACKUP_FULL;
    o->level = 1;
}

const char *jvdb_backup_type_name(jvdb_backup_type t) { return backup_type_name(t); }

int jvdb_backup_type_parse(const char *s, jvdb_backup_type *out)
{
    err_clear();
    return backup_type_parse(s, out);
}

/* ------------------------------------------------------------------ catalog of one database */

struct cat_item {
    char id[BACKUP_ID_MAX];
    struct backup_meta m;
    int meta_ok;
    int64_t data_size;
    int parent;     /* index, -1 if none or missing */
    int restorable; /* -1 = not yet computed */
    uint32_t chain_len;
    char status[256];
};

struct catalog {
    char db[JVDB_MAX_NAME_LEN + 1];
    struct cat_item *v;
    size_t n;
};

/* Frees the catalog's items and leaves it empty (safe to call twice). */
static void catalog_free(struct catalog *c)
{
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

/* The <n> of "...-<type>-<n>". */
static uint64_t backup_id_seq(const char *id)
{
    const char *d = strrchr(id, '-');
    return d ? strtoull(d + 1, NULL, 10) : 0;
}

/* Creation order: the id's time, then its sequence number. */
static int cat_cmp(const void *a, const void *b)
{
    const struct cat_item *x = a, *y = b;
    int t = strncmp(x->id, y->id, 16);
    if (t) return t;
    uint64_t p = backup_id_seq(x->id), q = backup_id_seq(y->id);
    return p < q ? -1 : p > q;
}

/* The index of backup `id` in the catalog, or -1 (a linear scan: a catalog holds one database's backups). */
static int cat_find(const struct catalog *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->v[i].id, id)) return (int)i;
    return -1;
}

/* Decides whether item i can be restored, resolving its parents first (depth stops a parent loop), and
 * leaves the reason in its status: data object missing or of the wrong size, or a parent that does not link up. */
static void cat_resolve(struct catalog *c, int i, int depth)
{
    struct cat_item *it = &c->v[i];
    if (it->restorable >= 0) return;
    it->restorable = 0;
    it->chain_len = 0;
    if (!it->meta_ok) return; /* status already says why */
    if (it->data_size < 0) {
        snprintf(it->status, sizeof it->status, "%s is missing", BACKUP_DATA_NAME);
        return;
    }
    if ((uint64_t)it->data_size != it->m.stored_bytes) {
        snprintf(it->status, sizeof it->status, "%s has %lld bytes, backup.json says %llu", BACKUP_DATA_NAME,
                 (long long)it->data_size, (unsigned long long)it->m.stored_bytes);
        return;
    }
    if (it->m.type == JVDB_BACKUP_FULL) {
        it->restorable = 1;
        it->chain_len = 1;
        snprintf(it->status, sizeof it->status, "ok");
        return;
    }
    int p = cat_find(c, it->m.parent);
    it->parent = p;
    if (p < 0) {
        snprintf(it->status, sizeof it->status, "parent %s is missing", it->m.parent);
        return;
    }
    if (depth > 100000) {
        snprintf(it->status, sizeof it->status, "parent chain loops");
        return;
    }
    cat_resolve(c, p, depth + 1);
    const struct cat_item *pa = &c->v[p];
    const char *bad = NULL;
    if (!pa->restorable) bad = "cannot be restored";
    else if (strcmp(pa->m.database, it->m.database) || pa->m.incarnation != it->m.incarnation)
        bad = "is of another database";
    else if (pa->m.dim != it->m.dim || pa->m.metric != it->m.metric) bad = "has another dimension or metric";
    else if (pa->m.lsn_to != it->m.lsn_from) bad = "does not end at this backup's lsn_from";
    else if (it->m.type == JVDB_BACKUP_DIFFERENTIAL && pa->m.type != JVDB_BACKUP_FULL) bad = "is not a full backup";
    if (bad) {
        snprintf(it->status, sizeof it->status, "parent %s %s", pa->id, bad);
        return;
    }
    it->restorable = 1;
    it->chain_len = pa->chain_len + 1;
    snprintf(it->status, sizeof it->status, "ok");
}

/* Reads every backup.json of `db` into a catalog in creation order and resolves each chain.  A backup whose
 * metadata cannot be read stays listed with the reason as its status; only a failed listing or ENOMEM fails. */
static int catalog_load(jvdb_repo *repo, const char *db, struct catalog *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->db, sizeof c->db, "%s", db);
    struct repo_entry *e;
    size_t n;
    int rc = repo->ops->list_backups(repo, db, &e, &n);
    if (rc) return rc;
    c->v = calloc(n ? n : 1, sizeof *c->v);
    if (!c->v) {
        free(e);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        struct cat_item *it = &c->v[c->n++];
        snprintf(it->id, sizeof it->id, "%s", e[i].id);
        it->data_size = e[i].data_size;
        it->parent = -1;
        it->restorable = -1;
        char *buf = NULL;
        size_t len = 0;
        char what[160];
        snprintf(what, sizeof what, "backup %s of '%s'", it->id, db);
        rc = repo->ops->read_meta(repo, db, it->id, &buf, &len);
        if (!rc) rc = meta_parse(buf, len, what, &it->m, NULL, NULL);
        free(buf);
        if (!rc && (strcmp(it->m.id, it->id) || strcmp(it->m.database, db))) {
            rc = err_set(JVDB_ECORRUPT, "%s: backup.json names %s/%s", what, it->m.database, it->m.id);
        }
        if (rc == JVDB_ENOMEM) {
            free(e);
            catalog_free(c);
            return rc;
        }
        it->meta_ok = rc == JVDB_OK;
        if (rc) {
            /* Strip our own "backup X of 'db': " prefix; the list shows the id beside the status. */
            const char *msg = jvdb_errmsg(), *colon = strncmp(msg, what, strlen(what)) ? NULL : msg + strlen(what);
            snprintf(it->status, sizeof it->status, "%s", colon && colon[0] == ':' ? colon + 2 : msg);
        }
        rc = JVDB_OK;
    }
    free(e);
    if (c->n) qsort(c->v, c->n, sizeof *c->v, cat_cmp);
    for (size_t i = 0; i < c->n; i++) cat_resolve(c, (int)i, 0);
    err_clear();
    return JVDB_OK;
}

/* Fills a jvdb_backup_info from a catalog item; with unreadable metadata, only the id, database and the type
 * the id itself spells are known. */
static void cat_info(const struct cat_item *it, const char *db, jvdb_backup_info *info)
{
    if (it->meta_ok) {
        meta_to_info(&it->m, info);
    } else {
        memset(info, 0, sizeof *info);
        snprintf(info->id, sizeof info->id, "%s", it->id);
        snprintf(info->database, sizeof info->database, "%s", db);
        char t[16] = "";
        sscanf(it->id + 17, "%15[a-z]", t);
        backup_type_parse(t, &info->type);
    }
    info->restorable = it->restorable == 1;
    info->chain_length = it->chain_len;
    snprintf(info->status, sizeof info->status, "%s", it->status);
}

/* Splits "DB/ID" or finds which database holds ID. */
static int backup_locate(jvdb_repo *repo, const char *spec, char db[JVDB_MAX_NAME_LEN + 1], char id[BACKUP_ID_MAX])
{
    if (!spec || !*spec) return err_set(JVDB_EINVAL, "no backup id given");
    const char *slash = strchr(spec, '/');
    if (slash) {
        size_t dl = (size_t)(slash - spec);
        /* Checked before copying: a cut-short id could name another backup. */
        if (dl > JVDB_MAX_NAME_LEN || strlen(slash + 1) >= BACKUP_ID_MAX)
            return err_set(JVDB_EINVAL, "'%s' is not a backup id", spec);
        snprintf(db, JVDB_MAX_NAME_LEN + 1, "%.*s", (int)dl, spec);
        snprintf(id, BACKUP_ID_MAX, "%s", slash + 1);
        if (!db_name_valid(db) || !backup_id_valid(id))
            return err_set(JVDB_EINVAL, "'%s' is not a backup id (DATABASE/YYYYMMDDTHHMMSSZ-TYPE-N)", spec);
        return JVDB_OK;
    }
    if (!backup_id_valid(spec)) return err_set(JVDB_EINVAL, "'%s' is not a backup id (YYYYMMDDTHHMMSSZ-TYPE-N)", spec);
    snprintf(id, BACKUP_ID_MAX, "%s", spec);
    char **names;
    size_t n;
    int rc = repo->ops->list_databases(repo, &names, &n);
    if (rc) return rc;
    int found = 0;
    for (size_t i = 0; i < n && rc == JVDB_OK; i++) {
        struct repo_entry *e;
        size_t ne;
        if ((rc = repo->ops->list_backups(repo, names[i], &e, &ne))) break;
        for (size_t j = 0; j < ne; j++)
            if (!strcmp(e[j].id, id)) {
                if (found++ == 0) snprintf(db, JVDB_MAX_NAME_LEN + 1, "%s", names[i]);
                else
                    rc = err_set(JVDB_EINVAL, "backup %s exists for databases '%s' and '%s'; write DATABASE/%s", id, db,
                                 names[i], id);
                break;
            }
        free(e);
    }
    jvdb_free_names(names, n);
    if (!rc && !found) rc = err_set(JVDB_ENOTFOUND, "backup %s not found in repository %s", id, repo->spec);
    return rc;
}

/* Loads the catalog of the database holding backup `spec` ("DB/ID" or "ID") and finds the backup's index. */
static int catalog_for(jvdb_repo *repo, const char *spec, struct catalog *c, int *idx)
{
    char db[JVDB_MAX_NAME_LEN + 1], id[BACKUP_ID_MAX];
    int rc = backup_locate(repo, spec, db, id);
    if (rc) return rc;
    if ((rc = catalog_load(repo, db, c))) return rc;
    *idx = cat_find(c, id);
    if (*idx < 0) {
        catalog_free(c);
        return err_set(JVDB_ENOTFOUND, "backup %s of '%s' not found in repository %s", id, db, repo->spec);
    }
    return JVDB_OK;
}

/* The lsn_to of every restorable backup of one incarnation, ascending: where a backup log may start
 * (wal.c, wal.h). */
int backup_bases(jvdb_repo *repo, const char *db, int64_t inc, uint64_t **lsns, size_t *n)
{
    *lsns = NULL;
    *n = 0;
    struct catalog c;
    int rc = catalog_load(repo, db, &c);
    if (rc) return rc;
    uint64_t *v = malloc((c.n ? c.n : 1) * sizeof *v);
    if (!v) rc = err_set(JVDB_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < c.n; i++)
        if (c.v[i].restorable == 1 && c.v[i].m.incarnation == inc) v[(*n)++] = c.v[i].m.lsn_to;
    catalog_free(&c);
    if (rc) return rc;
    for (size_t i = 1; i < *n; i++) /* insertion sort: a handful of backups */
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *lsns = v;
    return JVDB_OK;
}

/* ------------------------------------------------------------------ list / show */

int jvdb_backup_list(jvdb_repo *repo, const char *db_name, jvdb_backup_info **out, size_t *count)
{
    err_clear();
    *out = NULL;
    *count = 0;
    char **names = NULL;
    size_t n = 0;
    int rc;
    if (db_name) {
        if (!db_name_valid(db_name)) return err_set(JVDB_EINVAL, "invalid database name '%s'", db_name);
        names = malloc(sizeof *names);
        if (!names || !(names[0] = strdup(db_name))) {
            free(names);
            return err_set(JVDB_ENOMEM, "out of memory");
        }
        n = 1;
    } else if ((rc = repo->ops->list_databases(repo, &names, &n))) {
        return rc;
    }
    jvdb_backup_info *v = NULL;
    size_t k = 0;
    rc = JVDB_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        struct catalog c;
        if ((rc = catalog_load(repo, names[i], &c))) break;
        jvdb_backup_info *nv = realloc(v, (k + c.n + 1) * sizeof *nv);
        if (!nv) rc = err_set(JVDB_ENOMEM, "out of memory");
        else {
            v = nv;
            for (size_t j = 0; j < c.n; j++) cat_info(&c.v[j], c.db, &v[k++]);
        }
        catalog_free(&c);
    }
    jvdb_free_names(names, n);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *count = k;
    return JVDB_OK;
}

int jvdb_backup_show(jvdb_repo *repo, const char *id, jvdb_backup_info *info)
{
    err_clear();
    struct catalog c;
    int i, rc = catalog_for(repo, id, &c, &i);
    if (rc) return rc;
    cat_info(&c.v[i], c.db, info);
    catalog_free(&c);
    return JVDB_OK;
}

/* ------------------------------------------------------------------ chains and verification */

/* The chain of item i, full backup first.  Fails (naming the backup) when it is not restorable. */
static int chain_of(const struct catalog *c, int i, int **chain, size_t *n)
{
    const struct cat_item *it = &c->v[i];
    if (!it->restorable) {
        /* Name the first bad backup of the chain, not only the one asked for. */
        int bad = i;
        while (c->v[bad].meta_ok && c->v[bad].parent >= 0 && !c->v[c->v[bad].parent].restorable) bad = c->v[bad].parent;
        if (bad != i)
            return err_set(JVDB_ECORRUPT,
                           "backup %s of '%s' cannot be restored: it depends on backup %s, which is broken: %s", it->id,
                           c->db, c->v[bad].id, c->v[bad].status);
        return err_set(JVDB_ECORRUPT, "backup %s of '%s' cannot be restored: %s", it->id, c->db, it->status);
    }
    *n = it->chain_len;
    *chain = malloc(*n * sizeof **chain);
    if (!*chain) return err_set(JVDB_ENOMEM, "out of memory");
    for (size_t k = *n; k-- > 0; i = c->v[i].parent) (*chain)[k] = i;
    return JVDB_OK;
}

/* Newest LSN per id over a chain (open addressing; ids live in an arena). */
struct winners {
    struct w_slot {
        uint64_t hash, lsn;
        uint64_t off;
        uint32_t len;
    } * t;
    size_t cap, n;
    char *arena;
    size_t arena_len, arena_cap;
};

/* Frees the table and the id arena and leaves the set empty. */
static void winners_free(struct winners *w)
{
    free(w->t);
    free(w->arena);
    memset(w, 0, sizeof *w);
}

/* The slot of `id` (hash h), or the empty slot where it would go: linear probing, and the load factor
 * winners_note keeps below 0.7 guarantees an empty one. */
static struct w_slot *winners_slot(struct winners *w, const char *id, uint32_t len, uint64_t h)
{
    for (size_t i = h & (w->cap - 1);; i = (i + 1) & (w->cap - 1)) {
        struct w_slot *s = &w->t[i];
        if (!s->len || (s->hash == h && s->len == len && !memcmp(w->arena + s->off, id, len))) return s;
    }
}

/* Doubles the table (first size 1024) and re-inserts every slot; on failure the old table stays. */
static int winners_grow(struct winners *w)
{
    size_t ncap = w->cap ? w->cap * 2 : 1024;
    struct w_slot *old = w->t;
    size_t ocap = w->cap;
    w->t = calloc(ncap, sizeof *w->t);
    if (!w->t) {
        w->t = old;
        return err_set(JVDB_ENOMEM, "out of memory indexing the ids of a backup chain");
    }
    w->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].len) *winners_slot(w, w->arena + old[i].off, old[i].len, old[i].hash) = old[i];
    free(old);
    return JVDB_OK;
}

/* Notes an id and the LSN of its newest version seen in the chain. */
static int winners_note(struct winners *w, const char *id, uint32_t len, uint64_t lsn)
{
    if ((w->n + 1) * 10 > w->cap * 7 && winners_grow(w)) return JVDB_ENOMEM;
    uint64_t h = XXH3_64bits(id, len);
    struct w_slot *s = winners_slot(w, id, len, h);
    if (s->len) {
        if (lsn > s->lsn) s->lsn = lsn;
        return JVDB_OK;
    }
    char *na = grow_array(w->arena, &w->arena_cap, w->arena_len + len, 1, 1u << 20);
    if (!na) return err_set(JVDB_ENOMEM, "out of memory indexing the ids of a backup chain");
    w->arena = na;
    memcpy(w->arena + w->arena_len, id, len);
    *s = (struct w_slot){ h, lsn, w->arena_len, len };
    w->arena_len += len;
    w->n++;
    return JVDB_OK;
}

/* The newest LSN noted for `id`, 0 when no backup of the chain touched it. */
static uint64_t winners_lsn(struct winners *w, const char *id, uint32_t len)
{
    if (!w->cap) return 0;
    struct w_slot *s = winners_slot(w, id, len, XXH3_64bits(id, len));
    return s->len ? s->lsn : 0;
}

struct note_ctx {
    struct winners *w;
    uint32_t dim;
};

/* archive_read callback of verify: notes every record's id and LSN in the winners. */
static int note_chunk(void *arg, const void *recs, size_t len, size_t nrecs)
{
    struct note_ctx *n = arg;
    (void)nrecs;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const struct rec_header *)((const char *)recs + off);
        int rc = winners_note(n->w, rec_id(h, n->dim), h->id_len, h->lsn);
        if (rc) return rc;
        off += h->total_len;
    }
    return 0;
}

/* The stored (compressed) size of the chain's archives, the total that progress reports count towards. */
static uint64_t chain_bytes(const struct catalog *c, const int *chain, size_t n)
{
    uint64_t t = 0;
    for (size_t k = 0; k < n; k++) t += c->v[chain[k]].m.stored_bytes;
    return t;
}

/* Reads every archive of the chain with all checks; optionally notes the winners. */
static int chain_verify(jvdb_repo *repo, const struct catalog *c, const int *chain, size_t n, struct winners *w,
                        jvdb_backup_progress_fn progress, void *arg)
{
    struct archive_progress pr = { progress, arg, "verify", 0, chain_bytes(c, chain, n), 0 };
    for (size_t k = 0; k < n; k++) {
        const struct cat_item *it = &c->v[chain[k]];
        struct repo_reader *rd;
        int rc = repo->ops->open_data(repo, c->db, it->id, &rd);
        if (rc) return rc;
        struct note_ctx nc = { w, it->m.dim };
        struct archive_read_result res;
        rc = archive_read(rd, &it->m, w ? note_chunk : NULL, &nc, &pr, &res);
        rd->close(rd);
        if (rc) return rc;
        pr.base += res.stored_bytes;
        pr.records += res.puts + res.deletes;
    }
    return JVDB_OK;
}

/* Prefixes the current message with what was being done, keeping the code. */
static int backup_context(int rc, const char *fmt, const char *a, const char *b)
{
    char msg[1024], pre[256];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    snprintf(pre, sizeof pre, fmt, a, b);
    return err_set(rc, "%s: %s", pre, msg);
}

int jvdb_backup_verify(jvdb_repo *repo, const char *id, jvdb_backup_progress_fn progress, void *arg)
{
    err_clear();
    struct catalog c;
    int i, rc = catalog_for(repo, id, &c, &i);
    if (rc) return rc;
    int *chain = NULL;
    size_t n = 0;
    if (!(rc = chain_of(&c, i, &chain, &n))) rc = chain_verify(repo, &c, chain, n, NULL, progress, arg);
    free(chain);
    catalog_free(&c);
    return rc;
}

/* ------------------------------------------------------------------ create */

/* Archives hold records in LSN order (so a reader can check the order and restore applies them in
 * the order they were written).  LSD radix sort on the LSN's significant bytes: a full backup of a
 * million records sorts in tens of milliseconds, where qsort took a noticeable share of the run. */
static int sort_by_lsn(struct db_live_rec *v, size_t n)
{
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].lsn > max) max = v[i].lsn;
    if (n < 2) return JVDB_OK;
    struct db_live_rec *tmp = malloc(n * sizeof *tmp), *src = v, *dst = tmp;
    if (!tmp) return err_set(JVDB_ENOMEM, "out of memory sorting %zu records", n);
    for (unsigned shift = 0; shift < 64 && (max >> shift); shift += 8) {
        size_t count[257] = { 0 };
        for (size_t i = 0; i < n; i++) count[((src[i].lsn >> shift) & 255) + 1]++;
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (size_t i = 0; i < n; i++) dst[count[(src[i].lsn >> shift) & 255]++] = src[i];
        struct db_live_rec *t = src;
        src = dst;
        dst = t;
    }
    if (src != v) memcpy(v, src, n * sizeof *v);
    free(tmp);
    return JVDB_OK;
}

/* Next free <n> across the whole repository, so ids are unique in it in practice. */
static int backup_next_seq(jvdb_repo *repo, uint64_t *seq)
{
    char **names;
    size_t n;
    int rc = repo->ops->list_databases(repo, &names, &n);
    if (rc) return rc;
    uint64_t max = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        struct repo_entry *e;
        size_t ne;
        if ((rc = repo->ops->list_backups(repo, names[i], &e, &ne))) break;
        for (size_t j = 0; j < ne; j++)
            if (backup_id_seq(e[j].id) > max) max = backup_id_seq(e[j].id);
        free(e);
    }
    jvdb_free_names(names, n);
    *seq = max + 1;
    return rc;
}

/* Spells a backup id, YYYYMMDDTHHMMSSZ-TYPE-N, from its creation time (UTC) and the repository's sequence
 * number, which keeps ids of the same second apart and orders them. */
static void backup_make_id(char *id, int64_t ns, jvdb_backup_type t, uint64_t seq)
{
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(id, BACKUP_ID_MAX, "%04d%02d%02dT%02d%02d%02dZ-%s-%llu", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, backup_type_name(t), (unsigned long long)seq);
}

static uint64_t db_horizon(jvdb_db *db) { return db_backup_horizon(db); }

/* Picks the parent of a wanted incremental/differential, or explains why there is none. */
static int choose_parent(const struct catalog *c, jvdb_backup_type type, int64_t incarnation, char *note, size_t cap)
{
    if (!c->n) {
        snprintf(note, cap, "no earlier backup of '%s' in the repository; made a full backup", c->db);
        return -1;
    }
    int last = (int)c->n - 1;
    const struct cat_item *it = &c->v[last];
    if (!it->restorable) {
        snprintf(note, cap, "the newest backup %s cannot be used as a parent (%.120s); made a full backup", it->id,
                 it->status);
        return -1;
    }
    if (it->m.incarnation != incarnation) {
        snprintf(note, cap,
                 "the newest backup %s is of an earlier database named '%s' (dropped, re-created or restored "
                 "since); made a full backup",
                 it->id, c->db);
        return -1;
    }
    if (type == JVDB_BACKUP_DIFFERENTIAL)
        while (c->v[last].m.type != JVDB_BACKUP_FULL) last = c->v[last].parent;
    return last;
}

/* The settings of `db` a backup carries: the MANIFEST's durability and segment settings and every
 * key other modules keep in it (index, compaction policy, ...), plus the caller's description. */
static int backup_capture_settings(jvdb_db *db, const char *description, struct backup_settings *st)
{
    memset(st, 0, sizeof *st);
    jvdb_db_options o;
    jvdb_db_get_options(db, &o);
    st->sync = o.sync;
    st->sync_interval_ms = o.sync_interval_ms;
    st->segment_max_bytes = o.segment_max_bytes;
    st->manifest = db_manifest_extra(db, NULL);
    st->description = strdup(description);
    if (!st->manifest || !st->description) {
        backup_settings_free(st);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    return JVDB_OK;
}

/* Reports create's progress to the caller's callback, if any. */
static void backup_progress(const jvdb_backup_options *o, uint64_t done, uint64_t total, uint64_t recs)
{
    if (o->progress) o->progress(o->progress_arg, "backup", done, total, recs);
}

/* A graph saved as a checkpoint plus a delta (ext.hnsw.log, docs/FORMAT.md "HNSW graph delta")
 * travels as one checkpoint with the delta folded in, so restore installs a single complete file.
 * If the fold fails the checkpoint alone goes (complete too, at its older LSN: the rest is caught up). */
static void backup_fold_index(jvdb_db *db, char **buf, size_t *len, const char *what)
{
    char *dpath = fs_join(db_dir(db), HNSW_DELTA_NAME), *delta = NULL;
    size_t dlen = 0;
    if (!dpath || !fs_exists(dpath) || fs_read_file(dpath, &delta, &dlen) != JVDB_OK) {
        free(dpath);
        return;
    }
    free(dpath);
    uint8_t *folded = NULL;
    size_t flen = 0;
    if (hnsw_file_fold(*buf, *len, delta, dlen, &folded, &flen) == JVDB_OK) {
        free(*buf);
        *buf = (char *)folded;
        *len = flen;
    } else {
        log_warn("%s: cannot fold the HNSW graph's delta (%s); the checkpoint alone is carried", what, jvdb_errmsg());
    }
    free(delta);
}

/* The HNSW graph travels with the backup (docs/FORMAT.md "HNSW graph file"): its nodes name records
 * by id and LSN, which restore keeps, so the graph fits the restored records as it fits these; nodes
 * of records the backup does not hold are simply dropped when it is loaded.  A graph loaded in this
 * process is checkpointed first, so the copy is current.  No graph, or a repository without extra
 * objects (S3 for now): the backup goes without, and restore rebuilds. */
static int backup_put_index(jvdb_db *db, struct repo_stage *stage, const char *what)
{
    if (!stage->put_extra) return JVDB_OK;
    jvdb_index_status ix;
    if (jvdb_db_index_status_if_attached(db, &ix) == JVDB_OK && jvdb_db_index_save(db) != JVDB_OK)
        log_warn("%s: cannot checkpoint the HNSW graph (%s); the saved one is carried", what, jvdb_errmsg());
    char *path = fs_join(db_dir(db), "ext.hnsw"), *buf = NULL;
    size_t len = 0;
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    int rc = fs_exists(path) ? fs_read_file(path, &buf, &len) : JVDB_OK;
    free(path);
    if (rc) {
        log_warn("%s: the HNSW graph is left out (%s); restore will rebuild it", what, jvdb_errmsg());
        return JVDB_OK;
    }
    if (buf) backup_fold_index(db, &buf, &len, what);
    if (buf) rc = stage->put_extra(stage, BACKUP_INDEX_NAME, buf, len);
    free(buf);
    err_clear();
    return rc;
}

/* Installs the graph the backup carries into the database being built, when its header says it fits
 * (format, dimension, metric); the loader verifies the rest and rebuilds on any doubt. */
static int restore_install_index(jvdb_repo *repo, const char *db, const char *id, jvdb_db *built)
{
    if (!repo->ops->read_extra) return 0;
    char *buf = NULL;
    size_t len = 0;
    int rc = repo->ops->read_extra(repo, db, id, BACKUP_INDEX_NAME, &buf, &len);
    if (rc) {
        /* A graph that fails its checks (e.g. a sealed one that was altered) is never installed. */
        if (rc != JVDB_ENOTFOUND) log_warn("restore of backup %s: %s; the graph will be rebuilt", id, jvdb_errmsg());
        err_clear();
        return 0;
    }
    struct hnsw_file hf;
    int ok = hnsw_file_parse_header(buf, len, &hf) == JVDB_OK && hf.dim == jvdb_db_dim(built) &&
             hf.metric == jvdb_db_metric(built);
    if (!ok) log_info("restore of backup %s: its HNSW graph does not fit this build; it will be rebuilt", id);
    char *path = ok ? fs_join(db_dir(built), "ext.hnsw") : NULL;
    if (ok && (!path || fs_replace_file(path, buf, len, "restore.index") != JVDB_OK)) {
        log_warn("restore of backup %s: cannot install its HNSW graph (%s); it will be rebuilt", id, jvdb_errmsg());
        ok = 0;
    }
    free(path);
    free(buf);
    err_clear();
    return ok;
}

/* One backup being made: what jvdb_backup_create's steps hand each other.  Zeroed at the start, so
 * the one cleanup at the end frees whatever the steps got as far as taking. */
struct create_run {
    jvdb_db *db;
    jvdb_repo *repo;
    jvdb_backup_options o;
    const char *name;
    struct backup_meta m;
    struct backup_settings settings;
    struct catalog c;
    struct db_snapshot snap;
    int parent; /* index in c of the parent; -1: a full backup */
    uint64_t record_bytes;
    struct repo_stage *stage;
    struct archive_writer *w;
    int64_t t_start, t_sorted, t_streamed;
    char note[256];
    char what[160];
};

/* Copies the caller's options into o (defaults for NULL) and rejects any that are out of range. */
static int create_options(const jvdb_backup_options *opts, jvdb_backup_options *o)
{
    if (opts) *o = *opts;
    else jvdb_backup_options_init(o);
    if (!o->level) o->level = 1;
    if (o->type < JVDB_BACKUP_FULL || o->type > JVDB_BACKUP_DIFFERENTIAL)
        return err_set(JVDB_EINVAL, "unknown backup type %d", (int)o->type);
    if (o->level < 1 || o->level > 19) return err_set(JVDB_EINVAL, "compression level %d is outside 1..19", o->level);
    if (o->threads > 64) return err_set(JVDB_EINVAL, "%u compression threads is too many (at most 64)", o->threads);
    const char *desc = o->description ? o->description : "";
    if (strlen(desc) > JVDB_BACKUP_DESC_MAX)
        return err_set(JVDB_EINVAL, "the description has %zu bytes; the limit is %d", strlen(desc),
                       JVDB_BACKUP_DESC_MAX);
    json_t *probe = json_string(desc);
    if (!probe) return err_set(JVDB_EINVAL, "the description is not valid UTF-8");
    json_decref(probe);
    const char *dbdesc = o->database_description ? o->database_description : "";
    if (strlen(dbdesc) > BACKUP_DB_DESC_MAX)
        return err_set(JVDB_EINVAL, "the database description has %zu bytes; the limit is %d", strlen(dbdesc),
                       BACKUP_DB_DESC_MAX);
    if (!(probe = json_string(dbdesc))) return err_set(JVDB_EINVAL, "the database description is not valid UTF-8");
    json_decref(probe);
    return JVDB_OK;
}

/* Why the chosen parent cannot carry an incremental after all (into buf), or NULL when it can. */
static const char *parent_unusable(const struct cat_item *p, uint64_t horizon, uint64_t db_lsn, char *buf, size_t cap)
{
    uint64_t lsn = p->m.lsn_to;
    if (horizon == 0)
        return "the database has no backup horizon (no full backup was recorded since it was created or restored), so "
               "its deletes may have been compacted away";
    if (lsn < horizon) {
        snprintf(buf, cap,
                 "parent %s (LSN %llu) is older than the backup horizon (LSN %llu), so deletes after "
                 "it may have been compacted away",
                 p->id, (unsigned long long)lsn, (unsigned long long)horizon);
        return buf;
    }
    if (lsn > db_lsn) {
        snprintf(buf, cap, "parent %s (LSN %llu) is newer than the database (LSN %llu)", p->id, (unsigned long long)lsn,
                 (unsigned long long)db_lsn);
        return buf;
    }
    return NULL;
}

/* Decides full or incremental/differential and its parent, taking the snapshot that decides it;
 * falls back to a full one (saying why in r->note) when the parent cannot serve. */
static int create_plan(struct create_run *r)
{
    r->parent =
        r->o.type == JVDB_BACKUP_FULL ? -1 : choose_parent(&r->c, r->o.type, r->m.incarnation, r->note, sizeof r->note);
    r->t_start = clock_mono_ns();
    int rc = db_snapshot(r->db, r->parent >= 0 ? r->c.v[r->parent].m.lsn_to : 0, &r->snap);
    if (rc) return rc;
    char buf[256];
    const char *why =
        r->parent >= 0 ? parent_unusable(&r->c.v[r->parent], db_horizon(r->db), r->snap.lsn, buf, sizeof buf) : NULL;
    if (why) {
        snprintf(r->note, sizeof r->note, "%.230s; made a full backup", why);
        r->parent = -1;
        db_snapshot_free(&r->snap);
        if ((rc = db_snapshot(r->db, 0, &r->snap))) return rc;
    }
    r->m.type = r->parent < 0 ? JVDB_BACKUP_FULL : r->o.type;
    if (r->parent >= 0) {
        snprintf(r->m.parent, sizeof r->m.parent, "%s", r->c.v[r->parent].id);
        r->m.lsn_from = r->c.v[r->parent].m.lsn_to;
    }
    r->m.lsn_to = r->snap.lsn;
    return JVDB_OK;
}

/* Keeps the snapshot's records the backup holds, in LSN order, and names the backup. */
static int create_select(struct create_run *r)
{
    /* A full backup holds live vectors only; changes carry their tombstones. */
    size_t k = 0;
    for (size_t i = 0; i < r->snap.n; i++) {
        if (r->m.type == JVDB_BACKUP_FULL && r->snap.recs[i].kind != REC_KIND_PUT) continue;
        r->snap.recs[k++] = r->snap.recs[i];
        r->record_bytes += r->snap.recs[i].len;
    }
    r->snap.n = k;
    int rc = sort_by_lsn(r->snap.recs, r->snap.n);
    if (rc) return rc;
    r->t_sorted = clock_mono_ns();

    uint64_t seq = 0;
    if ((rc = backup_next_seq(r->repo, &seq))) return rc;
    r->m.created_ns = clock_wall_ns();
    r->m.created_ns -= r->m.created_ns % 1000000; /* backup.json keeps milliseconds */
    backup_make_id(r->m.id, r->m.created_ns, r->m.type, seq);
    snprintf(r->what, sizeof r->what, "backup %s of '%s'", r->m.id, r->name);
    return JVDB_OK;
}

/* Whether the caller asked to stop; says so as the error when it did. */
static int create_cancelled(const struct create_run *r)
{
    if (!r->o.cancel || !__atomic_load_n(r->o.cancel, __ATOMIC_RELAXED)) return 0;
    err_set(JVDB_EBUSY, "%s was cancelled; nothing was added to the repository", r->what);
    return 1;
}

/* Stages the backup and streams the selected records into its archive, checking each one. */
static int create_write(struct create_run *r)
{
    int rc = r->repo->ops->stage_begin(r->repo, r->name, r->m.id, &r->stage);
    if (rc) return rc;
    struct archive_header ah = { r->m.dim,    r->m.metric, r->m.type,      r->m.lsn_from,
                                 r->m.lsn_to, r->snap.n,   r->record_bytes };
    if ((rc = archive_writer_open(r->stage, &ah, r->o.level, r->o.threads, r->what, &r->w))) return rc;
    uint64_t done = 0, next_report = 0;
    for (size_t i = 0; i < r->snap.n; i++) {
        const struct db_live_rec *lr = &r->snap.recs[i];
        const char *p = (const char *)lr->seg->map + lr->offset;
        const char *why = "cut short";
        /* Never back up a damaged record: better no backup than one that restores wrong data. */
        if (rec_check(p, lr->len, r->m.dim, &why) != REC_OK || ((const struct rec_header *)p)->lsn != lr->lsn)
            return err_set(JVDB_ECORRUPT, "%s: database record in %s at offset %llu is bad (%s); no backup made",
                           r->what, lr->seg->path, (unsigned long long)lr->offset, why);
        if (create_cancelled(r)) return JVDB_EBUSY;
        if (((const struct rec_header *)p)->kind == REC_KIND_PUT) r->m.put_count++;
        else r->m.delete_count++;
        if ((rc = archive_writer_add(r->w, p, lr->len))) return rc;
        done += lr->len;
        if (done >= next_report) {
            backup_progress(&r->o, done, r->record_bytes, i + 1);
            next_report = done + (4u << 20);
            io_crash_point("backup.write");
        }
    }
    r->t_streamed = clock_mono_ns();
    if ((rc = archive_writer_finish(r->w, &r->m.raw_bytes, &r->m.stored_bytes, r->m.sha256))) return rc;
    backup_progress(&r->o, r->record_bytes, r->record_bytes, r->snap.n);
    return JVDB_OK;
}

/* Adds the HNSW graph and backup.json (with the settings) to the stage and commits it: the backup exists. */
static int create_commit(struct create_run *r)
{
    int rc = JVDB_OK;
    if (!r->o.no_index && (rc = backup_put_index(r->db, r->stage, r->what))) return rc;
    char *meta;
    size_t meta_len;
    if ((rc = meta_serialize(&r->m, &r->settings, &meta, &meta_len))) return rc;
    if (create_cancelled(r)) { /* the last moment it can stop */
        free(meta);
        return JVDB_EBUSY;
    }
    rc = r->stage->commit(r->stage, meta, meta_len);
    free(meta);
    if (rc) return rc;
    archive_writer_free(r->w);
    r->stage->abort(r->stage); /* frees the committed stage */
    r->w = NULL;
    r->stage = NULL;
    log_debug("%s: snapshot and sort %.3f s, stream %.3f s, finish and commit %.3f s", r->what,
              (double)(r->t_sorted - r->t_start) / 1e9, (double)(r->t_streamed - r->t_sorted) / 1e9,
              (double)(clock_mono_ns() - r->t_streamed) / 1e9);
    return JVDB_OK;
}

/* After the commit: a full backup moves the database's backup horizon; fills the caller's info. */
static void create_done(struct create_run *r, jvdb_backup_info *info)
{
    if (r->m.type == JVDB_BACKUP_FULL) {
        uint64_t h = db_horizon(r->db);
        if (r->m.lsn_to > h && db_set_backup_horizon(r->db, r->m.lsn_to) != JVDB_OK) {
            /* The backup is good; only the next incremental falls back to full. */
            log_warn("%s: cannot move the backup horizon: %s", r->what, jvdb_errmsg());
            snprintf(r->note, sizeof r->note,
                     "the backup horizon could not be moved (%s); the next incremental will be full", jvdb_errmsg());
        }
    }
    if (info) {
        meta_to_info(&r->m, info);
        info->restorable = 1;
        info->chain_length = r->parent >= 0 ? r->c.v[r->parent].chain_len + 1 : 1;
        snprintf(info->status, sizeof info->status, "ok");
        snprintf(info->note, sizeof info->note, "%s", r->note);
    }
    if (r->note[0]) log_info("backup of '%s': %s", r->name, r->note);
    err_clear();
}

/* The steps, in the order their effects become durable: nothing reaches the repository before
 * create_commit, and the horizon moves only after it. */
int jvdb_backup_create(jvdb_db *db, jvdb_repo *repo, const jvdb_backup_options *opts, jvdb_backup_info *info)
{
    err_clear();
    struct create_run run = { 0 }, *r = &run;
    r->db = db;
    r->repo = repo;
    r->name = jvdb_db_name(db);
    r->parent = -1;
    int rc = create_options(opts, &r->o);
    if (rc) goto out;

    struct backup_meta *m = &r->m;
    snprintf(m->database, sizeof m->database, "%s", r->name);
    m->dim = jvdb_db_dim(db);
    m->metric = jvdb_db_metric(db);
    m->incarnation = db_created_ns(db);
    m->level = r->o.level;
    m->format_version = BACKUP_FORMAT_VERSION;
    snprintf(m->description, sizeof m->description, "%s", r->o.description ? r->o.description : "");

    /* The only operation that may create a repository. */
    if ((rc = repo->ops->init(repo))) goto out;
    if ((rc = backup_capture_settings(db, r->o.database_description ? r->o.database_description : "", &r->settings)))
        goto out;
    if ((rc = catalog_load(repo, r->name, &r->c))) goto out;
    repo->ops->cleanup(repo, r->name, BACKUP_CLEANUP_AGE_S);
    if ((rc = create_plan(r)) || (rc = create_select(r)) || (rc = create_write(r)) || (rc = create_commit(r))) goto out;
    create_done(r, info);
out:
    archive_writer_free(r->w);
    if (r->stage) r->stage->abort(r->stage);
    db_snapshot_free(&r->snap);
    catalog_free(&r->c);
    backup_settings_free(&r->settings);
    return rc;
}

/* ------------------------------------------------------------------ restore */

struct apply_ctx {
    jvdb_db *db;
    struct winners *w; /* the ids the later backups of the chain touch; NULL: keep every record */
    int full;          /* applying the full backup: keep what the later ones never touch */
    uint32_t dim;
    char *batch;
    size_t len;
    uint64_t written;
    uint64_t unkicked; /* bytes appended since the last write-back kick */
    uint64_t kick_seg, kick_off;
};

/* The build is written with sync off and made durable by one fdatasync at the end; without a kick
 * the kernel would hold the whole database dirty until then (it is far below the background
 * write-back threshold), so that fdatasync would write it all while the restore waits.  Starting
 * the write-back as the restore goes (as repo_fs.c does for archives) overlaps it with decoding. */
static void apply_kick(struct apply_ctx *a)
{
    db_start_writeback(a->db, &a->kick_seg, &a->kick_off);
    a->unkicked = 0;
}

/* Appends the batched records to the database being built and starts write-back every
 * BACKUP_APPLY_KICK bytes (see apply_kick). */
static int apply_flush(struct apply_ctx *a)
{
    if (!a->len) return JVDB_OK;
    /* Unsynced: the build is hidden and synced once before it is published.  Not checked again:
     * archive_read checked every record (checksum included) before handing it over. */
    int rc = db_append_raw_checked_unsynced(a->db, a->batch, a->len);
    a->unkicked += a->len;
    a->len = 0;
    if (!rc && a->unkicked >= BACKUP_APPLY_KICK) apply_kick(a);
    return rc;
}

/* archive_read callback of restore: batches the records that survive the chain (all of them for a single
 * backup) for db_append_raw; a record larger than the batch is appended on its own. */
static int apply_chunk(void *arg, const void *recs, size_t len, size_t nrecs)
{
    struct apply_ctx *a = arg;
    (void)nrecs;
    for (size_t off = 0; off < len;) {
        const struct rec_header *h = (const struct rec_header *)((const char *)recs + off);
        off += h->total_len;
        if (a->w) {
            /* Only what survives at the end of the chain: no dead versions, no tombstones.  The
             * winners know only the later backups (the full one holds each id once). */
            uint64_t win = winners_lsn(a->w, rec_id(h, a->dim), h->id_len);
            if (a->full ? win != 0 : h->kind != REC_KIND_PUT || win != h->lsn) continue;
        }
        if (a->len + h->total_len > BACKUP_APPLY_BATCH) {
            int rc = apply_flush(a);
            if (rc) return rc;
        }
        if (h->total_len > BACKUP_APPLY_BATCH) {
            int rc = db_append_raw_unsynced(a->db, h, h->total_len);
            if (rc) return rc;
        } else {
            memcpy(a->batch + a->len, h, h->total_len);
            a->len += h->total_len;
        }
        a->written++;
    }
    return apply_flush(a);
}

/* Whether the environment holds a database named `name` (a directory with a MANIFEST), opened or not. */
static int env_has_db(jvdb_env *env, const char *name, int *exists)
{
    char **names;
    size_t n;
    int rc = jvdb_db_list(env, &names, &n);
    if (rc) return rc;
    *exists = 0;
    for (size_t i = 0; i < n; i++) *exists |= !strcmp(names[i], name);
    jvdb_free_names(names, n);
    return JVDB_OK;
}

/* Re-reads the settings of the backup a restore ends at (the catalog keeps only the fixed fields),
 * insisting it is still the backup that was verified. */
static int restore_settings(jvdb_repo *repo, const struct catalog *c, const struct cat_item *it,
                            struct backup_settings *st, int *has)
{
    char *buf = NULL;
    size_t len = 0;
    char what[160];
    snprintf(what, sizeof what, "backup %s of '%s'", it->id, c->db);
    struct backup_meta m;
    int rc = repo->ops->read_meta(repo, c->db, it->id, &buf, &len);
    if (!rc) rc = meta_parse(buf, len, what, &m, st, has);
    free(buf);
    if (!rc && strcmp(m.sha256, it->m.sha256)) {
        backup_settings_free(st);
        rc = err_set(JVDB_ECORRUPT, "%s: backup.json changed during the restore", what);
    }
    return rc;
}

/* ------------------------------------------------------------------ point in time */

/* A database's restorable history: its backups and its log objects. */
struct history {
    struct catalog c;
    struct wal_entry *ents;
    size_t nents;
};

/* Frees what history_load read. */
static void history_free(struct history *h)
{
    catalog_free(&h->c);
    free(h->ents);
    h->ents = NULL;
}

/* Reads the catalog of backups and the list of log objects of database db. */
static int history_load(jvdb_repo *repo, const char *db, struct history *h)
{
    memset(h, 0, sizeof *h);
    if (!db_name_valid(db)) return err_set(JVDB_EINVAL, "invalid database name '%.100s'", db);
    int rc = catalog_load(repo, db, &h->c);
    if (!rc && (rc = wal_list(repo, db, &h->ents, &h->nents))) catalog_free(&h->c);
    return rc;
}

/* Where a restore starting from backup `base` can get to: the log path after it, and its end. */
struct reach {
    int base;
    size_t *idx, k;
    uint64_t lsn;
    int64_t time_ns;
};

/* Follows the log from backup i; *r's path is malloc'd (reach_free). */
static int reach_of(const struct history *h, int i, struct reach *r)
{
    const struct cat_item *it = &h->c.v[i];
    memset(r, 0, sizeof *r);
    r->base = i;
    r->lsn = it->m.lsn_to;
    r->time_ns = it->m.created_ns;
    int rc = wal_path(h->ents, h->nents, it->m.incarnation, it->m.lsn_to, &r->idx, &r->k);
    if (rc) return rc;
    if (r->k && h->ents[r->idx[r->k - 1]].lsn_to > r->lsn) {
        r->lsn = h->ents[r->idx[r->k - 1]].lsn_to;
        r->time_ns = h->ents[r->idx[r->k - 1]].last_time_ns;
    }
    return JVDB_OK;
}

/* Frees a reach's log path. */
static void reach_free(struct reach *r)
{
    free(r->idx);
    r->idx = NULL;
    r->k = 0;
}

/* The newest restorable backup (at or before `before_ns` when non-zero), or -1. */
static int newest_restorable(const struct catalog *c, int64_t before_ns)
{
    for (size_t i = c->n; i-- > 0;)
        if (c->v[i].restorable == 1 && (!before_ns || c->v[i].m.created_ns <= before_ns)) return (int)i;
    return -1;
}

int backup_window_spans(jvdb_restore_window *w, struct window_reach *rs, size_t n)
{
    for (size_t i = 1; i < n; i++) { /* stable insertion by lsn0: equal ones keep the caller's (age) order */
        struct window_reach t = rs[i];
        size_t j = i;
        for (; j > 0 && rs[j - 1].lsn0 > t.lsn0; j--) rs[j] = rs[j - 1];
        rs[j] = t;
    }
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (rs[i].lsn1 >= rs[best].lsn1) best = i; /* on a tie the newest backup: the shortest log to apply */
    if (!n) return -1;
    w->latest_lsn = rs[best].lsn1;
    w->latest_time_ns = rs[best].t1;
    w->log_objects = rs[best].log_objects;
    snprintf(w->latest_backup, sizeof w->latest_backup, "%s", rs[best].id);
    int base = rs[best].base;
    /* Merge in place: a span goes on while the next backup starts at most one LSN after its end
     * (LSNs are dense, so nothing lies between them). */
    size_t m = 0;
    for (size_t i = 1; i < n; i++) {
        if (rs[i].lsn0 <= rs[m].lsn1 + 1) {
            if (rs[i].lsn1 > rs[m].lsn1) rs[m].lsn1 = rs[i].lsn1;
            if (rs[i].t1 > rs[m].t1) rs[m].t1 = rs[i].t1;
        } else {
            rs[++m] = rs[i];
        }
    }
    size_t total = m + 1, skip = total > JVDB_RESTORE_SPANS_MAX ? total - JVDB_RESTORE_SPANS_MAX : 0;
    w->spans_omitted = (uint32_t)skip;
    w->nspans = (uint32_t)(total - skip);
    for (size_t i = skip; i < total; i++) {
        jvdb_restore_span *sp = &w->spans[i - skip];
        sp->earliest_lsn = rs[i].lsn0;
        sp->latest_lsn = rs[i].lsn1;
        sp->earliest_time_ns = rs[i].t0;
        sp->latest_time_ns = rs[i].t1;
        snprintf(sp->backup, sizeof sp->backup, "%s", rs[i].id);
    }
    w->earliest_lsn = rs[m].lsn0;
    w->earliest_time_ns = rs[m].t0;
    return base;
}

/* The restorable window of the incarnation of backup `newest`; *best is the reach of latest. */
static int history_window(const struct history *h, int newest, jvdb_restore_window *w, struct reach *best)
{
    memset(w, 0, sizeof *w);
    memset(best, 0, sizeof *best);
    best->base = -1;
    const int64_t inc = h->c.v[newest].m.incarnation;
    snprintf(w->database, sizeof w->database, "%s", h->c.db);
    w->incarnation = inc;
    struct window_reach *rs = calloc((size_t)newest + 1, sizeof *rs);
    if (!rs) return err_set(JVDB_ENOMEM, "out of memory");
    size_t n = 0;
    int rc = JVDB_OK;
    for (int i = 0; i <= newest && !rc; i++) {
        const struct cat_item *it = &h->c.v[i];
        if (it->restorable != 1 || it->m.incarnation != inc) continue;
        struct reach r;
        if ((rc = reach_of(h, i, &r))) break;
        rs[n++] = (struct window_reach){ .lsn0 = it->m.lsn_to,
                                         .lsn1 = r.lsn,
                                         .t0 = it->m.created_ns,
                                         .t1 = r.time_ns,
                                         .id = it->id,
                                         .log_objects = (uint32_t)r.k,
                                         .base = i };
        reach_free(&r);
    }
    w->backups = (uint32_t)n;
    int base = rc ? -1 : backup_window_spans(w, rs, n);
    free(rs);
    if (!rc && base >= 0) rc = reach_of(h, base, best);
    return rc;
}

int jvdb_backup_window(jvdb_repo *repo, const char *db_name, jvdb_restore_window *out)
{
    err_clear();
    memset(out, 0, sizeof *out);
    struct history h;
    int rc = history_load(repo, db_name, &h);
    if (rc) return rc;
    int newest = newest_restorable(&h.c, 0);
    if (newest < 0) rc = err_set(JVDB_ENOTFOUND, "no restorable backup of '%s' in repository %s", db_name, repo->spec);
    else {
        struct reach best;
        if (!(rc = history_window(&h, newest, out, &best))) reach_free(&best);
    }
    history_free(&h);
    return rc;
}

/* Appends the window's spans to buf as "LSN a (time), LSN b..c (time..time)". */
static void window_spans_text(const jvdb_restore_window *w, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = 0;
    if (w->spans_omitted)
        len += (size_t)snprintf(buf, cap, "%u older span%s, ", w->spans_omitted, w->spans_omitted == 1 ? "" : "s");
    for (uint32_t i = 0; i < w->nspans && len < cap; i++) {
        const jvdb_restore_span *sp = &w->spans[i];
        char a[40], b[40];
        clock_format_rfc3339(sp->earliest_time_ns, a, sizeof a);
        clock_format_rfc3339(sp->latest_time_ns, b, sizeof b);
        if (sp->earliest_lsn == sp->latest_lsn)
            len += (size_t)snprintf(buf + len, cap - len, "%sLSN %llu (%s)", i ? ", " : "",
                                    (unsigned long long)sp->earliest_lsn, a);
        else
            len += (size_t)snprintf(buf + len, cap - len, "%sLSN %llu..%llu (%s..%s)", i ? ", " : "",
                                    (unsigned long long)sp->earliest_lsn, (unsigned long long)sp->latest_lsn, a, b);
    }
}

/* The error for a target no restore reaches (lsn, or time_ns when lsn is 0): in a hole between two
 * spans it names the nearest restorable points on both sides; outside, the window. */
static int window_error(const jvdb_restore_window *w, const char *target, uint64_t lsn, int64_t time_ns)
{
    char a[40], b[40], spans[1600];
    window_spans_text(w, spans, sizeof spans);
    for (uint32_t i = 0; i + 1 < w->nspans; i++) {
        const jvdb_restore_span *lo = &w->spans[i], *hi = &w->spans[i + 1];
        if (lsn ? lsn > lo->latest_lsn && lsn < hi->earliest_lsn
                : time_ns > lo->latest_time_ns && time_ns < hi->earliest_time_ns) {
            clock_format_rfc3339(lo->latest_time_ns, a, sizeof a);
            clock_format_rfc3339(hi->earliest_time_ns, b, sizeof b);
            return err_set(JVDB_ENOTFOUND,
                           "%s of '%s' cannot be restored: the log between LSN %llu and LSN %llu is no longer in the "
                           "repository (retention or a log fold removed it once newer backups covered it); the "
                           "nearest restorable points are LSN %llu (%s) and LSN %llu (%s, backup %s); restorable: %s",
                           target, w->database, (unsigned long long)lo->latest_lsn,
                           (unsigned long long)hi->earliest_lsn, (unsigned long long)lo->latest_lsn, a,
                           (unsigned long long)hi->earliest_lsn, b, hi->backup, spans);
        }
    }
    clock_format_rfc3339(w->earliest_time_ns, a, sizeof a);
    clock_format_rfc3339(w->latest_time_ns, b, sizeof b);
    return err_set(JVDB_ENOTFOUND,
                   "%s is outside the restorable window of '%s': LSN %llu..%llu, time %s..%s (%u backup%s, %u log "
                   "object%s to the latest point)%s%s",
                   target, w->database, (unsigned long long)w->earliest_lsn, (unsigned long long)w->latest_lsn, a, b,
                   w->backups, w->backups == 1 ? "" : "s", w->log_objects, w->log_objects == 1 ? "" : "s",
                   w->nspans > 1 || w->spans_omitted ? "; restorable: " : "",
                   w->nspans > 1 || w->spans_omitted ? spans : "");
}

/* Chooses the backup a point-in-time restore starts from and the log path after it (*r). */
static int history_plan(const struct history *h, const jvdb_restore_options *ro, struct reach *r)
{
    int newest = newest_restorable(&h->c, 0);
    if (newest < 0) return err_set(JVDB_ENOTFOUND, "no restorable backup of '%s'", h->c.db);
    jvdb_restore_window w;
    struct reach best;
    int rc = history_window(h, newest, &w, &best);
    if (rc) return rc;
    char target[96];
    if (!ro->to_lsn && !ro->to_time_ns) {
        *r = best;
        return JVDB_OK;
    }
    reach_free(&best);
    if (ro->to_lsn) {
        snprintf(target, sizeof target, "LSN %llu", (unsigned long long)ro->to_lsn);
        for (int i = newest; i >= 0; i--) {
            const struct cat_item *it = &h->c.v[i];
            if (it->restorable != 1 || it->m.incarnation != w.incarnation || it->m.lsn_to > ro->to_lsn) continue;
            if ((rc = reach_of(h, i, r))) return rc;
            if (r->lsn >= ro->to_lsn) return JVDB_OK;
            reach_free(r);
        }
        return window_error(&w, target, ro->to_lsn, 0);
    }
    clock_format_rfc3339(ro->to_time_ns, target, sizeof target);
    memmove(target + 5, target, strlen(target) + 1);
    memcpy(target, "time ", 5);
    /* The incarnation that existed at that time: that of the newest backup made by then. */
    int at = newest_restorable(&h->c, ro->to_time_ns);
    if (at >= 0 && h->c.v[at].m.incarnation != w.incarnation) {
        reach_free(&best);
        if ((rc = history_window(h, at, &w, &best))) return rc;
        reach_free(&best);
    }
    for (int i = at; i >= 0; i--) {
        const struct cat_item *it = &h->c.v[i];
        if (it->restorable != 1 || it->m.incarnation != w.incarnation || it->m.created_ns > ro->to_time_ns) continue;
        if ((rc = reach_of(h, i, r))) return rc;
        if (r->time_ns >= ro->to_time_ns) return JVDB_OK;
        reach_free(r);
    }
    return window_error(&w, target, 0, ro->to_time_ns);
}

int jvdb_backup_restore(jvdb_env *env, jvdb_repo *repo, const char *id, const jvdb_restore_options *opts, jvdb_db **out)
{
    err_clear();
    jvdb_restore_options ro = { 0 };
    if (opts) ro = *opts;
    if (out) *out = NULL;
    if (ro.result) memset(ro.result, 0, sizeof *ro.result);
    /* A name that is given is used as given: never truncated, never "" for "the default". */
    if (ro.as_name && !db_name_valid(ro.as_name))
        return err_set(JVDB_EINVAL, "invalid database name '%.100s%s' (1 to %d of A-Z a-z 0-9 _ -)", ro.as_name,
                       strlen(ro.as_name) > 100 ? "..." : "", JVDB_MAX_NAME_LEN);
    int targets = (ro.to_lsn != 0) + (ro.to_time_ns != 0) + (ro.latest != 0);
    if (id && ro.database) return err_set(JVDB_EINVAL, "give a backup id or a database to restore, not both");
    if (!ro.database && (targets || ro.replica))
        return err_set(JVDB_EINVAL, "a restore to a point in time (or for a replica) is by database, not backup id");
    if (targets > 1) return err_set(JVDB_EINVAL, "give at most one of to_lsn, to_time and latest");
    if (ro.to_time_ns < 0) return err_set(JVDB_EINVAL, "to_time is before 1970");
    struct history h;
    struct reach reach;
    memset(&reach, 0, sizeof reach);
    int i, rc;
    if (ro.database) {
        if ((rc = history_load(repo, ro.database, &h))) return rc;
        if ((rc = history_plan(&h, &ro, &reach))) {
            history_free(&h);
            return rc;
        }
        i = reach.base;
    } else {
        memset(&h, 0, sizeof h);
        if ((rc = catalog_for(repo, id, &h.c, &i))) return rc;
    }
    struct catalog c = h.c; /* owned by h */
    const struct cat_item *it = &c.v[i];
    const char *name = ro.as_name ? ro.as_name : it->m.database;
    int *chain = NULL;
    size_t n = 0;
    struct winners w;
    memset(&w, 0, sizeof w);
    struct backup_settings st;
    memset(&st, 0, sizeof st);
    int has_settings = 0;
    jvdb_db *built = NULL;
    char *batch = NULL;
    struct log_apply la;
    log_apply_init(&la, NULL, 0, 0);
    struct apply_ctx a = { 0 };
    if ((rc = chain_of(&c, i, &chain, &n))) goto out;
    int exists;
    if ((rc = env_has_db(env, name, &exists))) goto out;
    if (exists && !ro.force) {
        rc = err_set(JVDB_EEXISTS,
                     "database '%s' already exists; restoring backup %s would replace it (use force, or "
                     "restore under another name)",
                     name, it->id);
        goto out;
    }
    /* The later backups of the chain (small) are verified first, noting the newest LSN of every id
     * they touch; the full backup is then verified as it is applied, in one pass, into a database
     * built out of sight that is discarded on any failure -- so nothing is written either way,
     * and the largest archive is decompressed once. */
    if ((rc = restore_settings(repo, &c, it, &st, &has_settings)) ||
        (n > 1 && (rc = chain_verify(repo, &c, chain + 1, n - 1, &w, ro.progress, ro.progress_arg)))) {
        rc =
            backup_context(rc, "restore of backup %s aborted, nothing was written (%s)", it->id, "verification failed");
        goto out;
    }
    jvdb_db_options dbo;
    jvdb_db_options_init(&dbo, it->m.dim);
    dbo.metric = it->m.metric;
    if (has_settings) {
        /* The database comes back as it was backed up, settings included. */
        dbo.sync = st.sync;
        dbo.sync_interval_ms = st.sync_interval_ms;
        dbo.segment_max_bytes = st.segment_max_bytes;
    } else if (exists) {
        /* A format 1 backup has no settings: keep those of the database it replaces. */
        jvdb_db *old;
        if (jvdb_db_open(env, name, &old) == JVDB_OK) {
            jvdb_db_options oo;
            jvdb_db_get_options(old, &oo);
            dbo.sync = oo.sync;
            dbo.sync_interval_ms = oo.sync_interval_ms;
            dbo.segment_max_bytes = oo.segment_max_bytes;
        }
        err_clear();
    }
    jvdb_db_options build = dbo;
    build.sync = JVDB_SYNC_NEVER; /* one sync at the end instead of one per batch */
    if ((rc = env_build_begin(env, name, &build, &built))) goto out;
    batch = aligned_alloc(64, BACKUP_APPLY_BATCH); /* records are read in place */
    if (!batch) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    a = (struct apply_ctx){ built, n > 1 ? &w : NULL, 1, it->m.dim, batch, 0, 0, 0, 0, 0 };
    struct archive_progress pr = { ro.progress, ro.progress_arg, "restore", 0, chain_bytes(&c, chain, n), 0 };
    for (size_t k = 0; k < n && !rc; k++) {
        const struct cat_item *ck = &c.v[chain[k]];
        struct repo_reader *rd;
        a.full = k == 0;
        if ((rc = repo->ops->open_data(repo, c.db, ck->id, &rd))) break;
        struct archive_read_result res;
        rc = archive_read(rd, &ck->m, apply_chunk, &a, &pr, &res);
        rd->close(rd);
        pr.base += res.stored_bytes;
        pr.records += res.puts + res.deletes;
        io_crash_point("restore.applied");
    }
    if (rc) {
        rc = backup_context(rc, "restore of backup %s aborted, nothing was written (%s)", it->id,
                            rc == JVDB_ECORRUPT ? "verification failed" : "while applying");
        goto out;
    }
    /* Then the log after the backup, whole batches up to the target (each record as written, tombstones
     * and superseded versions included: the store keeps the newest of each id). */
    log_apply_init(&la, built, it->m.dim, it->m.lsn_to);
    la.unsynced = 1; /* the build: synced once below */
    la.to_lsn = ro.to_lsn;
    la.to_time_ns = ro.to_time_ns;
    for (size_t k = 0; k < reach.k && !rc && !la.done; k++) {
        const struct wal_entry *e = &h.ents[reach.idx[k]];
        if ((rc = log_apply_object(repo, c.db, e, it->m.metric, &la)))
            rc = backup_context(rc, "restore of '%s' aborted, nothing was written (%s)", c.db,
                                rc == JVDB_ECORRUPT ? "verification failed" : "while applying the log");
        io_crash_point("restore.log_applied");
    }
    if (rc) goto out;
    /* A replica mark the backup carried (a backup of a replica) is not this database's. */
    if (has_settings && st.manifest) json_object_del(st.manifest, "replica");
    /* LSNs never go backwards: the restored database continues after the backup's LSN, even when
     * the newest change it covers was a delete that is not in the data. */
    rc = db_restore_finish(built, la.lsn, has_settings ? st.manifest : NULL);
    if (!rc && ro.replica) {
        json_t *mark = pitr_replica_mark(c.db, it->m.incarnation);
        rc = mark ? db_restore_finish(built, la.lsn, mark) : err_set(JVDB_ENOMEM, "out of memory");
        json_decref(mark);
    }
    if (!rc) rc = db_sync_all(built);
    if (!rc) rc = jvdb_db_set_sync(built, dbo.sync, dbo.sync_interval_ms);
    if (rc) goto out;
    /* The backup's graph describes the backup, not what the log added after it. */
    int index_installed = la.batches ? 0 : restore_install_index(repo, c.db, it->id, built);
    uint64_t vectors = la.records ? jvdb_count(built) : a.written;
    io_crash_point("restore.before_publish");
    /* What the publish will do: it replaces only what exists now (and refuses without force). */
    if ((rc = env_has_db(env, name, &exists))) goto out;
    jvdb_db *done = NULL;
    rc = env_build_publish(env, built, name, ro.force, &done);
    built = NULL; /* publish closed it, whatever happened */
    if (rc) goto out;
    if (out) *out = done;
    if (ro.result) {
        jvdb_restore_result *r = ro.result;
        snprintf(r->database, sizeof r->database, "%s", name);
        r->replaced = exists;
        cat_info(it, c.db, &r->backup);
        r->vectors = vectors;
        r->lsn = la.lsn;
        r->time_ns = la.batches ? la.time_ns : 0;
        r->log_objects = (uint32_t)la.objects;
        r->log_records = la.records;
        r->incarnation = it->m.incarnation;
        r->has_settings = has_settings;
        r->index_installed = index_installed;
        if (has_settings) {
            r->database_description = st.description;
            st.description = NULL;
        }
    }
    log_info("restored backup %s of '%s' as '%s'%s: %llu vectors; LSN %llu (%u log objects after the backup)", it->id,
             c.db, name, exists ? " (replacing it)" : "", (unsigned long long)vectors, (unsigned long long)la.lsn,
             (unsigned)la.objects);
out:
    if (built) env_build_abort(env, built);
    log_apply_free(&la);
    reach_free(&reach);
    free(batch);
    winners_free(&w);
    free(chain);
    history_free(&h);
    backup_settings_free(&st);
    return rc;
}

/* ------------------------------------------------------------------ delete and prune */

/* Whether backup i depends on backup `of`, through resolved parent links or, for a broken backup, the
 * parent id its backup.json names: deleting `of` would leave it unrestorable. */
static int is_descendant(const struct catalog *c, int i, int of)
{
    for (int p = c->v[i].parent, guard = 0; p >= 0 && guard < 100000; p = c->v[p].parent, guard++)
        if (p == of) return 1;
    /* A broken child still names its parent by id even when the link did not resolve. */
    return c->v[i].meta_ok && c->v[i].m.parent[0] && !strcmp(c->v[i].m.parent, c->v[of].id);
}

/* Removes the marked items, newest first, so a dependant always goes before what it depends on. */
static int remove_marked(jvdb_repo *repo, const struct catalog *c, const char *mark, jvdb_backup_info **deleted,
                         size_t *count)
{
    jvdb_backup_info *v = NULL;
    size_t k = 0;
    int rc = JVDB_OK;
    size_t want = 0;
    for (size_t i = 0; i < c->n; i++) want += mark[i] != 0;
    if (deleted && want && !(v = malloc(want * sizeof *v))) return err_set(JVDB_ENOMEM, "out of memory");
    for (size_t i = c->n; i-- > 0 && !rc;) {
        if (!mark[i]) continue;
        if ((rc = repo->ops->remove(repo, c->db, c->v[i].id))) {
            rc = backup_context(rc, "deleting backup %s of '%s'", c->v[i].id, c->db);
            break;
        }
        if (v) cat_info(&c->v[i], c->db, &v[k]);
        k++;
    }
    if (deleted) *deleted = v;
    else free(v);
    if (count) *count = k;
    return rc;
}

int jvdb_backup_delete(jvdb_repo *repo, const char *id, int cascade, jvdb_backup_info **deleted, size_t *count)
{
    err_clear();
    if (deleted) *deleted = NULL;
    if (count) *count = 0;
    struct catalog c;
    int i, rc = catalog_for(repo, id, &c, &i);
    if (rc) return rc;
    char *mark = calloc(c.n, 1);
    if (!mark) {
        catalog_free(&c);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    mark[i] = 1;
    size_t deps = 0;
    char first[BACKUP_ID_MAX] = "";
    for (size_t j = 0; j < c.n; j++)
        if ((int)j != i && is_descendant(&c, (int)j, i)) {
            mark[j] = 1;
            if (!deps++) snprintf(first, sizeof first, "%s", c.v[j].id);
        }
    if (deps && !cascade)
        rc = err_set(JVDB_EBUSY, "backup %s of '%s' has %zu dependant backup%s (%s%s); delete %s first or cascade",
                     c.v[i].id, c.db, deps, deps == 1 ? "" : "s", first, deps > 1 ? ", ..." : "",
                     deps == 1 ? "it" : "them");
    else rc = remove_marked(repo, &c, mark, deleted, count);
    free(mark);
    catalog_free(&c);
    return rc;
}

/* The calendar bucket of a backup for retention: its UTC day, or its ISO week (year * 100 + week). */
static int64_t prune_bucket(int64_t created_ns, int weekly)
{
    time_t t = (time_t)(created_ns / 1000000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (!weekly) return (int64_t)(tm.tm_year + 1900) * 1000 + tm.tm_yday;
    char buf[16];
    strftime(buf, sizeof buf, "%G%V", &tm);
    return strtoll(buf, NULL, 10);
}

int jvdb_backup_prune_ex(jvdb_repo *repo, const char *db_name, const jvdb_prune_options *o, jvdb_backup_info **deleted,
                         size_t *count)
{
    err_clear();
    if (deleted) *deleted = NULL;
    if (count) *count = 0;
    if (!db_name || !db_name_valid(db_name))
        return err_set(JVDB_EINVAL, "invalid database name '%s'", db_name ? db_name : "");
    if (!o || (!o->keep_last && !o->keep_daily && !o->keep_weekly))
        return err_set(JVDB_EINVAL, "prune must keep at least one backup (delete them explicitly otherwise)");
    struct catalog c;
    int rc = catalog_load(repo, db_name, &c);
    if (rc) return rc;
    if (!o->dry_run) repo->ops->cleanup(repo, db_name, BACKUP_CLEANUP_AGE_S);
    char *mark = malloc(c.n ? c.n : 1);
    if (!mark) {
        catalog_free(&c);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    memset(mark, 1, c.n);
    uint32_t last = o->keep_last, daily = o->keep_daily, weekly = o->keep_weekly;
    int64_t last_day = -1, last_week = -1;
    for (size_t i = c.n; i-- > 0;) {
        if (!c.v[i].restorable) continue;
        int keep = 0;
        if (last) {
            last--;
            keep = 1;
        }
        int64_t day = prune_bucket(c.v[i].m.created_ns, 0), week = prune_bucket(c.v[i].m.created_ns, 1);
        /* Newest first, so the first backup met in a bucket is that bucket's newest. */
        if (daily && day != last_day) {
            daily--;
            keep = 1;
        }
        last_day = day;
        if (weekly && week != last_week) {
            weekly--;
            keep = 1;
        }
        last_week = week;
        if (keep)
            for (int p = (int)i; p >= 0; p = c.v[p].parent) mark[p] = 0;
    }
    if (o->dry_run) {
        /* The same list, in the same order, that a real prune would delete. */
        size_t want = 0, k = 0;
        for (size_t i = 0; i < c.n; i++) want += mark[i] != 0;
        jvdb_backup_info *v = want ? malloc(want * sizeof *v) : NULL;
        if (want && !v) rc = err_set(JVDB_ENOMEM, "out of memory");
        for (size_t i = c.n; !rc && i-- > 0;)
            if (mark[i]) cat_info(&c.v[i], c.db, &v[k++]);
        if (!rc && deleted) *deleted = v;
        else free(v);
        if (!rc && count) *count = k;
    } else {
        rc = remove_marked(repo, &c, mark, deleted, count);
    }
    free(mark);
    catalog_free(&c);
    return rc;
}

int jvdb_backup_prune(jvdb_repo *repo, const char *db_name, uint32_t keep, jvdb_backup_info **deleted, size_t *count)
{
    jvdb_prune_options o = { keep, 0, 0, 0 };
    return jvdb_backup_prune_ex(repo, db_name, &o, deleted, count);
}

/* ------------------------------------------------------------------ retention by time */

int jvdb_backup_retain(jvdb_repo *repo, const char *db_name, int64_t window_start_ns, int dry_run,
                       jvdb_retention_result *out)
{
    err_clear();
    jvdb_retention_result none;
    if (!out) out = &none;
    memset(out, 0, sizeof *out);
    if (!db_name || !db_name_valid(db_name))
        return err_set(JVDB_EINVAL, "invalid database name '%s'", db_name ? db_name : "");
    struct catalog c;
    int rc = catalog_load(repo, db_name, &c);
    if (rc == JVDB_ENOTFOUND) {
        err_clear();
        return JVDB_OK;
    }
    if (rc) return rc;
    if (!dry_run) repo->ops->cleanup(repo, db_name, BACKUP_CLEANUP_AGE_S);
    /* The base every restore inside the window can start from: the newest restorable backup made
     * before it.  Without one, nothing before the window may go. */
    int base = -1;
    for (size_t i = 0; i < c.n; i++)
        if (c.v[i].restorable == 1 && c.v[i].m.created_ns <= window_start_ns) base = (int)i;
    char *mark = calloc(c.n ? c.n : 1, 1);
    if (!mark) {
        catalog_free(&c);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    if (base >= 0) {
        for (size_t i = 0; i < c.n; i++) mark[i] = c.v[i].m.created_ns <= window_start_ns || !c.v[i].meta_ok;
        for (size_t i = 0; i < c.n; i++) /* kept ones keep their chains */
            if (!mark[i] || (int)i == base)
                for (int p = (int)i; p >= 0; p = c.v[p].parent) mark[p] = 0;
    }
    struct wal_entry *ents = NULL;
    size_t n = 0;
    if (base >= 0) rc = wal_list(repo, db_name, &ents, &n);
    const struct backup_meta *b = base >= 0 ? &c.v[base].m : NULL;
    for (size_t i = 0; !rc && i < n; i++) {
        const struct wal_entry *e = &ents[i];
        /* Covered: its records are all at or below the base, of the base's incarnation or an
         * earlier one (incarnations are creation times). */
        int covered = e->incarnation == b->incarnation ? e->lsn_to <= b->lsn_to : e->incarnation < b->incarnation;
        if (e->last_time_ns >= window_start_ns || !covered) continue;
        if (!dry_run) {
            char path[WAL_NAME_MAX + 8];
            snprintf(path, sizeof path, "%s/%s", WAL_DIR, e->name);
            if ((rc = repo->ops->obj_delete(repo, db_name, path))) break;
        }
        out->log_objects_deleted++;
        out->log_objects_covered += e->incarnation == b->incarnation;
    }
    free(ents);
    size_t k = 0;
    for (size_t i = 0; i < c.n; i++) k += mark[i] != 0;
    if (!rc && dry_run) out->backups_deleted = k;
    else if (!rc && k) {
        rc = remove_marked(repo, &c, mark, NULL, &k);
        out->backups_deleted = k;
    }
    free(mark);
    catalog_free(&c);
    return rc;
}
