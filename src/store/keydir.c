/*
 * keydir.c — the in-memory index from vector id to its newest record (docs/ARCHITECTURE.md 4 and 6), read
 * without locks (store/readpath.c has the design notes).
 *
 * An open-addressing hash table of entry pointers, each in one word with 16 bits of its id's hash
 * (linear probing; removed entries leave a KD_DEAD marker so that a reader probing concurrently
 * never loses the chain, and growing drops them; keydir.h has the word's layout) and
 * a slot table that packs the live vectors' pointers densely so that a search scans an array
 * instead of chasing the hash table.  Slots are stable while a vector lives (the HNSW index refers
 * to them) and are reused after deletion, once no reader can still look for the deleted vector.
 * It is rebuilt at open by applying every record; "newest LSN wins" makes the result independent
 * of application order, which is what makes compaction's duplicate copies and recovery after a
 * crash harmless.
 *
 * Versions.  An entry is immutable once published (but for `rec`, which compaction repoints to an
 * identical copy, and `prev`, which trimming cuts).  A write publishes a new entry whose prev is
 * the one it supersedes; a reader at snapshot S walks prev to the newest version with LSN <= S.
 * The superseded version stays linked until `visible` has passed its successor and a grace period
 * has gone by (so no reader can still have S below it): then prev is cut, and after one more grace
 * period the old version is freed.  A deleted vector keeps its slot (owned by the tombstone) until
 * then, so that a scan at an older snapshot still finds it.
 *
 * Memory.  Entries a write makes are malloc'd one by one and freed after their grace period.  The
 * entries a checkpoint load makes (millions at once) live in one arena mapping instead, read there
 * straight from the file (store/kdckpt.c): no allocation, copy or free per entry.  An arena entry
 * is never freed on its own: superseded or dropped, it stays readable until keydir_free unmaps the
 * arena, so the lock-free reader rule (nothing a reader can reach is freed before it leaves) holds
 * trivially for it; the waste is bounded by the checkpoint a session loaded.  While a big load
 * runs, a helper thread faults in the fresh pages it is about to write (the kernel clears each one
 * on its first write: half of the load's time on a VM), so that the clearing runs beside it, and
 * another fills the hash table from the entries the loading thread builds (a pipeline: below).
 *
 * Accounting: each segment knows how many of its records and bytes the keydir points at as live
 * puts (newest versions only); everything else in the file is dead, which is what compaction
 * reclaims.
 */
#include "store/keydir.h"

#include "core/grow.h"
#include "core/err.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

#define LD(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define SUB(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)

/* Asks for transparent huge pages on a big table: its accesses are random, and with 4 KiB pages
 * nearly each one costs a TLB miss (and, the first time, a page fault). */
static void kd_huge(void *p, size_t len)
{
    if (len < (8u << 20)) return;
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, e = ((uintptr_t)p + len) & ~(uintptr_t)4095;
    if (e > a) madvise((void *)a, e - a, MADV_HUGEPAGE); /* a hint: failure changes nothing */
}

/* A zeroed hash table of `cap` buckets (a power of two), on huge pages when large. */
static struct kd_table *kd_table_new(size_t cap)
{
    struct kd_table *t = calloc(1, sizeof *t + cap * sizeof t->b[0]);
    if (t) {
        t->cap = cap;
        kd_huge(t, sizeof *t + cap * sizeof t->b[0]);
    }
    return t;
}

/* A zeroed slot table of `cap` slots: its lsn, vec and owner arrays in one allocation after the header. */
static struct kd_slots *kd_slots_new(uint32_t cap)
{
    struct kd_slots *s = calloc(1, sizeof *s + (size_t)cap * (sizeof(float *) + sizeof(uint64_t) + sizeof(void *)));
    if (!s) return NULL;
    kd_huge(s, sizeof *s + (size_t)cap * (sizeof(float *) + sizeof(uint64_t) + sizeof(void *)));
    s->cap = cap;
    s->lsn = (uint64_t *)(s + 1);
    s->vec = (const float **)(s->lsn + cap);
    s->owner = (struct kd_entry **)(s->vec + cap);
    return s;
}

/* Below this many bytes of fresh memory a load faults its pages in itself (debug builds always
 * start the thread, so that the sanitizer runs of the small test databases cover it). */
#ifdef NDEBUG
#define KD_PREFAULT_MIN (32u << 20)
#else
#define KD_PREFAULT_MIN 1u
#endif

struct kd_prefault {
    pthread_t thread;
    struct {
        void *p;
        size_t len;
    } r[5];
};

/* Faults in [p, p + len) of a load's fresh memory (zeroed pages, as a first write would get them). */
static void kd_populate(void *p, size_t len)
{
#ifdef MADV_POPULATE_WRITE
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, e = (uintptr_t)p + len;
    /* In steps, so that the loader, touching a page first, never waits long on a whole region. */
    for (uintptr_t c = a; c < e; c += 4u << 20)
        madvise((void *)c, e - c < (4u << 20) ? e - c : (4u << 20), MADV_POPULATE_WRITE); /* a hint */
#else
    (void)p, (void)len;
#endif
}

