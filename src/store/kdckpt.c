/*
 * kdckpt.c — the keydir checkpoint: writer, verifying reader, loader and the background checkpointer.
 * Format: docs/FORMAT.md, "Keydir checkpoint".
 *
 * Invariant: KEYDIR, when present and valid, describes exactly the keydir that applying every record
 * with LSN <= its LSN would build, and every record it covers is durable and lies below the offset
 * it names per segment; so an open may load it and apply only what lies beyond those offsets.  It is
 * only ever replaced whole (KEYDIR.tmp, fsync, rename, directory fsync), and the data it covers is
 * fdatasynced before the rename.  Anything the loader cannot trust (missing, damaged, another version
 * or dimension, naming a segment that is gone or shorter than it says) makes the open fall back to
 * reading every record, saying why in the log.
 *
 * Taking a checkpoint never holds the writer lock across I/O: under write_mu it only notes the last
 * LSN L, the segments (pinned) with their sizes and record counts; then, inside one read section
 * (store/readpath.h), it walks the hash table and writes, per id, the version visible at L.  That
 * version is always reachable: superseded versions are cut only after `visible` passes their
 * successor and a grace period ends, and `visible` was at most L when the section began.  A record
 * that compaction moved to a segment noted after L makes the attempt give up (JVDB_EBUSY).
 */
#include "store/kdckpt.h"

#include "store/db_impl.h"
#include "store/validate.h"

#include "core/clock.h"
#include "core/bytes.h"
#include "core/err.h"
#include "core/fs.h"
#include "core/io.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define KC_BLOCK_TARGET  (1u << 20)
#define KC_DEFAULT_BYTES (64ull << 20)
#define KC_POLL_MS       200
#define KC_AHEAD         12 /* entries of look-ahead for the loader's prefetches */
/* How much more an old-format entry takes in the keydir's arena than in the file, at most. */
#define KC_GROWTH        (KD_ENTRY_SIZE(0) + 7 - KDCKPT_ENTRY_FIXED_OLD)

/* A current-format entry is the image of the struct kd_entry it becomes in place. */
_Static_assert(offsetof(struct kd_entry, rec) == 0 && offsetof(struct kd_entry, prev) == 8 &&
                   offsetof(struct kd_entry, seg) == 16 && offsetof(struct kd_entry, lsn) == 24 &&
                   offsetof(struct kd_entry, rec_len) == 32 && offsetof(struct kd_entry, slot) == 36 &&
                   offsetof(struct kd_entry, hits) == 40 && offsetof(struct kd_entry, id_len) == 44 &&
                   offsetof(struct kd_entry, kind) == 46 && offsetof(struct kd_entry, flags) == 47 &&
                   offsetof(struct kd_entry, id) == KDCKPT_ENTRY_FIXED && sizeof(struct kd_entry) == KDCKPT_ENTRY_FIXED,
               "the keydir checkpoint's entry layout (docs/FORMAT.md) is struct kd_entry's");

struct kdckpt {
    pthread_mutex_t mu; /* one checkpoint at a time; guards the fields below */
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stop;
    uint64_t lsn;   /* of the checkpoint on disk (loaded or written); 0: none */
    uint64_t *segs; /* the segments it names */
    size_t nsegs;
    uint64_t bytes;      /* segment bytes when it was taken */
    uint64_t file_bytes; /* its own size */
    uint64_t open_lsn;   /* last_lsn right after the open */
    uint64_t scanned;    /* bytes the open read record by record */
    uint64_t threshold;  /* JVDB_KDCKPT_BYTES */
    bool old;            /* the one on disk is of the old format: rewrite it at the next chance */
};

/* CPU time of the calling thread (what a load costs on a machine with a core free beside it). */
static int64_t kc_thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The state, created on first use (at load: no other thread yet). */
static struct kdckpt *kc_get(jvdb_db *db)
{
    if (db->kc) return db->kc;
    struct kdckpt *kc = calloc(1, sizeof *kc);
    if (!kc) return NULL;
    pthread_mutex_init(&kc->mu, NULL);
    clock_cond_init(&kc->cv);
    kc->threshold = KC_DEFAULT_BYTES;
    const char *v = getenv("JVDB_KDCKPT_BYTES");
    if (v && *v) {
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        if (!*end && n > 0) kc->threshold = n;
        else log_warn("ignoring JVDB_KDCKPT_BYTES='%s' (expected a positive number of bytes)", v);
    }
    db->kc = kc;
    return kc;
}

/* ---------------------------------------------------------------- reading the file */

/* read() of exactly len bytes; 0 at a clean EOF before any byte, 1 when read, -1 short or failed. */
static int kc_read_exact(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, (char *)buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return got == 0 && r == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

/* ---------------------------------------------------------------- reader */

/* Whether an id is non-empty printable ASCII within the length limit: valid without rec_check_id's
 * UTF-8 decoding (which took a tenth of a 5M-id load). */
static int kc_plain_id(const char *id, size_t len)
{
    if (len == 0 || len > JVDB_MAX_ID_LEN) return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)id[i] - 0x20u > 0x7eu - 0x20u) return 0;
    return 1;
}

