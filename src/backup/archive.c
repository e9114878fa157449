/*
 * archive.c — the record stream inside a backup's data.jvb.zst (docs/FORMAT.md, "Backup archive"),
 * and the SHA-256 helpers every backup check uses.
 *
 * The stream is a 64-byte header, the database's own records copied verbatim (each 64-byte
 * aligned, each carrying its XXH3 checksum, in ascending LSN order), and a 64-byte trailer with
 * the counts and an XXH3 of the whole record region.  It is compressed as one zstd frame with the
 * frame checksum on, and the SHA-256 of the compressed bytes goes into backup.json.  Copying
 * records verbatim is what makes backups exact: restore appends the very bytes the database wrote,
 * checksums included, so a vector or its metadata cannot come back different.
 *
 * Writing: header, records and trailer go through a 1 MiB buffer into ZSTD_compressStream2 (with
 * worker threads when asked, so compression overlaps hashing and I/O); its output is hashed and
 * handed to the repository stage.  Reading is the mirror image (on two threads: one reads, hashes
 * and decompresses, the caller checks and consumes the records), and checks everything the bytes
 * alone can tell: SHA-256, frame integrity, header fields against backup.json, every record's
 * checksum, LSN range and order, no tombstone in a full backup, and the trailer's totals.  A backup
 * log object (type 4, wal.c) is the same stream without a backup.json: its header is checked
 * against the object's name, and a backup.json can never name type 4, so backup readers refuse it.
 *
 * Checksums only prove that nobody changed the bytes by accident: anyone who knows this format can
 * recompute every one of them.  So reading also checks every record's contents against the rules
 * `put` enforces (store/validate.h, plus cosine's non-zero vectors; archive_check_record), and a record that `put` would have
 * refused makes the whole archive bad, in verify as in restore, before anything is written.
 */
#include "backup/backup.h"

#include "core/err.h"
#include "store/record.h"
#include "store/validate.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

/* ------------------------------------------------------------------ SHA-256 */

struct sha256_ctx {
    EVP_MD_CTX *md;
};

struct sha256_ctx *sha256_new(void)
{
    struct sha256_ctx *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c->md);
        free(c);
        return NULL;
    }
    return c;
}

void sha256_update(struct sha256_ctx *c, const void *p, size_t n)
{
    if (n) EVP_DigestUpdate(c->md, p, n);
}

/* Writes a 32-byte digest as 64 lowercase hex digits and a NUL, the form backup.json records. */
static void sha256_to_hex(const unsigned char *d, char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}