/* Thread: faults in the regions a load is about to write, so that the kernel's page clearing runs
 * beside the load instead of inside it.  The hash table (written at random) first, whole; then the
 * slot arrays and the arena, which a checkpoint in slot order fills front to back side by side, in
 * matching slices, so that the helper stays ahead of the loader in each. */
static void *kd_prefault_main(void *arg)
{
    struct kd_prefault *pf = arg;
    kd_populate(pf->r[0].p, pf->r[0].len);
    enum { SLICES = 64 };
    for (size_t k = 0; k < SLICES; k++)
        for (int i = 1; i < 5; i++) {
            size_t from = pf->r[i].len / SLICES * k,
                   to = k + 1 == SLICES ? pf->r[i].len : pf->r[i].len / SLICES * (k + 1);
            kd_populate((char *)pf->r[i].p + from, to - from);
        }
    return NULL;
}

/* Waits for the prefault thread, if any. */
static void kd_prefault_join(struct keydir *kd)
{
    if (!kd->prefault) return;
    pthread_join(kd->prefault->thread, NULL);
    free(kd->prefault);
    kd->prefault = NULL;
}

int keydir_init(struct keydir *kd, struct rp_domain *gc)
{
    memset(kd, 0, sizeof *kd);
    kd->gc = gc;
    kd->table = kd_table_new(1024);
    kd->slots = kd_slots_new(1024);
    if (!kd->table || !kd->slots) {
        free(kd->table);
        free(kd->slots);
        kd->table = NULL;
        kd->slots = NULL;
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    return JVDB_OK;
}

/* A new entry of the heap (counted: keydir_free walks the table only when there are any). */
static struct kd_entry *kd_entry_new(struct keydir *kd, size_t id_len)
{
    struct kd_entry *n = malloc(sizeof *n + id_len);
    if (n && ((uintptr_t)n + sizeof *n + id_len) >> KD_TAG_SHIFT) { /* a bucket word cannot name it */
        free(n);
        n = NULL;
    }
    if (n) {
        n->flags = 0;
        ADD(&kd->nheap, 1);
    }
    return n;
}

/* Frees an entry no reader can reach any more (an arena entry's bytes go with the arena). */
static void kd_entry_free(struct keydir *kd, struct kd_entry *e)
{
    if (e->flags & KD_E_ARENA) return;
    SUB(&kd->nheap, 1);
    free(e);
}

/* Deferred: frees a heap entry once no reader can reach it. */
static void kd_entry_free_cb(void *ctx, void *arg) { kd_entry_free(ctx, arg); }

/* Frees an entry and every older version still linked behind it. */
static void kd_free_chain(struct keydir *kd, struct kd_entry *e)
{
    while (e) {
        struct kd_entry *p = e->prev;
        kd_entry_free(kd, e);
        e = p;
    }
}

static int kd_inserter_join(struct keydir *kd, int report);

void keydir_free(struct keydir *kd)
{
    kd_inserter_join(kd, 0); /* an abandoned load: what it had not inserted it frees */
    kd_prefault_join(kd);
    /* After a checkpoint load every entry may be in the arena: then there is nothing to walk. */
    if (kd->table)
        for (size_t i = 0; i < kd->table->cap && __atomic_load_n(&kd->nheap, __ATOMIC_ACQUIRE); i++)
            if (kd->table->b[i].w > (uintptr_t)KD_DEAD) kd_free_chain(kd, kd_word_entry(kd->table->b[i].w));
    free(kd->table);
    free(kd->slots);
    free(kd->free_slots);
    free(kd->trims);
    if (kd->arena) munmap(kd->arena, kd->arena_len);
    memset(kd, 0, sizeof *kd);
}

/* Unpublished memory: freed at once while there can be no reader (loading), else after a grace period. */
static void kd_retire(struct keydir *kd, void *p)
{
    if (!kd->history || !kd->gc) free(p);
    else rp_defer(kd->gc, rp_free_fn, NULL, p);
}

/* An entry nothing published points at any more: kd_retire unless it lives in the arena. */
static void kd_retire_entry(struct keydir *kd, struct kd_entry *e)
{
    if (e->flags & KD_E_ARENA) return;
    if (!kd->history || !kd->gc) kd_entry_free(kd, e);
    else rp_defer(kd->gc, kd_entry_free_cb, kd, e);
}

static uint64_t kd_hash(const char *id, size_t len) { return XXH3_64bits(id, len); }

/* Match: bucket word w holds a live entry (not KD_DEAD) whose hash tag, id length and id bytes are
 * those sought; comparing the tag first spares nearly every visit to another id's entry. */
static int kd_same(uintptr_t w, uint64_t hash, const char *id, size_t id_len)
{
    const struct kd_entry *e = kd_word_entry(w);
    return e != KD_DEAD && (w & ~KD_ADDR_MASK) == KD_TAG(hash) && e->id_len == id_len && memcmp(e->id, id, id_len) == 0;
}

uint64_t keydir_hash(const char *id, size_t id_len) { return kd_hash(id, id_len); }

void keydir_prefetch(const struct keydir *kd, uint64_t hash, int entry)
{
    const struct kd_table *t = LD(&kd->table);
    const struct kd_bucket *b = &t->b[(size_t)hash & (t->cap - 1)];
    if (!entry) {
        __builtin_prefetch(b);
        return;
    }
    uintptr_t w = LD(&b->w);
    if (w > (uintptr_t)KD_DEAD && (w & ~KD_ADDR_MASK) == KD_TAG(hash)) __builtin_prefetch(kd_word_entry(w));
}

struct kd_entry *keydir_find(const struct keydir *kd, const char *id, size_t id_len)
{
    return keydir_find_hashed(kd, id, id_len, kd_hash(id, id_len));
}

struct kd_entry *keydir_find_hashed(const struct keydir *kd, const char *id, size_t id_len, uint64_t hash)
{
    const struct kd_table *t = LD(&kd->table);
    size_t mask = t->cap - 1;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        uintptr_t w = LD(&t->b[i].w);
        if (!w) return NULL;
        if (kd_same(w, hash, id, id_len)) return kd_word_entry(w);
    }
}