/* Parses and checks the entry at p (room bytes left in its block) of a file of header h into *e
 * and its length on disk into *len; returns what is wrong with it, or NULL. */
static const char *kc_parse_entry(const uint8_t *p, size_t room, const struct kdckpt_header *h,
                                  const struct kdckpt_seg *segs, uint32_t dim, struct kdckpt_entry *e, size_t *len)
{
    if (h->version == KDCKPT_VERSION_OLD) {
        if (room < KDCKPT_ENTRY_FIXED_OLD) return "cut short";
        *e = (struct kdckpt_entry){ bytes_get64(p),
                                    bytes_get64(p + 8),
                                    bytes_get32(p + 16),
                                    bytes_get32(p + 20),
                                    bytes_get32(p + 24),
                                    bytes_get16(p + 28),
                                    p[30],
                                    (const char *)p + 32,
                                    0,
                                    NULL };
        if (p[31] != 0) return "reserved byte is set";
        if (room - KDCKPT_ENTRY_FIXED_OLD < e->id_len) return "id runs past its block";
        *len = KDCKPT_ENTRY_FIXED_OLD + e->id_len;
    } else {
        /* The image of a struct kd_entry (store/keydir.h), with the offset in rec, the segment's
         * index in seg and the id padded with zeros to a multiple of 8. */
        if (room < KDCKPT_ENTRY_FIXED) return "cut short";
        uint64_t seg = bytes_get64(p + 16);
        *e = (struct kdckpt_entry){ bytes_get64(p + 24),
                                    bytes_get64(p),
                                    (uint32_t)seg,
                                    bytes_get32(p + 32),
                                    bytes_get32(p + 36),
                                    bytes_get16(p + 44),
                                    p[46],
                                    (const char *)p + KDCKPT_ENTRY_FIXED,
                                    0,
                                    NULL };
        if (bytes_get64(p + 8) != 0 || bytes_get32(p + 40) != 0 || p[47] != 0) return "reserved field is set";
        if (seg >= h->nsegs) return "segment index out of range";
        size_t padded = ((size_t)e->id_len + 7) & ~(size_t)7;
        if (room - KDCKPT_ENTRY_FIXED < padded) return "id runs past its block";
        for (size_t i = e->id_len; i < padded; i++)
            if (p[KDCKPT_ENTRY_FIXED + i]) return "id padding is not zero";
        *len = KDCKPT_ENTRY_FIXED + padded;
    }
    if (e->kind != REC_KIND_PUT && e->kind != REC_KIND_DELETE) return "unknown kind";
    if (e->seg >= h->nsegs) return "segment index out of range";
    if (e->lsn == 0 || e->lsn < segs[e->seg].min_lsn || e->lsn > segs[e->seg].max_lsn)
        return "LSN outside its segment's range";
    if (e->offset < SEG_HEADER_SIZE || e->offset % REC_ALIGN || e->rec_len % REC_ALIGN ||
        e->rec_len < rec_size(dim, e->kind, e->id_len, 0) || e->offset > segs[e->seg].covered ||
        e->rec_len > segs[e->seg].covered - e->offset)
        return "record location outside the covered part of its segment";
    if ((e->kind == REC_KIND_PUT) == (e->slot == UINT32_MAX) || (e->kind == REC_KIND_PUT && e->slot >= h->nslots))
        return "slot out of range";
    if (!kc_plain_id(e->id, e->id_len) && rec_check_id(e->id, e->id_len, "") != JVDB_OK) return "invalid id";
    e->hash = keydir_hash(e->id, e->id_len);
    return NULL;
}