void sha256_final_hex(struct sha256_ctx *c, char hex[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(c->md, d, &n);
    sha256_to_hex(d, hex);
    sha256_free(c);
}

void sha256_free(struct sha256_ctx *c)
{
    if (!c) return;
    EVP_MD_CTX_free(c->md);
    free(c);
}

void sha256_hex(const void *p, size_t n, char hex[65])
{
    unsigned char d[32];
    unsigned int dn = 0;
    EVP_Digest(p, n, d, &dn, EVP_sha256(), NULL);
    sha256_to_hex(d, hex);
}

/* ------------------------------------------------------------------ stream framing */

#define ARC_MAGIC      "JVDBBAK1"
#define ARC_END_MAGIC  "JVDBEND1"
#define ARC_VERSION    1u
#define ARC_BUF        (1u << 20)
/* The largest record a database can hold: header, vector, id, metadata, padding. */
#define ARC_MAX_RECORD (64u + 4u * JVDB_MAX_DIM + JVDB_MAX_ID_LEN + JVDB_MAX_META_LEN + 64u)

struct arc_header {
    char magic[8];
    uint32_t version;
    uint32_t dim;
    uint64_t lsn_from, lsn_to;
    uint64_t records, record_bytes;
    uint8_t type, metric;
    uint8_t reserved[6];
    uint64_t checksum; /* XXH3-64 of bytes [0, 56) */
};
_Static_assert(sizeof(struct arc_header) == 64, "archive header is 64 bytes");

struct arc_trailer {
    char magic[8];
    uint64_t records, record_bytes;
    uint64_t puts, deletes;
    uint64_t stream_xxh3; /* XXH3-64 of the record region */
    uint8_t reserved[8];
    uint64_t checksum; /* XXH3-64 of bytes [0, 56) */
};
_Static_assert(sizeof(struct arc_trailer) == 64, "archive trailer is 64 bytes");

/* ------------------------------------------------------------------ writer */

struct archive_writer {
    struct repo_stage *stage;
    const char *what;
    ZSTD_CCtx *cctx;
    struct sha256_ctx *sha;
    XXH3_state_t *xxh;
    char *in, *out;
    size_t in_len, out_len, out_cap;
    uint64_t raw, stored;
    uint64_t records, record_bytes, puts, deletes;
    uint64_t want_records, want_bytes;
};

/* Hands the compressed bytes waiting in the output buffer to the repository stage, hashing them
 * first: the SHA-256 in backup.json covers exactly the bytes stored. */
static int aw_emit(struct archive_writer *w)
{
    if (!w->out_len) return JVDB_OK;
    if (w->sha) sha256_update(w->sha, w->out, w->out_len);
    int rc = w->stage->write(w->stage, w->out, w->out_len);
    w->stored += w->out_len;
    w->out_len = 0;
    return rc;
}

/* Feeds the input buffer to zstd; with `end` set, finishes the frame. */
static int aw_compress(struct archive_writer *w, ZSTD_EndDirective end)
{
    ZSTD_inBuffer in = { w->in, w->in_len, 0 };
    for (;;) {
        ZSTD_outBuffer out = { w->out, w->out_cap, w->out_len };
        size_t left = ZSTD_compressStream2(w->cctx, &out, &in, end);
        if (ZSTD_isError(left))
            return err_set(JVDB_EIO, "%s: compression failed: %s", w->what, ZSTD_getErrorName(left));
        w->out_len = out.pos;
        if (w->out_len == w->out_cap || (end == ZSTD_e_end && left == 0)) {
            int rc = aw_emit(w);
            if (rc) return rc;
        }
        if (end == ZSTD_e_end ? left == 0 : in.pos == in.size) break;
    }
    w->raw += w->in_len;
    w->in_len = 0;
    return JVDB_OK;
}

/* Copies bytes into the 1 MiB input buffer, compressing each time it fills. */
static int aw_put(struct archive_writer *w, const void *p, size_t n)
{
    const char *src = p;
    while (n) {
        size_t take = ARC_BUF - w->in_len < n ? ARC_BUF - w->in_len : n;
        memcpy(w->in + w->in_len, src, take);
        w->in_len += take;
        src += take;
        n -= take;
        if (w->in_len == ARC_BUF) {
            int rc = aw_compress(w, ZSTD_e_continue);
            if (rc) return rc;
        }
    }
    return JVDB_OK;
}

void archive_writer_free(struct archive_writer *w)
{
    if (!w) return;
    ZSTD_freeCCtx(w->cctx);
    sha256_free(w->sha);
    if (w->xxh) XXH3_freeState(w->xxh);
    free(w->in);
    free(w->out);
    free(w);
}

int archive_writer_open(struct repo_stage *stage, const struct archive_header *h, int level, uint32_t threads,
                        const char *what, struct archive_writer **out)
{
    struct archive_writer *w = calloc(1, sizeof *w);
    if (!w) return err_set(JVDB_ENOMEM, "out of memory");
    w->stage = stage;
    w->what = what;
    w->out_cap = ZSTD_CStreamOutSize() * 8;
    w->in = malloc(ARC_BUF);
    w->out = malloc(w->out_cap);
    w->cctx = ZSTD_createCCtx();
    w->sha = sha256_new();
    w->xxh = XXH3_createState();
    if (!w->in || !w->out || !w->cctx || !w->sha || !w->xxh) {
        archive_writer_free(w);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    XXH3_64bits_reset(w->xxh);
    size_t e = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(e)) e = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(e) && threads) e = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_nbWorkers, (int)threads);
    if (!ZSTD_isError(e)) e = ZSTD_CCtx_setPledgedSrcSize(w->cctx, 128 + h->record_bytes);
    if (ZSTD_isError(e)) {
        archive_writer_free(w);
        return err_set(JVDB_EINVAL, "%s: zstd rejected level %d / %u threads: %s", what, level, threads,
                       ZSTD_getErrorName(e));
    }
    w->want_records = h->records;
    w->want_bytes = h->record_bytes;
    struct arc_header ah;
    memset(&ah, 0, sizeof ah);
    memcpy(ah.magic, ARC_MAGIC, 8);
    ah.version = ARC_VERSION;
    ah.dim = h->dim;
    ah.lsn_from = h->lsn_from;
    ah.lsn_to = h->lsn_to;
    ah.records = h->records;
    ah.record_bytes = h->record_bytes;
    ah.type = (uint8_t)h->type;
    ah.metric = (uint8_t)h->metric;
    ah.checksum = XXH3_64bits(&ah, offsetof(struct arc_header, checksum));
    int rc = aw_put(w, &ah, sizeof ah);
    if (rc) {
        archive_writer_free(w);
        return rc;
    }
    *out = w;
    return JVDB_OK;
}

