#ifndef JVDB_STORE_KEYDIR_H
#define JVDB_STORE_KEYDIR_H
/*
 * The keydir: id -> newest record location, plus the dense slot table of live vectors.
 *
 * One writer at a time (the database's write_mu) changes it; readers read it without any lock
 * inside a read section (store/readpath.h) and see, per id, the newest version whose LSN is at
 * most their snapshot LSN (keydir_visible).  Fields marked "writer" are the writer's own.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/readpath.h"
#include "store/record.h"
#include "store/segment.h"

#define KD_NO_SLOT UINT32_MAX

struct kd_entry {
    const uint8_t *rec;    /* atomic: the record in a mapping (compaction repoints it) */
    struct kd_entry *prev; /* atomic: the version this one superseded, while a reader may need it */
    struct segment *seg;   /* atomic: the segment counting it live (NULL once superseded) */
    uint64_t lsn;
    uint32_t rec_len;
    uint32_t slot; /* writer: the id's slot (KD_NO_SLOT: none) */
    uint32_t hits; /* read count, bumped with relaxed atomics by readers */
    uint16_t id_len;
    uint8_t kind;
    uint8_t flags; /* KD_E_* */
    char id[];     /* id_len bytes; an arena entry is padded to a multiple of 8 */
};
#define KD_E_ARENA            1u /* lives in the keydir's arena (a checkpoint load): never freed on its own */
/* Bytes an arena entry with an id of id_len bytes takes (entries follow each other 8-aligned). */
#define KD_ENTRY_SIZE(id_len) (sizeof(struct kd_entry) + (((size_t)(id_len) + 7) & ~(size_t)7))

/* Called (write_mu held) when a slot gains a vector (added=1: new or replaced) or loses it (0). */
typedef void (*kd_slot_hook)(void *ctx, uint32_t slot, int added);

/* A bucket is one word: the entry's address in the low 48 bits and the top 16 bits of the id's
 * hash above them, so that probing past other ids rarely touches their entries (each a cache
 * miss), in 8 bytes per bucket instead of 16 (a 5M-id table: 64 MiB, not 128, to clear at open
 * and to miss in).  Read and written as one atomic word: a reader that sees an address sees the
 * tag that goes with it.  0: never used; KD_DEAD: a removed entry (probing goes on).  Entries
 * live below 2^48 (keydir.c refuses memory above: Linux gives none to a process not asking). */
struct kd_bucket {
    uintptr_t w;
};
#define KD_DEAD          ((struct kd_entry *)(uintptr_t)1)
#define KD_TAG_SHIFT     48
#define KD_ADDR_MASK     (((uintptr_t)1 << KD_TAG_SHIFT) - 1)
#define KD_TAG(hash)     ((uintptr_t)((hash) >> KD_TAG_SHIFT) << KD_TAG_SHIFT)
#define KD_WORD(e, hash) ((uintptr_t)(e) | KD_TAG(hash))
_Static_assert(sizeof(uintptr_t) == 8, "a bucket word holds a 48-bit address and a 16-bit tag");

/* The entry of a bucket word (NULL, KD_DEAD or an entry). */
static inline struct kd_entry *kd_word_entry(uintptr_t w) { return (struct kd_entry *)(w & KD_ADDR_MASK); }
struct kd_table {
    size_t cap; /* power of two */
    struct kd_bucket b[];
};
/* The entry of bucket i of a published table, for walks over every id (inside a read section). */
static inline struct kd_entry *keydir_bucket(const struct kd_table *t, size_t i)
{
    return kd_word_entry(__atomic_load_n(&t->b[i].w, __ATOMIC_ACQUIRE));
}

/* The slot table, replaced whole when it grows.  lsn[s] is the LSN of owner[s] (stored before
 * vec[s] and owner[s]): a scan at snapshot S uses vec[s] when lsn[s] <= S, else resolves the
 * owner's version chain (keydir_slot_vector). */