int kdckpt_read(int fd, uint32_t dim, const struct kdckpt_sink *sink)
{
    struct stat st;
    if (fstat(fd, &st) < 0) return err_errno(errno, "cannot stat the keydir checkpoint");
    uint64_t file_size = (uint64_t)st.st_size;
    uint8_t hb[KDCKPT_HEADER_SIZE];
    if (kc_read_exact(fd, hb, sizeof hb) != 1) return err_set(JVDB_ECORRUPT, "file too short for a header");
    if (memcmp(hb, KDCKPT_MAGIC, 8) != 0) return err_set(JVDB_ECORRUPT, "bad magic");
    if (bytes_get64(hb + 56) != XXH3_64bits(hb, 56)) return err_set(JVDB_ECORRUPT, "header checksum mismatch");
    struct kdckpt_header h = { bytes_get32(hb + 8),           bytes_get32(hb + 12),
                               bytes_get64(hb + 16),          bytes_get64(hb + 24),
                               bytes_get32(hb + 32),          bytes_get32(hb + 36),
                               (int64_t)bytes_get64(hb + 40), file_size };
    if (h.version != KDCKPT_VERSION && h.version != KDCKPT_VERSION_OLD)
        return err_set(JVDB_ECORRUPT, "format version %u (this build reads %u and %u)", h.version, KDCKPT_VERSION_OLD,
                       KDCKPT_VERSION);
    if (h.dim != dim) return err_set(JVDB_ECORRUPT, "dimension %u (the database has %u)", h.dim, dim);
    if (h.nsegs == 0 || h.nsegs > KDCKPT_MAX_SEGS)
        return err_set(JVDB_ECORRUPT, "segment count %u is out of range", h.nsegs);
    if (h.entries > file_size / (h.version == KDCKPT_VERSION_OLD ? KDCKPT_ENTRY_FIXED_OLD : KDCKPT_ENTRY_FIXED))
        return err_set(JVDB_ECORRUPT, "entry count %" PRIu64 " exceeds the file", h.entries);
    if ((uint64_t)h.nslots > h.entries + (16u << 20))
        return err_set(JVDB_ECORRUPT, "slot count %u is out of range", h.nslots);
    size_t tlen = (size_t)h.nsegs * KDCKPT_SEG_SIZE + 8;
    if (tlen > file_size) return err_set(JVDB_ECORRUPT, "segment table exceeds the file");
    uint8_t *tb = malloc(tlen);
    struct kdckpt_seg *segs = calloc(h.nsegs, sizeof *segs);
    uint8_t *buf = NULL; /* a block's payload when the sink takes none */
    XXH3_state_t *xs = NULL;
    struct kdckpt_entry *ents = NULL; /* one block's, parsed */
    int rc = JVDB_OK;
    if (!tb || !segs) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    if (kc_read_exact(fd, tb, tlen) != 1) {
        rc = err_set(JVDB_ECORRUPT, "file ends inside the segment table");
        goto out;
    }
    if (bytes_get64(tb + tlen - 8) != XXH3_64bits(tb, tlen - 8)) {
        rc = err_set(JVDB_ECORRUPT, "segment table checksum mismatch");
        goto out;
    }
    for (uint32_t i = 0; i < h.nsegs; i++) {
        const uint8_t *p = tb + (size_t)i * KDCKPT_SEG_SIZE;
        struct kdckpt_seg *s = &segs[i];
        *s = (struct kdckpt_seg){ bytes_get64(p), bytes_get64(p + 8), bytes_get64(p + 16), bytes_get64(p + 24),
                                  bytes_get64(p + 32) };
        if ((i > 0 && s->no <= segs[i - 1].no) || s->covered < SEG_HEADER_SIZE || s->min_lsn > s->max_lsn ||
            s->max_lsn > h.lsn || (s->records == 0) != (s->max_lsn == 0) || s->records > s->covered / REC_ALIGN)
            rc = err_set(JVDB_ECORRUPT, "segment table entry %u is inconsistent", i);
        if (rc) goto out;
    }
    if (sink->begin && (rc = sink->begin(sink->ctx, &h, segs))) goto out;
    uint64_t seen = 0;
    size_t cap = 0;
    uint32_t ecap = 0;
    for (;;) {
        uint8_t bh[KDCKPT_BLOCK_HEAD];
        if (kc_read_exact(fd, bh, sizeof bh) != 1) {
            rc = err_set(JVDB_ECORRUPT, "file ends after %" PRIu64 " entries, without its trailer", seen);
            goto out;
        }
        uint32_t tag = bytes_get32(bh), count = bytes_get32(bh + 4), bytes = bytes_get32(bh + 8);
        if (!memcmp(bh, KDCKPT_END_MAGIC, 8)) {
            /* Trailer: the end magic, then the entry count and a checksum of both. */
            uint8_t tr[16];
            memcpy(tr, bh, 16);
            uint8_t ck[8], extra;
            if (kc_read_exact(fd, ck, 8) != 1 || bytes_get64(ck) != XXH3_64bits(tr, 16)) {
                rc = err_set(JVDB_ECORRUPT, "trailer checksum mismatch");
                goto out;
            }
            if (bytes_get64(tr + 8) != seen || seen != h.entries) {
                rc = err_set(JVDB_ECORRUPT, "%" PRIu64 " entries read, the header says %" PRIu64, seen, h.entries);
                goto out;
            }
            if (kc_read_exact(fd, &extra, 1) != 0) {
                rc = err_set(JVDB_ECORRUPT, "bytes follow the trailer");
                goto out;
            }
            break;
        }
        size_t fixed = h.version == KDCKPT_VERSION_OLD ? KDCKPT_ENTRY_FIXED_OLD : KDCKPT_ENTRY_FIXED;
        if (tag != KDCKPT_BLOCK_TAG || bytes_get32(bh + 12) != 0 || bytes > KDCKPT_MAX_BLOCK || count == 0 ||
            count > bytes / fixed) {
            rc = err_set(JVDB_ECORRUPT, "bad block header after %" PRIu64 " entries", seen);
            goto out;
        }
        /* A current-format block goes straight into the sink's memory, where its entries become
         * keydir entries in place: loading it is the read itself plus one pass of checks. */
        uint8_t *dst = h.version != KDCKPT_VERSION_OLD && sink->block ? sink->block(sink->ctx, bytes) : NULL;
        uint8_t *img = dst;
        if (!dst) {
            if (cap < bytes) {
                uint8_t *nb = realloc(buf, bytes);
                if (!nb) {
                    rc = err_set(JVDB_ENOMEM, "out of memory");
                    goto out;
                }
                buf = nb;
                cap = bytes;
            }
            dst = buf;
        }
        uint8_t ck[8];
        if (kc_read_exact(fd, dst, bytes) != 1 || kc_read_exact(fd, ck, 8) != 1) {
            rc = err_set(JVDB_ECORRUPT, "file ends inside a block");
            goto out;
        }
        if (!xs && !(xs = XXH3_createState())) {
            rc = err_set(JVDB_ENOMEM, "out of memory");
            goto out;
        }
        XXH3_64bits_reset(xs);
        XXH3_64bits_update(xs, bh, KDCKPT_BLOCK_HEAD);
        XXH3_64bits_update(xs, dst, bytes);
        if (bytes_get64(ck) != XXH3_64bits_digest(xs)) {
            rc = err_set(JVDB_ECORRUPT, "block checksum mismatch after %" PRIu64 " entries", seen);
            goto out;
        }
        /* Parsed and checked whole first, then handed over with a look-ahead for prefetching. */
        if (ecap < count) {
            struct kdckpt_entry *ne = realloc(ents, (size_t)count * sizeof *ne);
            if (!ne) {
                rc = err_set(JVDB_ENOMEM, "out of memory");
                goto out;
            }
            ents = ne;
            ecap = count;
        }
        const uint8_t *p = dst, *end = p + bytes;
        for (uint32_t k = 0; k < count; k++) {
            size_t len = 0;
            const char *bad = kc_parse_entry(p, (size_t)(end - p), &h, segs, dim, &ents[k], &len);
            if (bad) {
                rc = err_set(JVDB_ECORRUPT, "entry %" PRIu64 ": %s", seen + k, bad);
                goto out;
            }
            if (img) ents[k].img = img + (p - dst);
            p += len;
        }
        if (p != end) {
            rc = err_set(JVDB_ECORRUPT, "block has %zu bytes after its last entry", (size_t)(end - p));
            goto out;
        }
        if (seen + count > h.entries) {
            rc = err_set(JVDB_ECORRUPT, "more entries than the header says");
            goto out;
        }
        for (uint32_t k = 0; k < count; k++) {
            if (sink->ahead && k + KC_AHEAD < count) sink->ahead(sink->ctx, &ents[k + KC_AHEAD]);
            if (sink->entry && (rc = sink->entry(sink->ctx, &ents[k]))) goto out;
        }
        seen += count;
    }
out:
    XXH3_freeState(xs);
    free(ents);
    free(tb);
    free(segs);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- loading at open */

struct kc_load {
    jvdb_db *db;
    uint64_t *from;
    struct segment **map; /* checkpoint segment index -> the open segment */
    uint64_t lsn;
    uint32_t nsegs;
    bool old; /* an old-format file */
};

/* Sink: matches the checkpoint's segments with the open ones and sizes the keydir. */
static int kc_load_begin(void *ctx, const struct kdckpt_header *h, const struct kdckpt_seg *segs)
{
    struct kc_load *L = ctx;
    jvdb_db *db = L->db;
    if (!(L->map = calloc(h->nsegs, sizeof *L->map))) return err_set(JVDB_ENOMEM, "out of memory");
    L->nsegs = h->nsegs;
    L->lsn = h->lsn;
    size_t j = 0;
    for (uint32_t i = 0; i < h->nsegs; i++) {
        while (j < db->nsegs && db->segs[j]->no < segs[i].no) j++;
        if (j == db->nsegs || db->segs[j]->no != segs[i].no)
            return err_set(JVDB_ECORRUPT, "stale: segment %" PRIu64 " it names is gone (compacted or repaired since)",
                           segs[i].no);
        struct segment *s = db->segs[j];
        if (segs[i].covered > s->size)
            return err_set(JVDB_ECORRUPT, "stale: it covers %" PRIu64 " bytes of %s, which has %" PRIu64,
                           segs[i].covered, s->path, s->size);
        L->map[i] = s;
        s->records = segs[i].records;
        s->min_lsn = segs[i].min_lsn;
        s->max_lsn = segs[i].max_lsn;
        L->from[j] = segs[i].covered;
    }
    /* Current-format blocks are the arena's bytes (a few header bytes short of the file); an
     * old-format entry grows by up to KC_GROWTH, so that load writes at least the file's size. */
    uint64_t arena = h->file_bytes + (h->version == KDCKPT_VERSION_OLD ? h->entries * KC_GROWTH : 0);
    L->old = h->version == KDCKPT_VERSION_OLD;
    return keydir_load_begin(&db->kd, h->entries, h->nslots, arena, h->file_bytes);
}

/* Sink: one id's newest version into the keydir. */
static int kc_load_entry(void *ctx, const struct kdckpt_entry *e)
{
    struct kc_load *L = ctx;
    return keydir_load_entry(&L->db->kd, L->map[e->seg], e->offset, e->id, e->id_len, e->hash, e->lsn, e->kind,
                             e->rec_len, e->slot, e->img);
}

/* Sink: a block's payload goes to the keydir's arena. */
static void *kc_load_block(void *ctx, size_t bytes)
{
    struct kc_load *L = ctx;
    return keydir_load_block(&L->db->kd, bytes);
}

/* Sink: prefetches where an entry a few calls ahead will land. */
static void kc_load_ahead(void *ctx, const struct kdckpt_entry *e)
{
    struct kc_load *L = ctx;
    keydir_load_prefetch(&L->db->kd, e->hash, e->slot);
}

/* Undoes a partial load: an empty keydir and no segment accounting. */
static int kc_reset(jvdb_db *db, uint64_t *from)
{
    keydir_free(&db->kd);
    for (size_t i = 0; i < db->nsegs; i++) {
        struct segment *s = db->segs[i];
        s->records = s->min_lsn = s->max_lsn = s->live_records = s->live_bytes = 0;
        from[i] = SEG_HEADER_SIZE;
    }
    return keydir_init(&db->kd, &db->gc);
}

int kdckpt_load(jvdb_db *db, uint64_t *from, uint64_t *lsn)
{
    struct kdckpt *kc = kc_get(db);
    if (!kc) return err_set(JVDB_ENOMEM, "out of memory");
    for (size_t i = 0; i < db->nsegs; i++) from[i] = SEG_HEADER_SIZE;
    *lsn = 0;
    char *path = fs_join(db->dir, KDCKPT_FILE);
    if (!path) return err_set(JVDB_ENOMEM, "out of memory");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) log_info("database '%s': no keydir checkpoint; reading every record", db->m.name);
        else log_warn("database '%s': cannot open %s (%s); reading every record", db->m.name, path, strerror(errno));
        free(path);
        return 0;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    struct kc_load L = { db, from, NULL, 0, 0, false };
    struct kdckpt_sink sink = { &L, kc_load_begin, kc_load_entry, kc_load_ahead, kc_load_block };
    int64_t t0 = clock_mono_ns(), c0 = kc_thread_cpu_ns();
    int rc = kdckpt_read(fd, db->m.dim, &sink);
    if (rc == JVDB_OK) rc = keydir_load_end(&db->kd);
    struct stat st;
    uint64_t fbytes = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    close(fd);
    if (rc == JVDB_OK) {
        *lsn = L.lsn;
        kc->lsn = L.lsn;
        kc->old = L.old;
        kc->file_bytes = fbytes;
        kc->nsegs = 0;
        free(kc->segs);
        kc->segs = malloc((L.nsegs ? L.nsegs : 1) * sizeof *kc->segs);
        if (kc->segs)
            for (uint32_t i = 0; i < L.nsegs; i++) kc->segs[kc->nsegs++] = L.map[i]->no;
        kc->bytes = 0;
        for (size_t i = 0; i < db->nsegs; i++) kc->bytes += from[i];
        log_info("database '%s': loaded the keydir checkpoint (%" PRIu64 " ids up to LSN %" PRIu64
                 ") in %.3f s (%.3f s CPU in this thread)",
                 db->m.name, db->kd.count, L.lsn, (double)(clock_mono_ns() - t0) / 1e9,
                 (double)(kc_thread_cpu_ns() - c0) / 1e9);
        free(L.map);
        free(path);
        return 1;
    }
    if (rc == JVDB_ENOMEM) {
        free(L.map);
        free(path);
        return rc;
    }
    log_warn("database '%s': not using the keydir checkpoint %s (%s); reading every record", db->m.name, path,
             jvdb_errmsg());
    free(L.map);
    free(path);
    rc = kc_reset(db, from);
    return rc ? rc : 0;
}