void archive_writer_no_sha(struct archive_writer *w)
{
    sha256_free(w->sha);
    w->sha = NULL;
}

int archive_writer_add(struct archive_writer *w, const void *rec, uint32_t len)
{
    const struct rec_header *h = rec;
    XXH3_64bits_update(w->xxh, rec, len);
    w->records++;
    w->record_bytes += len;
    if (h->kind == REC_KIND_PUT) w->puts++;
    else w->deletes++;
    return aw_put(w, rec, len);
}

int archive_writer_finish(struct archive_writer *w, uint64_t *raw, uint64_t *stored, char sha[65])
{
    if (w->records != w->want_records || w->record_bytes != w->want_bytes)
        return err_set(JVDB_EIO, "%s: wrote %llu records (%llu bytes) but announced %llu (%llu bytes)", w->what,
                       (unsigned long long)w->records, (unsigned long long)w->record_bytes,
                       (unsigned long long)w->want_records, (unsigned long long)w->want_bytes);
    struct arc_trailer t;
    memset(&t, 0, sizeof t);
    memcpy(t.magic, ARC_END_MAGIC, 8);
    t.records = w->records;
    t.record_bytes = w->record_bytes;
    t.puts = w->puts;
    t.deletes = w->deletes;
    t.stream_xxh3 = XXH3_64bits_digest(w->xxh);
    t.checksum = XXH3_64bits(&t, offsetof(struct arc_trailer, checksum));
    int rc = aw_put(w, &t, sizeof t);
    if (!rc) rc = aw_compress(w, ZSTD_e_end);
    if (!rc) rc = aw_emit(w);
    if (rc) return rc;
    *raw = w->raw;
    *stored = w->stored;
    struct sha256_ctx *s = w->sha;
    w->sha = NULL;
    if (s) sha256_final_hex(s, sha);
    else sha[0] = '\0';
    return JVDB_OK;
}

/* ------------------------------------------------------------------ record contents */

/* The id as a message can show it: printable ASCII kept, anything else as \xNN, cut at 48 bytes. */
static void arc_id_show(const unsigned char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && i < 48 && o + 5 < cap; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' && s[i] != '"') out[o++] = (char)s[i];
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", s[i]);
    }
    if (n > 48 && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
    out[o] = '\0';
}

/* The checks of archive_check_record, each failure's message prefixed with `where`. */
static int arc_check_fields(const struct rec_header *h, uint32_t dim, jvdb_metric metric, const char *where)
{
    const char *id = rec_id(h, dim);
    int rc = rec_check_id(id, h->id_len, where);
    if (!rc && h->kind == REC_KIND_DELETE && h->meta_len)
        rc = err_set(JVDB_EINVAL, "%sa tombstone carries metadata", where);
    if (!rc && h->kind == REC_KIND_PUT) {
        /* Vectors are stored as given (older versions stored them normalised: both restore the same
         * way); put refuses the zero vector for cosine, and so does restore. */
        rc = rec_check_vector(rec_vector(h), dim, metric, NULL, where);
        if (!rc && h->meta_len) rc = rec_check_meta(rec_meta(h, dim), h->meta_len, where);
    }
    return rc;
}