struct kd_slots {
    uint32_t cap;
    const float **vec; /* slot -> vector in a mapping, NULL when free or deleted */
    uint64_t *lsn;
    struct kd_entry **owner;
};

struct keydir {
    struct kd_table *table;    /* atomic */
    struct kd_slots *slots;    /* atomic */
    uint32_t nslots;           /* atomic: slots in use or ever used, below slots->cap */
    size_t used;               /* writer: buckets holding an entry or KD_DEAD */
    size_t count;              /* writer: entries, tombstones included */
    uint64_t live, tombstones; /* atomic (statistics) */
    uint32_t *free_slots;      /* writer */
    uint32_t nfree, free_cap;
    kd_slot_hook hook; /* writer */
    void *hook_ctx;
    /* History: versions superseded while readers may need them (false while loading: no readers). */
    bool history;
    struct rp_domain *gc;    /* where unpublished memory goes (the database's domain) */
    struct kd_entry **trims; /* writer: FIFO, ascending LSN, of versions with a prev to cut */
    size_t trim_head, trim_n, trim_cap;
    size_t trim_n_inflight;                      /* writer: handed to the grace-period machinery, not yet cut */
    uint64_t trim_deferred_upto, trim_done_upto; /* writer: largest LSN deferred / cut */
    /* Arena (writer): one mapping holding the entries a checkpoint load made, back to back.  An
     * arena entry superseded later is not freed (its bytes stay until keydir_free): what a session
     * can waste is bounded by the checkpoint it loaded, and a reader can never reach freed memory. */
    uint8_t *arena;
    size_t arena_len, arena_used;
    size_t nheap;                 /* atomic: entries of the heap not yet freed (the rest are in the arena) */
    struct kd_prefault *prefault; /* writer: the thread faulting in a load's memory, until load_end */
    struct kd_inserter *inserter; /* writer: the thread filling the hash table during a big load, until load_end */
};

int keydir_init(struct keydir *kd, struct rp_domain *gc);
void keydir_free(struct keydir *kd);

/* ---- readers (inside a read section) */
/* The newest version of `id` (NULL: unknown). */
struct kd_entry *keydir_find(const struct keydir *kd, const char *id, size_t id_len);
/* keydir_find in steps, for walks over many records (compaction's listing): the id's hash, a hint
 * to fetch its bucket (entry = 0) or, once that is in cache, its entry (entry = 1), and the find. */
uint64_t keydir_hash(const char *id, size_t id_len);
void keydir_prefetch(const struct keydir *kd, uint64_t hash, int entry);
struct kd_entry *keydir_find_hashed(const struct keydir *kd, const char *id, size_t id_len, uint64_t hash);
/* The version of a chain visible at snapshot `snap` (NULL: none: the id did not exist yet). */
const struct kd_entry *keydir_visible(const struct kd_entry *e, uint64_t snap);
/* The vector of slot `s` at snapshot `snap` (NULL: none), and its entry (may be NULL). */
const float *keydir_slot_vector(const struct kd_slots *sl, uint32_t s, uint64_t snap, uint32_t dim,
                                const struct kd_entry **owner);
static inline const struct rec_header *keydir_record(const struct kd_entry *e)
{
    return (const struct rec_header *)__atomic_load_n(&e->rec, __ATOMIC_ACQUIRE);
}
static inline const struct kd_slots *keydir_slots(const struct keydir *kd, uint32_t *nslots)
{
    *nslots = __atomic_load_n(&kd->nslots, __ATOMIC_ACQUIRE);
    return __atomic_load_n(&kd->slots, __ATOMIC_ACQUIRE);
}

/* ---- the writer (write_mu held) */
/* Makes the record at (seg, offset) known: newest LSN wins, whatever the order of application.
 * Updates the segments' live accounting.  Returns JVDB_OK or JVDB_ENOMEM. */