/* ---------------------------------------------------------------- writing */

/* A segment as noted under write_mu when a checkpoint is taken (pinned until it is written). */
struct kc_seg {
    struct segment *s;
    const uint8_t *map;
    struct kdckpt_seg d;
    uint32_t index; /* in the segment table (ascending by number) */
};

struct kc_out {
    int fd;
    uint8_t *buf; /* the block being filled (head reserved) */
    size_t len;
    uint32_t count;
    uint64_t entries;
};

/* Orders noted segments by mapping address, for kc_find_seg. */
static int kc_cmp_map(const void *a, const void *b)
{
    const struct kc_seg *x = a, *y = b;
    return x->map < y->map ? -1 : x->map > y->map;
}

/* The noted segment whose mapping holds rec, or NULL. */
static const struct kc_seg *kc_find_seg(const struct kc_seg *v, size_t n, const uint8_t *rec)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid].map <= rec) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return NULL;
    const struct kc_seg *c = &v[lo - 1];
    return rec < c->map + c->d.covered ? c : NULL;
}

/* Writes the block being filled (head and checksum added) and starts the next. */
static int kc_flush(struct kc_out *o, const char *tmp)
{
    if (!o->count) return JVDB_OK;
    uint32_t bytes = (uint32_t)(o->len - KDCKPT_BLOCK_HEAD);
    bytes_put32(o->buf, KDCKPT_BLOCK_TAG);
    bytes_put32(o->buf + 4, o->count);
    bytes_put32(o->buf + 8, bytes);
    bytes_put32(o->buf + 12, 0);
    bytes_put64(o->buf + o->len, XXH3_64bits(o->buf, o->len));
    if (io_write_all(o->fd, o->buf, o->len + 8) < 0) return err_errno(errno, "cannot write %s", tmp);
    o->entries += o->count;
    o->count = 0;
    o->len = KDCKPT_BLOCK_HEAD;
    return JVDB_OK;
}