const struct kd_entry *keydir_visible(const struct kd_entry *e, uint64_t snap)
{
    while (e && e->lsn > snap) e = LD(&e->prev);
    return e;
}

const float *keydir_slot_vector(const struct kd_slots *sl, uint32_t s, uint64_t snap, uint32_t dim,
                                const struct kd_entry **owner)
{
    (void)dim;
    const float *v = LD(&sl->vec[s]);
    if (LD(&sl->lsn[s]) <= snap) {
        if (owner) *owner = v ? keydir_visible(LD(&sl->owner[s]), snap) : NULL;
        if (owner && v && (!*owner || (*owner)->kind != REC_KIND_PUT)) return NULL;
        return v;
    }
    /* Changed after the snapshot: the version the snapshot saw, if it saw one. */
    const struct kd_entry *e = keydir_visible(LD(&sl->owner[s]), snap);
    if (!e || e->kind != REC_KIND_PUT) return NULL;
    if (owner) *owner = e;
    return rec_vector(keydir_record(e));
}

/* Writer probe: the bucket of `id`, or where to insert it (the first KD_DEAD on the way, else the
 * empty bucket ending the chain); *found says which. */
static size_t kd_probe(const struct kd_table *t, const char *id, size_t id_len, uint64_t hash, int *found)
{
    size_t mask = t->cap - 1, dead = SIZE_MAX;
    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        uintptr_t w = t->b[i].w;
        if (!w) {
            *found = 0;
            return dead != SIZE_MAX ? dead : i;
        }
        if (kd_word_entry(w) == KD_DEAD) {
            if (dead == SIZE_MAX) dead = i;
            continue;
        }
        if (kd_same(w, hash, id, id_len)) {
            *found = 1;
            return i;
        }
    }
}

/* Rebuilds the hash table without its KD_DEAD markers, twice as large when entries fill half of it; readers
 * switch to the new table when it is published, and the old one is freed after a grace period. */
static int kd_grow(struct keydir *kd)
{
    struct kd_table *old = kd->table;
    /* Only entries count: a table full of KD_DEAD markers is rebuilt at the same size. */
    size_t ncap = (kd->count + 1) * 10 > old->cap * 5 ? old->cap * 2 : old->cap;
    struct kd_table *nt = kd_table_new(ncap);
    if (!nt) return err_set(JVDB_ENOMEM, "out of memory growing the keydir");
    /* Buckets keep only 16 bits of each hash: the rest is computed again from the ids (entries
     * prefetched a few buckets ahead, as each is a cache miss). */
    for (size_t i = 0; i < old->cap; i++) {
        if (i + 8 < old->cap && old->b[i + 8].w > (uintptr_t)KD_DEAD)
            __builtin_prefetch(kd_word_entry(old->b[i + 8].w));
        uintptr_t w = old->b[i].w;
        if (w <= (uintptr_t)KD_DEAD) continue;
        const struct kd_entry *e = kd_word_entry(w);
        size_t j = (size_t)kd_hash(e->id, e->id_len) & (ncap - 1);
        while (nt->b[j].w) j = (j + 1) & (ncap - 1);
        nt->b[j].w = w;
    }
    ST(&kd->table, nt);
    kd->used = kd->count;
    kd_retire(kd, old);
    return JVDB_OK;
}

/* A slot for a new live vector: a recycled one, else the next at the end, doubling the slot table (copied,
 * published, the old one retired) when it is full. */
