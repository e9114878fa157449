/*
 * fuzz_kdckpt.c — libFuzzer target for the keydir checkpoint reader (src/store/kdckpt.c):
 * kdckpt_read over the input, loading what it accepts into a real keydir over fake segments (the
 * loader computes record addresses and never reads them).  Checksums would stop most mutations at
 * the door, so every input is also tried re-signed: the header, the segment table, each block and
 * the trailer get correct XXH3 values wherever the input's own lengths place them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include "store/kdckpt.h"
#include "store/keydir.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_MAP (1u << 20)
static uint8_t fz_map[FZ_MAP];

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Rewrites every checksum where the input's own lengths place it. */
static void resign(uint8_t *b, size_t len)
{
    if (len < KDCKPT_HEADER_SIZE) return;
    put64(b + 56, XXH3_64bits(b, 56));
    uint64_t tlen = (uint64_t)get32(b + 32) * KDCKPT_SEG_SIZE;
    if (tlen + 8 > len - KDCKPT_HEADER_SIZE) return;
    put64(b + KDCKPT_HEADER_SIZE + tlen, XXH3_64bits(b + KDCKPT_HEADER_SIZE, (size_t)tlen));
    size_t off = KDCKPT_HEADER_SIZE + (size_t)tlen + 8;
    while (len - off >= KDCKPT_BLOCK_HEAD + 8) {
        if (!memcmp(b + off, KDCKPT_END_MAGIC, 8)) {
            put64(b + off + 16, XXH3_64bits(b + off, 16));
            return;
        }
        uint32_t bytes = get32(b + off + 8);
        if (bytes > len - off - KDCKPT_BLOCK_HEAD - 8) return;
        put64(b + off + KDCKPT_BLOCK_HEAD + bytes, XXH3_64bits(b + off, KDCKPT_BLOCK_HEAD + (size_t)bytes));
        off += KDCKPT_BLOCK_HEAD + (size_t)bytes + 8;
    }
}

struct fz {
    struct keydir kd;
    struct segment *segs;
    uint32_t nsegs;
};

/* Sink: fake segments over one small buffer, and a keydir sized as the header says. */
static int fz_begin(void *ctx, const struct kdckpt_header *h, const struct kdckpt_seg *segs)
{
    struct fz *f = ctx;
    if (h->nsegs > 1024 || h->nslots > (1u << 16)) return JVDB_EINVAL;
    for (uint32_t i = 0; i < h->nsegs; i++)
        if (segs[i].covered > FZ_MAP) return JVDB_EINVAL;
    f->segs = calloc(h->nsegs, sizeof *f->segs);
    if (!f->segs) abort();
    f->nsegs = h->nsegs;
    for (uint32_t i = 0; i < h->nsegs; i++) f->segs[i].map = fz_map;
    return keydir_load_begin(&f->kd, h->entries, h->nslots, h->file_bytes + h->entries * 24, h->file_bytes);
}

/* Sink: one entry into the keydir. */
static int fz_entry(void *ctx, const struct kdckpt_entry *e)
{
    struct fz *f = ctx;
    return keydir_load_entry(&f->kd, &f->segs[e->seg], e->offset, e->id, e->id_len, e->hash, e->lsn, e->kind,
                             e->rec_len, e->slot, e->img);
}

/* Sink: a current-format block goes to the keydir's arena, its entries built in place. */
static void *fz_block(void *ctx, size_t bytes)
{
    struct fz *f = ctx;
    return keydir_load_block(&f->kd, bytes);
}

/* Reads b through a memory file into a fresh keydir, then checks what was loaded is findable. */
static void exercise(const uint8_t *b, size_t len)
{
    int fd = memfd_create("kdckpt", 0);
    if (fd < 0) abort();
    if (len && write(fd, b, len) != (ssize_t)len) abort();
    lseek(fd, 0, SEEK_SET);
    uint32_t dim = len >= 16 ? get32(b + 12) : 4;
    if (dim == 0 || dim > 4096) dim = 4;
    struct fz f = { 0 };
    if (keydir_init(&f.kd, NULL)) abort();
    struct kdckpt_sink sink = { &f, fz_begin, fz_entry, NULL, fz_block };
    if (kdckpt_read(fd, dim, &sink) == JVDB_OK && keydir_load_end(&f.kd) == JVDB_OK) {
        const struct kd_table *t = f.kd.table;
        for (size_t i = 0; i < t->cap; i++) {
            const struct kd_entry *e = keydir_bucket(t, i);
            if (e && e != KD_DEAD && keydir_find(&f.kd, e->id, e->id_len) != e) abort();
        }
    }
    keydir_free(&f.kd);
    free(f.segs);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    exercise(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    resign(copy, size);
    exercise(copy, size);
    free(copy);
    return 0;
}