/* Appends version x's entry to the block being filled (flushing it when full). */
static int kc_emit(struct kc_out *o, const struct kd_entry *x, const struct kc_seg *v, size_t n, const char *tmp)
{
    const uint8_t *rec = (const uint8_t *)keydir_record(x);
    const struct kc_seg *s = kc_find_seg(v, n, rec);
    if (!s || (uint64_t)(rec - s->map) + x->rec_len > s->d.covered)
        return err_set(JVDB_EBUSY, "a compaction moved records while the keydir checkpoint was taken");
    uint8_t *p = o->buf + o->len;
    size_t padded = ((size_t)x->id_len + 7) & ~(size_t)7;
    memset(p, 0, KDCKPT_ENTRY_FIXED + padded);
    bytes_put64(p, (uint64_t)(rec - s->map));
    bytes_put64(p + 16, s->index);
    bytes_put64(p + 24, x->lsn);
    bytes_put32(p + 32, x->rec_len);
    bytes_put32(p + 36, x->kind == REC_KIND_PUT ? x->slot : UINT32_MAX);
    bytes_put16(p + 44, x->id_len);
    p[46] = x->kind;
    memcpy(p + KDCKPT_ENTRY_FIXED, x->id, x->id_len);
    o->len += KDCKPT_ENTRY_FIXED + padded;
    o->count++;
    return o->len >= KC_BLOCK_TARGET ? kc_flush(o, tmp) : JVDB_OK;
}