static int kd_slot_alloc(struct keydir *kd, uint32_t *slot)
{
    if (kd->nfree) {
        *slot = kd->free_slots[--kd->nfree];
        return JVDB_OK;
    }
    struct kd_slots *sl = kd->slots;
    if (kd->nslots == sl->cap) {
        struct kd_slots *n = kd_slots_new(sl->cap * 2);
        if (!n) return err_set(JVDB_ENOMEM, "out of memory growing the slot table");
        memcpy(n->lsn, sl->lsn, sl->cap * sizeof *n->lsn);
        /* vec[] one by one with atomic loads: compaction repoints entries without write_mu (and
         * checks afterwards under it whether the table it changed is still the current one). */
        for (uint32_t i = 0; i < sl->cap; i++) n->vec[i] = LD(&sl->vec[i]);
        memcpy(n->owner, sl->owner, sl->cap * sizeof *n->owner);
        ST(&kd->slots, n);
        kd_retire(kd, sl);
    }
    *slot = kd->nslots;
    ST(&kd->nslots, kd->nslots + 1);
    return JVDB_OK;
}

/* Publishes what slot s holds: the LSN first, so a reader that sees the new vector sees it too. */
static void kd_slot_set(struct keydir *kd, uint32_t s, uint64_t lsn, struct kd_entry *owner, const float *vec)
{
    struct kd_slots *sl = kd->slots;
    ST(&sl->lsn[s], lsn);
    ST(&sl->owner[s], owner);
    ST(&sl->vec[s], vec);
}

/* Clears a vector slot and puts it on the free list for reuse. */
static int kd_slot_release(struct keydir *kd, uint32_t slot)
{
    uint32_t *nf = grow_array32(kd->free_slots, &kd->free_cap, (size_t)kd->nfree + 1, sizeof *nf, 256);
    if (!nf) return err_set(JVDB_ENOMEM, "out of memory");
    kd->free_slots = nf;
    kd_slot_set(kd, slot, 0, NULL, NULL);
    kd->free_slots[kd->nfree++] = slot;
    return JVDB_OK;
}

/* Stops counting the entry's current record as live in its segment.  A put's segment is taken
 * with an exchange: compaction moves it (and the count) to the output with a compare-and-swap,
 * without write_mu, so exactly one of the two moves the count. */
static void kd_unaccount(struct keydir *kd, struct kd_entry *e)
{
    if (e->kind == REC_KIND_PUT) {
        struct segment *seg = __atomic_exchange_n(&e->seg, NULL, __ATOMIC_ACQ_REL);
        if (seg) {
            SUB(&seg->live_records, 1);
            SUB(&seg->live_bytes, e->rec_len);
        }
        SUB(&kd->live, 1);
    } else {
        SUB(&kd->tombstones, 1);
    }
}

/* Counts a newly published version: a put as live (in its segment's records and bytes, and the keydir's),
 * a delete as a tombstone. */
static void kd_account(struct keydir *kd, struct kd_entry *e)
{
    if (e->kind == REC_KIND_PUT) {
        ADD(&e->seg->live_records, 1);
        ADD(&e->seg->live_bytes, e->rec_len);
        ADD(&kd->live, 1);
    } else {
        ADD(&kd->tombstones, 1);
    }
}

/* Queues an entry whose older versions are to be trimmed once no reader needs them. */
static int kd_trim_push(struct keydir *kd, struct kd_entry *e)
{
    if (kd->trim_head + kd->trim_n == kd->trim_cap) {
        if (kd->trim_head > kd->trim_cap / 2) {
            memmove(kd->trims, kd->trims + kd->trim_head, kd->trim_n * sizeof *kd->trims);
            kd->trim_head = 0;
        } else {
            struct kd_entry **n = grow_array(kd->trims, &kd->trim_cap, kd->trim_cap + 1, sizeof *n, 1024);
            if (!n) return err_set(JVDB_ENOMEM, "out of memory");
            kd->trims = n;
        }
    }
    kd->trims[kd->trim_head + kd->trim_n++] = e;
    return JVDB_OK;
}

int keydir_apply(struct keydir *kd, struct segment *seg, uint64_t offset, uint32_t dim)
{
    return keydir_apply_copy(kd, seg, offset, (const struct rec_header *)(seg->map + offset), dim);
}