int archive_check_record(const void *rec, uint32_t dim, jvdb_metric metric, const char *what, uint64_t recno)
{
    const struct rec_header *h = rec;
    /* The checks are pure: a valid record (nearly all) costs no message; a bad one is checked again
     * with the message naming it. */
    if (arc_check_fields(h, dim, metric, "") == JVDB_OK) return JVDB_OK;
    char shown[256], where[600];
    arc_id_show((const unsigned char *)rec_id(h, dim), h->id_len, shown, sizeof shown);
    snprintf(where, sizeof where, "%s: record %llu (LSN %llu, id \"%s\") is invalid: ", what, (unsigned long long)recno,
             (unsigned long long)h->lsn, shown);
    arc_check_fields(h, dim, metric, where);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", jvdb_errmsg());
    return err_set(JVDB_ECORRUPT, "%s", msg);
}

/* ------------------------------------------------------------------ reader */

struct arc_reader {
    const struct backup_meta *m;
    char what[160];
    char *wb; /* decompressed bytes not yet consumed */
    size_t wb_len, wb_cap;
    int stage; /* 0 header, 1 records, 2 trailer, 3 done */
    uint64_t records, record_bytes, puts, deletes, last_lsn;
    struct arc_header h;
    XXH3_state_t *xxh;
    archive_chunk_fn fn;
    void *arg;
};

/* Fails the read as ECORRUPT, naming the backup and data.jvb.zst; `fmt` takes `detail` as its one argument. */
static int ar_bad(struct arc_reader *r, const char *fmt, const char *detail)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, detail);
    if (r->m->type == ARCHIVE_TYPE_LOG) return err_set(JVDB_ECORRUPT, "%s is corrupt: %s", r->what, msg);
    return err_set(JVDB_ECORRUPT, "%s: %s is corrupt: %s", r->what, BACKUP_DATA_NAME, msg);
}

/* Consumes what it can of wb; leaves a partial record at the front. */
static int ar_consume(struct arc_reader *r)
{
    size_t pos = 0;
    int rc = JVDB_OK;
    if (r->stage == 0 && r->wb_len >= sizeof r->h) {
        memcpy(&r->h, r->wb, sizeof r->h);
        const struct backup_meta *m = r->m;
        if (memcmp(r->h.magic, ARC_MAGIC, 8)) return ar_bad(r, "%s", "not a jvdb backup archive (bad magic)");
        if (r->h.checksum != XXH3_64bits(&r->h, offsetof(struct arc_header, checksum)))
            return ar_bad(r, "%s", "header checksum mismatch");
        if (r->h.version != ARC_VERSION) return ar_bad(r, "%s", "unknown archive version");
        int log = m->type == ARCHIVE_TYPE_LOG;
        if (r->h.dim != m->dim || r->h.lsn_from != m->lsn_from || r->h.lsn_to != m->lsn_to ||
            r->h.type != (uint8_t)m->type || r->h.metric != (uint8_t)m->metric ||
            (!log && r->h.records != m->put_count + m->delete_count))
            return ar_bad(r, "%s",
                          log ? "header does not match the log object's name" : "header does not match backup.json");
        pos = sizeof r->h;
        r->stage = 1;
    }
    if (r->stage == 1) {
        size_t run = pos, nrun = 0;
        while (r->record_bytes < r->h.record_bytes) {
            const char *p = r->wb + pos;
            size_t avail = r->wb_len - pos;
            uint64_t left = r->h.record_bytes - r->record_bytes;
            const char *why = "cut short";
            if (avail >= REC_HEADER_SIZE) {
                const struct rec_header *rh = (const struct rec_header *)p;
                if (rh->total_len > left || rh->total_len > ARC_MAX_RECORD) {
                    char d[96];
                    snprintf(d, sizeof d, "record %llu is longer than the rest of the stream",
                             (unsigned long long)r->records + 1);
                    return ar_bad(r, "%s", d);
                }
            }
            enum rec_check c = rec_check(p, avail < left ? avail : (size_t)left, r->h.dim, &why);
            if (c == REC_SHORT) {
                if (avail >= left) why = "cut short";
                else break; /* need more bytes */
            }
            if (c != REC_OK) {
                char d[160];
                snprintf(d, sizeof d, "record %llu (at byte %llu of the stream): %s",
                         (unsigned long long)r->records + 1, (unsigned long long)(sizeof r->h + r->record_bytes), why);
                return ar_bad(r, "%s", d);
            }
            const struct rec_header *rh = (const struct rec_header *)p;
            if (rh->lsn <= r->h.lsn_from || rh->lsn > r->h.lsn_to || rh->lsn <= r->last_lsn) {
                char d[160];
                snprintf(d, sizeof d, "record %llu has LSN %llu outside (%llu, %llu] or out of order",
                         (unsigned long long)r->records + 1, (unsigned long long)rh->lsn,
                         (unsigned long long)r->h.lsn_from, (unsigned long long)r->h.lsn_to);
                return ar_bad(r, "%s", d);
            }
            if (rh->kind == REC_KIND_DELETE && r->m->type == JVDB_BACKUP_FULL)
                return ar_bad(r, "%s", "a full backup holds a tombstone");
            if ((rc = archive_check_record(rh, r->h.dim, r->m->metric, r->what, r->records + 1))) return rc;
            r->last_lsn = rh->lsn;
            if (rh->kind == REC_KIND_PUT) r->puts++;
            else r->deletes++;
            r->records++;
            r->record_bytes += rh->total_len;
            pos += rh->total_len;
            nrun++;
        }
        if (nrun) {
            XXH3_64bits_update(r->xxh, r->wb + run, pos - run);
            if (r->fn && (rc = r->fn(r->arg, r->wb + run, pos - run, nrun))) return rc;
        }
        if (r->record_bytes == r->h.record_bytes) r->stage = 2;
    }
    if (r->stage == 2 && r->wb_len - pos >= sizeof(struct arc_trailer)) {
        struct arc_trailer t;
        memcpy(&t, r->wb + pos, sizeof t);
        if (memcmp(t.magic, ARC_END_MAGIC, 8) || t.checksum != XXH3_64bits(&t, offsetof(struct arc_trailer, checksum)))
            return ar_bad(r, "%s", "bad trailer");
        if (t.records != r->records || t.record_bytes != r->record_bytes || t.puts != r->puts ||
            t.deletes != r->deletes || t.stream_xxh3 != XXH3_64bits_digest(r->xxh))
            return ar_bad(r, "%s", "trailer totals do not match the records");
        if (r->m->type != ARCHIVE_TYPE_LOG && (r->puts != r->m->put_count || r->deletes != r->m->delete_count))
            return ar_bad(r, "%s", "record counts do not match backup.json");
        pos += sizeof t;
        r->stage = 3;
    }
    if (r->stage == 3 && pos < r->wb_len) return ar_bad(r, "%s", "bytes after the trailer");
    memmove(r->wb, r->wb + pos, r->wb_len - pos);
    r->wb_len -= pos;
    return JVDB_OK;
}