/* Notes L and the segments under write_mu (no I/O), pinning them; *pn is their count. */
static int kc_note(jvdb_db *db, struct kc_seg **pv, size_t *pn, uint64_t *L, uint32_t *nslots, uint64_t *bytes)
{
    db_write_lock(db);
    if (atomic_load(&db->failed)) {
        db_write_unlock(db);
        return err_set(JVDB_EFAILED, "the database refuses writes after an I/O failure");
    }
    struct kc_seg *v = calloc(db->nsegs ? db->nsegs : 1, sizeof *v);
    if (!v) {
        db_write_unlock(db);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    *bytes = 0;
    for (size_t i = 0; i < db->nsegs; i++) {
        struct segment *s = db->segs[i];
        seg_ref(s);
        v[i].s = s;
        v[i].map = s->map;
        v[i].index = (uint32_t)i;
        v[i].d = (struct kdckpt_seg){ s->no, s->size, __atomic_load_n(&s->records, __ATOMIC_RELAXED),
                                      __atomic_load_n(&s->min_lsn, __ATOMIC_RELAXED),
                                      __atomic_load_n(&s->max_lsn, __ATOMIC_RELAXED) };
        *bytes += s->size;
    }
    *pn = db->nsegs;
    *L = db->last_lsn;
    *nslots = db->kd.nslots;
    db_write_unlock(db);
    *pv = v;
    return JVDB_OK;
}

/* Streams the header placeholder, the segment table, every id's version at L and the trailer to
 * fd; the caller is inside a read section. */
static int kc_stream(jvdb_db *db, int fd, const char *tmp, struct kc_seg *v, size_t n, uint64_t L, uint32_t nslots)
{
    uint8_t hb[KDCKPT_HEADER_SIZE] = { 0 };
    if (io_write_all(fd, hb, sizeof hb) < 0) return err_errno(errno, "cannot write %s", tmp);
    size_t tlen = n * KDCKPT_SEG_SIZE + 8;
    uint8_t *tb = malloc(tlen);
    if (!tb) return err_set(JVDB_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = tb + i * KDCKPT_SEG_SIZE;
        bytes_put64(p, v[i].d.no);
        bytes_put64(p + 8, v[i].d.covered);
        bytes_put64(p + 16, v[i].d.records);
        bytes_put64(p + 24, v[i].d.min_lsn);
        bytes_put64(p + 32, v[i].d.max_lsn);
    }
    bytes_put64(tb + tlen - 8, XXH3_64bits(tb, tlen - 8));
    int rc = io_write_all(fd, tb, tlen) < 0 ? err_errno(errno, "cannot write %s", tmp) : JVDB_OK;
    free(tb);
    if (rc) return rc;
    qsort(v, n, sizeof *v, kc_cmp_map);
    struct kc_out o = { fd, malloc(KC_BLOCK_TARGET + KDCKPT_ENTRY_FIXED + JVDB_MAX_ID_LEN + 16), KDCKPT_BLOCK_HEAD, 0,
                        0 };
    if (!o.buf) return err_set(JVDB_ENOMEM, "out of memory");
    /* Puts in slot order, then the rest in table order: the loader then writes its three slot
     * arrays (and its arena) front to back and only the hash table at random, one line per entry,
     * instead of three random lines per entry in the slot arrays (table order).  Read after L was
     * noted: these tables hold every id and slot in use at L, and owner[s]'s chain still holds
     * the version at L of the id that had slot s then (a slot is released only after a grace
     * period past a later tombstone, and this read section began before that tombstone existed). */
    uint32_t ns = 0;
    const struct kd_slots *sl = keydir_slots(&db->kd, &ns);
    if (ns > nslots) ns = nslots;
    for (uint32_t s = 0; s < ns && rc == JVDB_OK; s++) {
        const struct kd_entry *x = keydir_visible(__atomic_load_n(&sl->owner[s], __ATOMIC_ACQUIRE), L);
        if (x && x->kind == REC_KIND_PUT && x->slot == s) rc = kc_emit(&o, x, v, n, tmp); /* else below */
    }
    const struct kd_table *t = __atomic_load_n(&db->kd.table, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < t->cap && rc == JVDB_OK; i++) {
        const struct kd_entry *e = keydir_bucket(t, i);
        if (!e || e == KD_DEAD) continue;
        const struct kd_entry *x = keydir_visible(e, L);
        if (x && (x->kind != REC_KIND_PUT || x->slot >= ns ||
                  keydir_visible(__atomic_load_n(&sl->owner[x->slot], __ATOMIC_ACQUIRE), L) != x))
            rc = kc_emit(&o, x, v, n, tmp);
    }
    if (rc == JVDB_OK) rc = kc_flush(&o, tmp);
    free(o.buf);
    if (rc) return rc;
    uint8_t tr[24];
    memcpy(tr, KDCKPT_END_MAGIC, 8);
    bytes_put64(tr + 8, o.entries);
    bytes_put64(tr + 16, XXH3_64bits(tr, 16));
    if (io_write_all(fd, tr, sizeof tr) < 0) return err_errno(errno, "cannot write %s", tmp);
    memcpy(hb, KDCKPT_MAGIC, 8);
    bytes_put32(hb + 8, KDCKPT_VERSION);
    bytes_put32(hb + 12, db->m.dim);
    bytes_put64(hb + 16, L);
    bytes_put64(hb + 24, o.entries);
    bytes_put32(hb + 32, (uint32_t)n);
    bytes_put32(hb + 36, nslots);
    bytes_put64(hb + 40, (uint64_t)clock_wall_ns());
    bytes_put64(hb + 56, XXH3_64bits(hb, 56));
    if (io_pwrite_all(fd, hb, sizeof hb, 0) < 0) return err_errno(errno, "cannot write %s", tmp);
    return JVDB_OK;
}

int kdckpt_write(jvdb_db *db, const char *why)
{
    if (db->mode != DB_MODE_WRITE) return err_set(JVDB_EREADONLY, "a read-only open never writes a keydir checkpoint");
    struct kdckpt *kc = kc_get(db);
    if (!kc) return err_set(JVDB_ENOMEM, "out of memory");
    pthread_mutex_lock(&kc->mu);
    int64_t t0 = clock_mono_ns();
    struct kc_seg *v = NULL;
    size_t n = 0;
    uint64_t L = 0, bytes = 0;
    uint32_t nslots = 0;
    char *path = fs_join(db->dir, KDCKPT_FILE);
    char *tmp = path ? malloc(strlen(path) + 5) : NULL;
    int fd = -1, rc;
    if (!tmp) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    sprintf(tmp, "%s.tmp", path);
    /* L is noted inside the read section: that is what keeps every version at L reachable. */
    rp_enter();
    rc = kc_note(db, &v, &n, &L, &nslots, &bytes);
    /* Everything the checkpoint covers must be durable before it can name it. */
    if (rc == JVDB_OK) rc = db_sync_all(db);
    if (rc == JVDB_OK) {
        io_crash_point("kdckpt.before_open"); /* not a commit point: tests stall the checkpointer here */
        fd = io_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) rc = err_errno(errno, "cannot create %s", tmp);
    }
    if (rc == JVDB_OK) rc = kc_stream(db, fd, tmp, v, n, L, nslots);
    rp_exit();
    if (rc == JVDB_OK && io_fsync(fd) < 0) rc = err_errno(errno, "cannot fsync %s", tmp);
    struct stat st;
    uint64_t fbytes = fd >= 0 && fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (fd >= 0) io_close(fd);
    if (rc == JVDB_OK) {
        io_crash_point("kdckpt.before_rename");
        if (io_rename(tmp, path) < 0) rc = err_errno(errno, "cannot rename %s to %s", tmp, path);
        else if (io_fsync_dir(db->dir) < 0) rc = err_errno(errno, "cannot fsync %s", db->dir);
        else io_crash_point("kdckpt.after_rename");
    }
    if (rc && fd >= 0) unlink(tmp);
    if (rc == JVDB_OK) {
        uint64_t *segs = malloc((n ? n : 1) * sizeof *segs);
        if (segs) {
            for (size_t i = 0; i < n; i++) segs[v[i].index] = v[i].d.no;
            free(kc->segs);
            kc->segs = segs;
            kc->nsegs = n;
        }
        kc->lsn = L;
        kc->old = false;
        kc->bytes = bytes;
        kc->file_bytes = fbytes;
        log_info("database '%s': wrote the keydir checkpoint (%s) up to LSN %" PRIu64 ", %" PRIu64 " bytes, in %.3f s",
                 db->m.name, why, L, fbytes, (double)(clock_mono_ns() - t0) / 1e9);
    }
out:
    for (size_t i = 0; i < n; i++) seg_unref(v[i].s);
    free(v);
    free(tmp);
    free(path);
    pthread_mutex_unlock(&kc->mu);
    return rc;
}