int keydir_apply(struct keydir *kd, struct segment *seg, uint64_t offset, uint32_t dim);
/* The same, reading the record's fields from `h`, an identical copy the writer still holds, so that
 * the write path never touches the mapping: pages a process never mapped need no write-protection
 * round when the kernel writes them back, which an fdatasync per batch otherwise pays for. */
int keydir_apply_copy(struct keydir *kd, struct segment *seg, uint64_t offset, const struct rec_header *h,
                      uint32_t dim);
/* Compaction, inside a read section and without write_mu: points every version of the id of the
 * record at `from` (in from_seg) that still refers to it at the identical copy at (to, to_off), each
 * with a compare-and-swap, so a version a writer made meanwhile keeps the writer's record; the live
 * count follows the newest version unless a writer superseded it first.  The slot table changed is
 * the one current at the call: the caller checks under write_mu that it was not replaced since
 * (else repeats the slots with keydir_repoint_slot).  `hash` is keydir_hash of the id.  Returns
 * whether any version pointed at `from`. */
int keydir_repoint(struct keydir *kd, const uint8_t *from, struct segment *from_seg, struct segment *to,
                   uint64_t to_off, uint32_t dim, uint64_t hash);
/* Replaces the vector of `slot` in `sl`, if it is still the one of record `from`, by that of `to`. */
void keydir_repoint_slot(struct kd_slots *sl, uint32_t slot, const uint8_t *from, const uint8_t *to);
/* Forgets the tombstone at record `rec` if it is still the newest version of its id and no older
 * version hangs from it (compaction dropped the record); `hash` is keydir_hash of the id.  Returns
 * whether it did. */
int keydir_drop_tombstone(struct keydir *kd, const uint8_t *rec, uint32_t dim, uint64_t hash);
/* ---- loading from a keydir checkpoint (store/kdckpt.c; write_mu held or no other user yet) */
/* Sizes the hash and slot tables for `count` entries and `nslots` slots (nothing loaded yet), and
 * reserves an arena of `arena_bytes` (address space: pages cost memory only once written) for the
 * entries, so that loading them makes no allocation per entry; the first `arena_sure` bytes of it
 * the load will write for certain (they are faulted in ahead, the rest only when written). */
int keydir_load_begin(struct keydir *kd, size_t count, uint32_t nslots, size_t arena_bytes, size_t arena_sure);
/* `bytes` (a multiple of 8) of the arena, for a checkpoint block to be read into and its entries
 * built in place (keydir_load_entry's `at`); NULL when the arena has no such room left. */
void *keydir_load_block(struct keydir *kd, size_t bytes);
/* Adds the newest version of an id as the checkpoint names it, without reading the record (the
 * mapping is not touched): `slot` is the slot of a put (KD_NO_SLOT for a tombstone).  Segment
 * record counts and LSN ranges are the caller's (they come from the checkpoint); live counts are
 * kept here.  `hash` is keydir_hash of the id.  `at`: NULL, or KD_ENTRY_SIZE(id_len) bytes from keydir_load_block whose id bytes
 * are already in place (`id` == at + offsetof(struct kd_entry, id)): the entry is built there.
 * JVDB_ECORRUPT for an id seen twice or a slot out of range or taken. */
int keydir_load_entry(struct keydir *kd, struct segment *seg, uint64_t offset, const char *id, uint16_t id_len,
                      uint64_t hash, uint64_t lsn, uint8_t kind, uint32_t rec_len, uint32_t slot, void *at);
/* Hints that an entry for (the id of `hash`, slot) will be loaded soon (cache prefetches; changes nothing). */
void keydir_load_prefetch(const struct keydir *kd, uint64_t hash, uint32_t slot);
/* Puts the slots no loaded put holds on the free list. */
int keydir_load_end(struct keydir *kd);
/* Hands the versions superseded at or below `visible` to the grace-period machinery. */
void keydir_trim(struct keydir *kd, uint64_t visible);
/* Versions still waiting to be trimmed (queued or deferred). */
size_t keydir_trims_pending(const struct keydir *kd);
#endif