/* Reading runs on two threads: a producer reads the stored bytes, hashes them (SHA-256) and
 * decompresses them into 1 MiB chunks; the caller's thread checks the records and hands them on.
 * A restore's writing thus overlaps the reading, decryption and decompression of what follows.
 * The chunks pass through a ring of ARC_PIPE_SLOTS; the producer stops at the first error, which
 * the caller reports only after every chunk before it (so errors come in stream order). */
#define ARC_PIPE_SLOTS 8

struct arc_pipe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf[ARC_PIPE_SLOTS];
    size_t len[ARC_PIPE_SLOTS];
    uint64_t at[ARC_PIPE_SLOTS]; /* stored bytes read when the chunk was made (progress) */
    size_t head, count;          /* the filled chunks, oldest at head */
    bool done, stop;             /* producer finished (or failed) / consumer gave up */
    int rc;                      /* the producer's error, with its message */
    char msg[1024];
    struct arc_reader *r; /* what and m only, for messages */
    struct repo_reader *rd;
    uint64_t stored;
    size_t zleft;
    char sha[65];
};

/* Producer: waits for a free slot; NULL when the consumer gave up. */
static char *ap_slot(struct arc_pipe *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->count == ARC_PIPE_SLOTS && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    char *b = p->stop ? NULL : p->buf[(p->head + p->count) % ARC_PIPE_SLOTS];
    pthread_mutex_unlock(&p->mu);
    return b;
}