int keydir_apply_copy(struct keydir *kd, struct segment *seg, uint64_t offset, const struct rec_header *h, uint32_t dim)
{
    const char *id = rec_id(h, dim);
    ADD(&seg->records, 1);
    uint64_t mn = __atomic_load_n(&seg->min_lsn, __ATOMIC_RELAXED);
    if (mn == 0 || h->lsn < mn) __atomic_store_n(&seg->min_lsn, h->lsn, __ATOMIC_RELAXED);
    if (h->lsn > __atomic_load_n(&seg->max_lsn, __ATOMIC_RELAXED))
        __atomic_store_n(&seg->max_lsn, h->lsn, __ATOMIC_RELAXED);
    if ((kd->used + 1) * 10 > kd->table->cap * 7 && kd_grow(kd)) return JVDB_ENOMEM;
    struct kd_table *t = kd->table;
    uint64_t hash = kd_hash(id, h->id_len);
    int found;
    size_t pos = kd_probe(t, id, h->id_len, hash, &found);
    struct kd_entry *e = found ? kd_word_entry(t->b[pos].w) : NULL;
    if (e && e->lsn >= h->lsn) return JVDB_OK; /* an equal or newer version is already known */
    struct kd_entry *n = kd_entry_new(kd, h->id_len);
    if (!n) return err_set(JVDB_ENOMEM, "out of memory");
    if (e && kd->history && kd_trim_push(kd, n)) {
        kd_entry_free(kd, n);
        return JVDB_ENOMEM;
    }
    memcpy(n->id, id, h->id_len);
    n->id_len = h->id_len;
    n->rec = seg->map + offset;
    n->prev = kd->history ? e : NULL;
    n->seg = seg;
    n->lsn = h->lsn;
    n->rec_len = h->total_len;
    n->kind = h->kind;
    n->hits = e ? __atomic_load_n(&e->hits, __ATOMIC_RELAXED) : 0;
    n->slot = e ? e->slot : KD_NO_SLOT;
    if (e) kd_unaccount(kd, e);
    kd_account(kd, n);
    int rc = JVDB_OK;
    if (h->kind == REC_KIND_PUT) {
        if (n->slot == KD_NO_SLOT) rc = kd_slot_alloc(kd, &n->slot);
        if (rc == JVDB_OK) {
            kd_slot_set(kd, n->slot, n->lsn, n, (const float *)(seg->map + offset + REC_HEADER_SIZE));
            if (kd->hook) kd->hook(kd->hook_ctx, n->slot, 1);
        }
    } else if (n->slot != KD_NO_SLOT) {
        uint32_t slot = n->slot;
        if (kd->history) {
            /* The tombstone keeps the slot until no reader can look for the vector (kd_trim_cb). */
            kd_slot_set(kd, slot, n->lsn, n, NULL);
        } else {
            n->slot = KD_NO_SLOT;
            rc = kd_slot_release(kd, slot);
        }
        if (kd->hook) kd->hook(kd->hook_ctx, slot, 0);
    }
    /* Published even after a failure above: the bucket must name the entry the accounting counts. */
    if (!e && t->b[pos].w == 0) kd->used++;
    ST(&t->b[pos].w, KD_WORD(n, hash));
    if (e) {
        if (!kd->history) kd_entry_free(kd, e);
    } else {
        kd->count++;
    }
    return rc;
}

/* A big load is a pipeline over both cores: the loading thread reads, checks and builds entries
 * and fills the slot arrays; an inserter thread puts them into the hash table (a random write
 * per entry, a third of the work), batch by batch.  Only the inserter touches the table, kd->used
 * and kd->count until keydir_load_end joins it; the batches are handed over under a mutex. */
#ifdef NDEBUG
#define KD_INSERTER_MIN 200000u /* entries; below it the loader inserts itself */
#else
#define KD_INSERTER_MIN 1u
#endif
#define KD_INS_QUEUE 16u
#define KD_INS_BATCH 4096u /* 64 KiB: below malloc's mmap threshold, so batches reuse the same memory */

struct kd_ins_batch {
    struct kd_ins_batch *next;
    size_t n;
    struct {
        struct kd_entry *e;
        uint64_t hash;
    } it[KD_INS_BATCH];
};

struct kd_inserter {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_cond_t room;              /* signalled when a batch leaves the queue */
    struct kd_ins_batch *head, *tail; /* mu: handed over, not inserted yet */
    size_t queued;                    /* mu: batches in the queue (at most KD_INS_QUEUE: bounded memory) */
    bool done;                        /* mu: no more batches */
    struct kd_ins_batch *cur;         /* the loader's: being filled */
    struct keydir *kd;
    int rc; /* the inserter's: the first failure (then the rest is only freed) */
    char msg[256];
};

/* Inserts a loaded entry into the hash table (the inserter thread, or the loader when there is none). */
static int kd_load_insert(struct keydir *kd, struct kd_entry *n, uint64_t hash)
{
    if ((kd->used + 1) * 10 > kd->table->cap * 7 && kd_grow(kd)) return JVDB_ENOMEM;
    struct kd_table *t = kd->table;
    int found;
    size_t pos = kd_probe(t, n->id, n->id_len, hash, &found);
    if (found) return err_set(JVDB_ECORRUPT, "id '%.*s' appears twice", (int)n->id_len, n->id);
    if (t->b[pos].w == 0) kd->used++;
    t->b[pos].w = KD_WORD(n, hash);
    kd->count++;
    return JVDB_OK;
}

/* Thread: inserts the batches the loader hands over, prefetching buckets a few entries ahead; after
 * a failure only frees what is not in the table. */
