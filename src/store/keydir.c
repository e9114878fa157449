/*
 * keydir.c — the in-memory index from vector id to its newest record (DESIGN.md 4, "Keydir").
 *
 * An open-addressing hash table of entry pointers (linear probing, backward-shift deletion) and a
 * slot table that packs the live vectors' pointers densely so that a search scans an array instead
 * of chasing the hash table.  Slots are stable while a vector lives (the HNSW index refers to them)
 * and are reused after deletion.  It is rebuilt at open by applying every record; "newest LSN wins"
 * makes the result independent of application order, which is what makes compaction's duplicate
 * copies and recovery after a crash harmless.
 *
 * Accounting: each segment knows how many of its records and bytes the keydir points at as live
 * puts; everything else in the file is dead, which is what compaction reclaims.
 */
#include "store/keydir.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int keydir_init(struct keydir *kd)
{
    memset(kd, 0, sizeof *kd);
    kd->cap = 1024;
    kd->table = calloc(kd->cap, sizeof *kd->table);
    if (!kd->table) return err_set(JVDB_ENOMEM, "out of memory");
    return JVDB_OK;
}

void keydir_free(struct keydir *kd)
{
    if (kd->table)
        for (size_t i = 0; i < kd->cap; i++) free(kd->table[i].e);
    free(kd->table);
    free(kd->slot_vec);
    free(kd->slot_owner);
    free(kd->free_slots);
    memset(kd, 0, sizeof *kd);
}

static uint64_t kd_hash(const char *id, size_t len) { return XXH3_64bits(id, len); }

static size_t kd_probe(const struct keydir *kd, const char *id, size_t id_len, uint64_t hash)
{
    size_t mask = kd->cap - 1;
    size_t i = (size_t)hash & mask;
    for (;;) {
        const struct kd_bucket *b = &kd->table[i];
        if (!b->e || (b->hash == hash && b->e->id_len == id_len && memcmp(b->e->id, id, id_len) == 0)) return i;
        i = (i + 1) & mask;
    }
}

struct kd_entry *keydir_find(const struct keydir *kd, const char *id, size_t id_len)
{
    return kd->table[kd_probe(kd, id, id_len, kd_hash(id, id_len))].e;
}

static int kd_grow(struct keydir *kd)
{
    size_t ncap = kd->cap * 2;
    struct kd_bucket *nt = calloc(ncap, sizeof *nt);
    if (!nt) return err_set(JVDB_ENOMEM, "out of memory growing the keydir");
    for (size_t i = 0; i < kd->cap; i++) {
        if (!kd->table[i].e) continue;
        size_t j = (size_t)kd->table[i].hash & (ncap - 1);
        while (nt[j].e) j = (j + 1) & (ncap - 1);
        nt[j] = kd->table[i];
    }
    free(kd->table);
    kd->table = nt;
    kd->cap = ncap;
    return JVDB_OK;
}

static int kd_slot_alloc(struct keydir *kd, uint32_t *slot)
{
    if (kd->nfree) {
        *slot = kd->free_slots[--kd->nfree];
        return JVDB_OK;
    }
    if (kd->nslots == kd->slot_cap) {
        uint32_t ncap = kd->slot_cap ? kd->slot_cap * 2 : 1024;
        const float **nv = realloc(kd->slot_vec, ncap * sizeof *nv);
        if (!nv) return err_set(JVDB_ENOMEM, "out of memory growing the slot table");
        kd->slot_vec = nv;
        struct kd_entry **no = realloc(kd->slot_owner, ncap * sizeof *no);
        if (!no) return err_set(JVDB_ENOMEM, "out of memory growing the slot table");
        kd->slot_owner = no;
        kd->slot_cap = ncap;
    }
    *slot = kd->nslots++;
    return JVDB_OK;
}

static int kd_slot_release(struct keydir *kd, uint32_t slot)
{
    if (kd->nfree == kd->free_cap) {
        uint32_t ncap = kd->free_cap ? kd->free_cap * 2 : 256;
        uint32_t *nf = realloc(kd->free_slots, ncap * sizeof *nf);
        if (!nf) return err_set(JVDB_ENOMEM, "out of memory");
        kd->free_slots = nf;
        kd->free_cap = ncap;
    }
    kd->slot_vec[slot] = NULL;
    kd->slot_owner[slot] = NULL;
    kd->free_slots[kd->nfree++] = slot;
    if (kd->hook) kd->hook(kd->hook_ctx, slot, 0);
    return JVDB_OK;
}