/* Producer: hands the next slot, holding len decompressed bytes, to the consumer. */
static void ap_push(struct arc_pipe *p, size_t len)
{
    pthread_mutex_lock(&p->mu);
    size_t i = (p->head + p->count) % ARC_PIPE_SLOTS;
    p->len[i] = len;
    p->at[i] = p->stored;
    p->count++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Producer: one decompression step of `ib` into a free slot, pushed when it holds bytes. */
static int ap_step(struct arc_pipe *p, ZSTD_DCtx *d, ZSTD_inBuffer *ib, size_t *produced)
{
    char *b = ap_slot(p);
    if (!b) return JVDB_EBUSY; /* unseen: the consumer already has its error */
    ZSTD_outBuffer ob = { b, ARC_BUF, 0 };
    p->zleft = ZSTD_decompressStream(d, &ob, ib);
    if (ZSTD_isError(p->zleft)) return ar_bad(p->r, "zstd: %s", ZSTD_getErrorName(p->zleft));
    if (ob.pos) ap_push(p, ob.pos);
    *produced = ob.pos;
    return JVDB_OK;
}

/* The producer thread: read, hash, decompress, until the end, an error or the consumer stops. */
static void *ap_main(void *arg)
{
    struct arc_pipe *p = arg;
    char *in = malloc(ARC_BUF);
    ZSTD_DCtx *d = ZSTD_createDCtx();
    struct sha256_ctx *sha = sha256_new();
    int rc = in && d && sha ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
    p->zleft = 1; /* zstd's hint: 0 once a frame is complete */
    size_t produced;
    for (;;) {
        size_t got = 0;
        if (rc || (rc = p->rd->read(p->rd, in, ARC_BUF, &got)) || got == 0) break;
        p->stored += got;
        sha256_update(sha, in, got);
        ZSTD_inBuffer ib = { in, got, 0 };
        while (!rc && ib.pos < ib.size)
            rc = p->zleft == 0 ? ar_bad(p->r, "%s", "data after the end of the zstd frame")
                               : ap_step(p, d, &ib, &produced);
    }
    /* Drain what zstd still holds back (its output buffer may have been full). */
    while (!rc && p->zleft != 0) {
        ZSTD_inBuffer ib = { in, 0, 0 };
        if ((rc = ap_step(p, d, &ib, &produced)) || !produced) break;
    }
    if (!rc) sha256_final_hex(sha, p->sha);
    else sha256_free(sha);
    ZSTD_freeDCtx(d);
    free(in);
    pthread_mutex_lock(&p->mu);
    p->rc = rc;
    if (rc) snprintf(p->msg, sizeof p->msg, "%s", jvdb_errmsg());
    p->done = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Consumer: appends the oldest chunk to wb (growing it as a record needs), frees its slot and
 * consumes whole records; *at is the stored bytes behind it.  1 when the producer is finished and
 * every chunk was taken. */
static int ap_take(struct arc_pipe *p, struct arc_reader *r, uint64_t *at, int *rc)
{
    pthread_mutex_lock(&p->mu);
    while (p->count == 0 && !p->done) pthread_cond_wait(&p->cv, &p->mu);
    if (p->count == 0) {
        pthread_mutex_unlock(&p->mu);
        return 1;
    }
    size_t i = p->head, len = p->len[i];
    *at = p->at[i];
    pthread_mutex_unlock(&p->mu);
    if (r->wb_cap - r->wb_len < len) {
        /* Room for the largest record plus a chunk. */
        size_t ncap = r->wb_cap * 2;
        if (ncap > ARC_MAX_RECORD * 2 + (8u << 20)) {
            *rc = ar_bad(r, "%s", "a record larger than any database can hold");
            return 0;
        }
        char *nb = realloc(r->wb, ncap);
        if (!nb) {
            *rc = err_set(JVDB_ENOMEM, "out of memory");
            return 0;
        }
        r->wb = nb;
        r->wb_cap = ncap;
    }
    memcpy(r->wb + r->wb_len, p->buf[i], len);
    r->wb_len += len;
    pthread_mutex_lock(&p->mu);
    p->head = (p->head + 1) % ARC_PIPE_SLOTS;
    p->count--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    *rc = ar_consume(r);
    return 0;
}

int archive_read(struct repo_reader *rd, const struct backup_meta *m, archive_chunk_fn fn, void *arg,
                 const struct archive_progress *pr, struct archive_read_result *res)
{
    char what[160];
    snprintf(what, sizeof what, "backup %s of '%s'", m->id, m->database);
    return archive_read_as(rd, m, what, fn, arg, pr, res);
}

int archive_read_as(struct repo_reader *rd, const struct backup_meta *m, const char *what, archive_chunk_fn fn,
                    void *arg, const struct archive_progress *pr, struct archive_read_result *res)
{
    memset(res, 0, sizeof *res);
    struct arc_reader r;
    memset(&r, 0, sizeof r);
    r.m = m;
    r.fn = fn;
    r.arg = arg;
    int log = m->type == ARCHIVE_TYPE_LOG;
    snprintf(r.what, sizeof r.what, "%s", what);
    r.wb_cap = 4u << 20;
    r.wb = malloc(r.wb_cap);
    r.xxh = XXH3_createState();
    struct arc_pipe p;
    memset(&p, 0, sizeof p);
    p.r = &r;
    p.rd = rd;
    pthread_t thread;
    int rc = r.wb && r.xxh ? JVDB_OK : JVDB_ENOMEM;
    for (size_t i = 0; i < ARC_PIPE_SLOTS; i++)
        if (!(p.buf[i] = malloc(ARC_BUF))) rc = JVDB_ENOMEM;
    if (rc) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
        goto out;
    }
    XXH3_64bits_reset(r.xxh);
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    if (pthread_create(&thread, NULL, ap_main, &p) != 0) {
        rc = err_set(JVDB_ENOMEM, "cannot start a thread to read %s", r.what);
        goto out_sync;
    }
    uint64_t at = 0;
    while (!rc && !ap_take(&p, &r, &at, &rc))
        if (!rc && pr && pr->fn) pr->fn(pr->arg, pr->phase, pr->base + at, pr->total, pr->records + r.records);
    pthread_mutex_lock(&p.mu);
    p.stop = true; /* a consumer's error: the producer gives up at its next chunk */
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    pthread_join(thread, NULL);
    if (!rc && p.rc) rc = err_set(p.rc, "%s", p.msg);
    if (rc) goto out_sync;
    if (pr && pr->fn) pr->fn(pr->arg, pr->phase, pr->base + p.stored, pr->total, pr->records + r.records);
    snprintf(res->sha256, sizeof res->sha256, "%s", p.sha);
    res->stored_bytes = p.stored;
    if (m->sha256[0] && strcmp(res->sha256, m->sha256)) {
        rc = err_set(JVDB_ECORRUPT, "%s: %s SHA-256 mismatch (backup.json says %s, the data hashes to %s)", r.what,
                     BACKUP_DATA_NAME, m->sha256, res->sha256);
        goto out_sync;
    }
    if (!log && p.stored != m->stored_bytes) {
        char d2[96];
        snprintf(d2, sizeof d2, "%llu bytes where backup.json says %llu", (unsigned long long)p.stored,
                 (unsigned long long)m->stored_bytes);
        rc = ar_bad(&r, "%s", d2);
        goto out_sync;
    }
    if (p.zleft != 0 || r.stage != 3) {
        rc = ar_bad(&r, "%s", "the stream ends early (truncated archive)");
        goto out_sync;
    }
    res->raw_bytes = sizeof r.h + r.record_bytes + sizeof(struct arc_trailer);
    if (!log && res->raw_bytes != m->raw_bytes) {
        rc = ar_bad(&r, "%s", "raw size does not match backup.json");
        goto out_sync;
    }
    res->puts = r.puts;
    res->deletes = r.deletes;
out_sync:
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
out:
    for (size_t i = 0; i < ARC_PIPE_SLOTS; i++) free(p.buf[i]);
    if (r.xxh) XXH3_freeState(r.xxh);
    free(r.wb);
    return rc;
}

/* ------------------------------------------------------------------ memory reader */

struct mem_reader {
    struct repo_reader base;
    const char *p;
    size_t len, pos;
};

/* Hands out the next bytes of the buffer. */
static int mem_read(struct repo_reader *rr, void *buf, size_t cap, size_t *got)
{
    struct mem_reader *m = (struct mem_reader *)rr;
    size_t n = m->len - m->pos < cap ? m->len - m->pos : cap;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    *got = n;
    return JVDB_OK;
}

/* Frees the reader (never the bytes). */
static void mem_close(struct repo_reader *rr) { free(rr); }

struct repo_reader *repo_mem_reader(const void *buf, size_t len)
{
    struct mem_reader *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->base.read = mem_read;
    m->base.close = mem_close;
    m->p = buf;
    m->len = len;
    return &m->base;
}