/* ---------------------------------------------------------------- when to write */

/* Whether a checkpoint is due: the database is big enough to be worth one and either a segment the
 * last one names is gone (a compaction or repair swapped segments) or `news` more bytes were
 * written since it (kc->mu held).  `final`: any change at all counts (close). */
static int kc_due(jvdb_db *db, struct kdckpt *kc, int final)
{
    if (db->mode != DB_MODE_WRITE || atomic_load(&db->failed) || db_is_dropping(db)) return 0;
    db_write_lock(db);
    uint64_t total = 0, last = db->last_lsn;
    int gone = 0;
    for (size_t i = 0; i < db->nsegs; i++) total += db->segs[i]->size;
    for (size_t i = 0, j = 0; i < kc->nsegs; i++) {
        while (j < db->nsegs && db->segs[j]->no < kc->segs[i]) j++;
        if (j == db->nsegs || db->segs[j]->no != kc->segs[i]) gone = 1;
    }
    db_write_unlock(db);
    if (total < kc->threshold) return 0;
    if (kc->lsn == 0 && kc->nsegs == 0) return 1; /* none yet: the next open would read every record */
    if (gone || kc->old) return 1;
    if (final) return last != kc->lsn;
    uint64_t news = total > kc->bytes ? total - kc->bytes : 0;
    uint64_t every = kc->file_bytes > kc->threshold ? kc->file_bytes : kc->threshold;
    return news >= every;
}