/* Stops counting the entry's current record as live in its segment. */
static void kd_unaccount(struct keydir *kd, struct kd_entry *e)
{
    if (e->kind == REC_KIND_PUT) {
        e->seg->live_records--;
        e->seg->live_bytes -= e->rec_len;
        kd->live--;
    } else {
        kd->tombstones--;
    }
}

static void kd_account(struct keydir *kd, struct kd_entry *e)
{
    if (e->kind == REC_KIND_PUT) {
        e->seg->live_records++;
        e->seg->live_bytes += e->rec_len;
        kd->live++;
    } else {
        kd->tombstones++;
    }
}

int keydir_apply(struct keydir *kd, struct segment *seg, uint64_t offset, uint32_t dim)
{
    return keydir_apply_copy(kd, seg, offset, (const struct rec_header *)(seg->map + offset), dim);
}

int keydir_apply_copy(struct keydir *kd, struct segment *seg, uint64_t offset, const struct rec_header *h, uint32_t dim)
{
    const char *id = rec_id(h, dim);
    seg->records++;
    if (seg->min_lsn == 0 || h->lsn < seg->min_lsn) seg->min_lsn = h->lsn;
    if (h->lsn > seg->max_lsn) seg->max_lsn = h->lsn;
    if ((kd->count + 1) * 10 > kd->cap * 7 && kd_grow(kd)) return JVDB_ENOMEM;
    uint64_t hash = kd_hash(id, h->id_len);
    size_t pos = kd_probe(kd, id, h->id_len, hash);
    struct kd_entry *e = kd->table[pos].e;
    if (e && e->lsn >= h->lsn) return JVDB_OK;   /* an equal or newer version is already known */
    if (!e) {
        e = malloc(sizeof *e + h->id_len);
        if (!e) return err_set(JVDB_ENOMEM, "out of memory");
        memcpy(e->id, id, h->id_len);
        e->id_len = h->id_len;
        e->slot = KD_NO_SLOT;
        e->hits = 0;
        e->kind = 0;
        kd->table[pos] = (struct kd_bucket){hash, e};
        kd->count++;
    } else {
        kd_unaccount(kd, e);
    }
    e->seg = seg;
    e->offset = offset;
    e->lsn = h->lsn;
    e->rec_len = h->total_len;
    e->kind = h->kind;
    kd_account(kd, e);
    if (h->kind == REC_KIND_PUT) {
        if (e->slot == KD_NO_SLOT && kd_slot_alloc(kd, &e->slot)) return JVDB_ENOMEM;
        kd->slot_vec[e->slot] = (const float *)(seg->map + offset + REC_HEADER_SIZE);
        kd->slot_owner[e->slot] = e;
        if (kd->hook) kd->hook(kd->hook_ctx, e->slot, 1);
    } else if (e->slot != KD_NO_SLOT) {
        uint32_t slot = e->slot;
        e->slot = KD_NO_SLOT;
        if (kd_slot_release(kd, slot)) return JVDB_ENOMEM;
    }
    return JVDB_OK;
}

void keydir_move(struct keydir *kd, struct kd_entry *e, struct segment *seg, uint64_t offset, uint32_t dim)
{
    (void)dim;
    kd_unaccount(kd, e);
    e->seg = seg;
    e->offset = offset;
    kd_account(kd, e);
    if (e->slot != KD_NO_SLOT) kd->slot_vec[e->slot] = rec_vector(keydir_record(e));
}

void keydir_remove(struct keydir *kd, struct kd_entry *e)
{
    size_t mask = kd->cap - 1;
    size_t i = kd_probe(kd, e->id, e->id_len, kd_hash(e->id, e->id_len));
    if (kd->table[i].e != e) return;
    kd_unaccount(kd, e);
    if (e->slot != KD_NO_SLOT) kd_slot_release(kd, e->slot);
    free(e);
    kd->table[i].e = NULL;
    kd->count--;
    /* Backward-shift deletion keeps every probe chain unbroken without tombstone markers. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!kd->table[j].e) break;
        size_t home = (size_t)kd->table[j].hash & mask;
        /* The entry at j may move to the hole at i if its home is not in the cyclic range (i, j]. */
        int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            kd->table[i] = kd->table[j];
            kd->table[j].e = NULL;
            i = j;
        }
    }
}