static void *kd_inserter_main(void *arg)
{
    struct kd_inserter *in = arg;
    for (;;) {
        pthread_mutex_lock(&in->mu);
        while (!in->head && !in->done) pthread_cond_wait(&in->cv, &in->mu);
        struct kd_ins_batch *b = in->head;
        if (b && !(in->head = b->next)) in->tail = NULL;
        if (b) in->queued--;
        pthread_cond_signal(&in->room);
        pthread_mutex_unlock(&in->mu);
        if (!b) return NULL;
        const struct kd_table *t = in->kd->table;
        for (size_t k = 0; k < b->n; k++) {
            if (k + 12 < b->n) __builtin_prefetch(&t->b[(size_t)b->it[k + 12].hash & (t->cap - 1)], 1);
            if (in->rc == JVDB_OK && (in->rc = kd_load_insert(in->kd, b->it[k].e, b->it[k].hash)) != JVDB_OK)
                snprintf(in->msg, sizeof in->msg, "%s", jvdb_errmsg());
            if (in->rc != JVDB_OK) kd_entry_free(in->kd, b->it[k].e); /* not in the table: nothing reaches it */
            t = in->kd->table;
        }
        free(b);
    }
}

/* Frees the inserter's state (its thread joined or never started). */
static void kd_inserter_destroy(struct keydir *kd)
{
    struct kd_inserter *in = kd->inserter;
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cv);
    pthread_cond_destroy(&in->room);
    free(in);
    kd->inserter = NULL;
}

/* Hands the loader's current batch to the inserter. */
static void kd_inserter_push(struct kd_inserter *in)
{
    if (in->cur && !in->cur->n) { /* a batch begun for an entry that failed: nothing to hand over */
        free(in->cur);
        in->cur = NULL;
    }
    if (!in->cur) return;
    pthread_mutex_lock(&in->mu);
    while (in->queued >= KD_INS_QUEUE) pthread_cond_wait(&in->room, &in->mu);
    in->queued++;
    if (in->tail) in->tail->next = in->cur;
    else in->head = in->cur;
    in->tail = in->cur;
    pthread_cond_signal(&in->cv);
    pthread_mutex_unlock(&in->mu);
    in->cur = NULL;
}

/* Ends the pipeline: hands over the last batch, waits for the inserter and returns its result
 * (its error message set again in this thread when `report`). */
static int kd_inserter_join(struct keydir *kd, int report)
{
    struct kd_inserter *in = kd->inserter;
    if (!in) return JVDB_OK;
    kd_inserter_push(in);
    pthread_mutex_lock(&in->mu);
    in->done = true;
    pthread_cond_signal(&in->cv);
    pthread_mutex_unlock(&in->mu);
    pthread_join(in->thread, NULL);
    int rc = in->rc;
    if (rc != JVDB_OK && report) err_set(rc, "%s", in->msg);
    kd_inserter_destroy(kd);
    return rc;
}

int keydir_load_begin(struct keydir *kd, size_t count, uint32_t nslots, size_t arena_bytes, size_t arena_sure)
{
    /* The capacity growing from empty would have reached (the first power of two that holds count
     * below kd_grow's 0.7 load), so that the table a load makes grows no earlier than one
     * built record by record. */
    size_t cap = 1024;
    while ((count + 1) * 10 > cap * 7) cap *= 2;
    uint32_t scap = 1024;
    while (scap < nslots) {
        if (scap > UINT32_MAX / 2) return err_set(JVDB_ECORRUPT, "slot count %u is too large", nslots);
        scap *= 2;
    }
    struct kd_table *t = kd_table_new(cap);
    struct kd_slots *sl = kd_slots_new(scap);
    /* Its own mapping, not malloc: given back whole, and a reservation costs nothing until
     * written, so an upper bound is fine.  No huge pages: it is written front to back (few TLB
     * misses), and faulting it in 2 MiB pages measured 2-5x slower in system time. */
    size_t alen = (arena_bytes + 4095) & ~(size_t)4095;
    void *arena =
        alen ? mmap(NULL, alen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) : NULL;
    if (arena && arena != MAP_FAILED && ((uintptr_t)arena + alen) >> KD_TAG_SHIFT) { /* above a bucket word's reach */
        munmap(arena, alen);
        arena = MAP_FAILED;
    }
    if (!t || !sl || arena == MAP_FAILED) {
        free(t);
        free(sl);
        if (arena && arena != MAP_FAILED) munmap(arena, alen);
        return err_set(JVDB_ENOMEM, "out of memory sizing the keydir for %zu entries", count);
    }
    kd_prefault_join(kd);
    if (kd->arena) munmap(kd->arena, kd->arena_len);
    kd->arena = arena;
    kd->arena_len = alen;
    kd->arena_used = 0;
    /* Fresh pages cost their clearing at the first write (half of a 5M-id load's time on a VM):
     * a helper thread takes that on, table first (written first), while this one reads. */
    size_t tbytes = cap * sizeof t->b[0], sbytes = (size_t)nslots * sizeof(void *);
    if (tbytes + 3 * sbytes + alen >= KD_PREFAULT_MIN && (kd->prefault = calloc(1, sizeof *kd->prefault))) {
        struct kd_prefault *pf = kd->prefault;
        pf->r[0].p = t->b, pf->r[0].len = tbytes;
        pf->r[1].p = sl->lsn, pf->r[1].len = sbytes;
        pf->r[2].p = sl->vec, pf->r[2].len = sbytes;
        pf->r[3].p = sl->owner, pf->r[3].len = sbytes;
        pf->r[4].p = arena, pf->r[4].len = arena_sure < alen ? arena_sure : alen;
        if (pthread_create(&pf->thread, NULL, kd_prefault_main, pf) != 0) {
            free(pf);
            kd->prefault = NULL;
        }
    }
    free(kd->table);
    free(kd->slots);
    kd->table = t;
    kd->slots = sl;
    kd->nslots = nslots;
    if (count >= KD_INSERTER_MIN && !kd->inserter && (kd->inserter = calloc(1, sizeof *kd->inserter))) {
        struct kd_inserter *in = kd->inserter;
        in->kd = kd;
        pthread_mutex_init(&in->mu, NULL);
        pthread_cond_init(&in->cv, NULL);
        pthread_cond_init(&in->room, NULL);
        if (pthread_create(&in->thread, NULL, kd_inserter_main, in) != 0) kd_inserter_destroy(kd);
    }
    return JVDB_OK;
}