/* The background checkpointer: looks every KC_POLL_MS whether a checkpoint is due. */
static void *kc_main(void *arg)
{
    jvdb_db *db = arg;
    struct kdckpt *kc = db->kc;
    pthread_mutex_lock(&kc->mu);
    while (!kc->stop) {
        clock_cond_wait_ns(&kc->cv, &kc->mu, (int64_t)KC_POLL_MS * 1000000);
        if (kc->stop || !kc_due(db, kc, 0)) continue;
        pthread_mutex_unlock(&kc->mu);
        if (kdckpt_write(db, "periodic") != JVDB_OK && !atomic_load(&db->failed))
            log_info("database '%s': keydir checkpoint postponed: %s", db->m.name, jvdb_errmsg());
        pthread_mutex_lock(&kc->mu);
    }
    pthread_mutex_unlock(&kc->mu);
    return NULL;
}

int kdckpt_start(jvdb_db *db, uint64_t scanned)
{
    if (db->mode != DB_MODE_WRITE) return JVDB_OK;
    struct kdckpt *kc = kc_get(db);
    if (!kc) return err_set(JVDB_ENOMEM, "out of memory");
    kc->scanned = scanned;
    kc->open_lsn = db->last_lsn;
    if (pthread_create(&kc->thread, NULL, kc_main, db) != 0)
        return err_set(JVDB_ENOMEM, "cannot start the keydir checkpoint thread of '%s'", db->m.name);
    kc->started = true;
    return JVDB_OK;
}

/* Stops the checkpoint thread and waits for it (a checkpoint under way finishes first). */
static void kc_join(struct kdckpt *kc)
{
    pthread_mutex_lock(&kc->mu);
    kc->stop = true;
    pthread_cond_broadcast(&kc->cv);
    pthread_mutex_unlock(&kc->mu);
    pthread_join(kc->thread, NULL);
    kc->started = false;
}

int kdckpt_hold(jvdb_db *db, int hold)
{
    struct kdckpt *kc = db->kc;
    if (!kc || db->mode != DB_MODE_WRITE) return JVDB_OK;
    if (hold && kc->started) {
        kc_join(kc);
        kc->stop = false;
    } else if (!hold && !kc->started) {
        if (pthread_create(&kc->thread, NULL, kc_main, db) != 0)
            return err_set(JVDB_ENOMEM, "cannot start the keydir checkpoint thread of '%s'", db->m.name);
        kc->started = true;
    }
    return JVDB_OK;
}

int kdckpt_flush(jvdb_db *db, const char *why)
{
    struct kdckpt *kc = db->kc;
    if (!kc) return JVDB_OK;
    pthread_mutex_lock(&kc->mu);
    int due = kc_due(db, kc, 1);
    pthread_mutex_unlock(&kc->mu);
    return due ? kdckpt_write(db, why) : JVDB_OK;
}

void kdckpt_stop(jvdb_db *db, int final)
{
    struct kdckpt *kc = db->kc;
    if (!kc) return;
    if (kc->started) kc_join(kc);
    if (final) {
        if (kdckpt_flush(db, "close") != JVDB_OK)
            log_warn("database '%s': no keydir checkpoint at close: %s", db->m.name, jvdb_errmsg());
        return;
    }
    db->kc = NULL;
    free(kc->segs);
    pthread_mutex_destroy(&kc->mu);
    pthread_cond_destroy(&kc->cv);
    free(kc);
}