void *keydir_load_block(struct keydir *kd, size_t bytes)
{
    if (bytes % 8 || bytes > kd->arena_len - kd->arena_used) return NULL;
    void *p = kd->arena + kd->arena_used;
    kd->arena_used += bytes;
    return p;
}

int keydir_load_entry(struct keydir *kd, struct segment *seg, uint64_t offset, const char *id, uint16_t id_len,
                      uint64_t hash, uint64_t lsn, uint8_t kind, uint32_t rec_len, uint32_t slot, void *at)
{
    if (kind == REC_KIND_PUT ? slot >= kd->nslots || kd->slots->owner[slot] : slot != KD_NO_SLOT)
        return err_set(JVDB_ECORRUPT, "slot %u of '%.*s' is out of range or taken", slot, (int)id_len, id);
    struct kd_inserter *in = kd->inserter;
    if (in && !in->cur) {
        if (!(in->cur = malloc(sizeof *in->cur))) return err_set(JVDB_ENOMEM, "out of memory");
        in->cur->n = 0;
        in->cur->next = NULL;
    }
    struct kd_entry *n = at;
    if (!n && (n = keydir_load_block(kd, KD_ENTRY_SIZE(id_len)))) n->flags = KD_E_ARENA;
    if (!n && !(n = kd_entry_new(kd, id_len))) return err_set(JVDB_ENOMEM, "out of memory");
    if (at) n->flags = KD_E_ARENA;
    if (n->id != id) memcpy(n->id, id, id_len);
    n->id_len = id_len;
    n->rec = seg->map + offset;
    n->prev = NULL;
    n->seg = seg;
    n->lsn = lsn;
    n->rec_len = rec_len;
    n->kind = kind;
    n->hits = 0;
    n->slot = slot;
    /* kd_account without its locked read-modify-writes: nothing else runs yet (5M of each cost ~0.1 s). */
    if (kind == REC_KIND_PUT) {
        __atomic_store_n(&seg->live_records, __atomic_load_n(&seg->live_records, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&seg->live_bytes, __atomic_load_n(&seg->live_bytes, __ATOMIC_RELAXED) + rec_len,
                         __ATOMIC_RELAXED);
        __atomic_store_n(&kd->live, __atomic_load_n(&kd->live, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    } else {
        __atomic_store_n(&kd->tombstones, __atomic_load_n(&kd->tombstones, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    }
    /* The vector's address is computed, not read: the page is touched only when a search reads it. */
    if (kind == REC_KIND_PUT) kd_slot_set(kd, slot, lsn, n, (const float *)(seg->map + offset + REC_HEADER_SIZE));
    if (!in) {
        int rc = kd_load_insert(kd, n, hash);
        if (rc) kd_entry_free(kd, n); /* not in the table: nothing reaches it */
        return rc;
    }
    /* A duplicate id or a failure the inserter meets is reported by keydir_load_end. */
    in->cur->it[in->cur->n].e = n;
    in->cur->it[in->cur->n++].hash = hash;
    if (in->cur->n == KD_INS_BATCH) kd_inserter_push(in);
    return JVDB_OK;
}

void keydir_load_prefetch(const struct keydir *kd, uint64_t hash, uint32_t slot)
{
    /* The table is the inserter's while it runs (it prefetches for itself). */
    if (!kd->inserter) __builtin_prefetch(&kd->table->b[(size_t)hash & (kd->table->cap - 1)], 1);
    if (slot < kd->nslots) {
        __builtin_prefetch(&kd->slots->owner[slot], 1);
        __builtin_prefetch(&kd->slots->vec[slot], 1);
        __builtin_prefetch(&kd->slots->lsn[slot], 1);
    }
}

int keydir_load_end(struct keydir *kd)
{
    int rc = kd_inserter_join(kd, 1);
    kd_prefault_join(kd);
    if (rc) return rc;
    /* Pushed highest first so that the lowest free slot is reused first. */
    for (uint32_t s = kd->nslots; s-- > 0;) {
        if (kd->slots->owner[s]) continue;
        uint32_t *nf = grow_array32(kd->free_slots, &kd->free_cap, (size_t)kd->nfree + 1, sizeof *nf, 256);
        if (!nf) return err_set(JVDB_ENOMEM, "out of memory");
        kd->free_slots = nf;
        kd->free_slots[kd->nfree++] = s;
    }
    return JVDB_OK;
}

int keydir_repoint(struct keydir *kd, const uint8_t *from, struct segment *from_seg, struct segment *to,
                   uint64_t to_off, uint32_t dim, uint64_t hash)
{
    const struct rec_header *h = (const struct rec_header *)from;
    const uint8_t *to_rec = to->map + to_off;
    struct kd_slots *sl = LD(&kd->slots);
    int moved = 0;
    for (struct kd_entry *v = keydir_find_hashed(kd, rec_id(h, dim), h->id_len, hash); v; v = LD(&v->prev)) {
        /* Only compaction changes rec, one at a time; the exchange guards against listing a record twice. */
        const uint8_t *exp = from;
        if (!__atomic_compare_exchange_n(&v->rec, &exp, to_rec, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) continue;
        moved = 1;
        if (v->kind != REC_KIND_PUT) continue;
        /* Still counted (no writer superseded it yet): the count follows it to the output. */
        struct segment *es = from_seg;
        if (__atomic_compare_exchange_n(&v->seg, &es, to, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            SUB(&from_seg->live_records, 1);
            SUB(&from_seg->live_bytes, v->rec_len);
            ADD(&to->live_records, 1);
            ADD(&to->live_bytes, v->rec_len);
        }
        if (v->slot != KD_NO_SLOT) keydir_repoint_slot(sl, v->slot, from, to_rec);
    }
    return moved;
}

void keydir_repoint_slot(struct kd_slots *sl, uint32_t slot, const uint8_t *from, const uint8_t *to)
{
    /* The old vector's address is this record's alone: if the slot still holds it, nobody changed
     * the slot since, and the identical copy replaces it; otherwise the writer's version stays. */
    const float *exp = rec_vector((const struct rec_header *)from);
    __atomic_compare_exchange_n(&sl->vec[slot], &exp, rec_vector((const struct rec_header *)to), 0, __ATOMIC_RELEASE,
                                __ATOMIC_RELAXED);
}

int keydir_drop_tombstone(struct keydir *kd, const uint8_t *rec, uint32_t dim, uint64_t hash)
{
    const struct rec_header *h = (const struct rec_header *)rec;
    const char *id = rec_id(h, dim);
    struct kd_table *t = kd->table;
    int found;
    size_t pos = kd_probe(t, id, h->id_len, hash, &found);
    struct kd_entry *head = found ? kd_word_entry(t->b[pos].w) : NULL;
    if (!head) return 0;
    if (head->rec != rec) {
        /* Superseded since it was listed (a put of the same id): readers at an older snapshot may
         * still reach it, and for them "no version" means what the tombstone meant. */
        struct kd_entry *p = head;
        while (p && p->prev && p->prev->rec != rec) p = p->prev;
        struct kd_entry *e = p ? p->prev : NULL;
        if (!e || e->kind != REC_KIND_DELETE || e->prev) return 0;
        ST(&p->prev, NULL);
        kd_retire_entry(kd, e);
        return 1;
    }
    struct kd_entry *e = head;
    if (e->kind != REC_KIND_DELETE || e->prev) return 0;
    kd_unaccount(kd, e);
    if (e->slot != KD_NO_SLOT && kd->slots->owner[e->slot] == e) kd_slot_release(kd, e->slot);
    ST(&t->b[pos].w, (uintptr_t)KD_DEAD);
    kd->count--;
    kd_retire_entry(kd, e);
    return 1;
}

/* Deferred: the grace period after `visible` passed e is over, so no reader needs e->prev. */
static void kd_trim_cb(void *ctx, void *arg)
{
    struct keydir *kd = ctx;
    struct kd_entry *e = arg;
    struct kd_entry *v = e->prev;
    ST(&e->prev, NULL);
    if (v) kd_retire_entry(kd, v);
    if (e->kind == REC_KIND_DELETE && e->slot != KD_NO_SLOT) {
        if (kd->slots->owner[e->slot] == e) kd_slot_release(kd, e->slot);
        e->slot = KD_NO_SLOT;
    }
    kd->trim_n_inflight--;
    if (e->lsn > kd->trim_done_upto) kd->trim_done_upto = e->lsn;
}

void keydir_trim(struct keydir *kd, uint64_t visible)
{
    while (kd->trim_n && kd->trims[kd->trim_head]->lsn <= visible) {
        struct kd_entry *e = kd->trims[kd->trim_head++];
        kd->trim_n--;
        kd->trim_n_inflight++;
        if (e->lsn > kd->trim_deferred_upto) kd->trim_deferred_upto = e->lsn;
        rp_defer(kd->gc, kd_trim_cb, kd, e);
    }
    if (!kd->trim_n) kd->trim_head = 0;
}

size_t keydir_trims_pending(const struct keydir *kd) { return kd->trim_n + kd->trim_n_inflight; }
