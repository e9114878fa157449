#ifndef JVDB_STORE_KEYDIR_H
#define JVDB_STORE_KEYDIR_H
/*
 * The keydir: id -> newest record location, plus the dense slot table of live vectors.
 * Not thread-safe by itself: the database's rwlock guards it (writers exclusive, readers shared).
 */
#include <stddef.h>
#include <stdint.h>

#include "store/record.h"
#include "store/segment.h"

#define KD_NO_SLOT UINT32_MAX

struct kd_entry {
    struct segment *seg;
    uint64_t offset;
    uint64_t lsn;
    uint32_t rec_len;
    uint32_t slot;             /* KD_NO_SLOT for tombstones */
    uint32_t hits;             /* read count, bumped with relaxed atomics by readers */
    uint16_t id_len;
    uint8_t kind;
    char id[];
};

/* Called when a slot gains a vector (added=1: new or replaced) or loses it (added=0). */
typedef void (*kd_slot_hook)(void *ctx, uint32_t slot, int added);

/* A hash table bucket keeps the id's hash beside the entry, so probing past other ids and growing
 * the table never touch the entries themselves (each a cache miss) nor hash ids again. */
struct kd_bucket {
    uint64_t hash;
    struct kd_entry *e;
};

struct keydir {
    struct kd_bucket *table;
    size_t cap;                /* power of two */
    size_t count;              /* entries, tombstones included */
    size_t tombstones;
    const float **slot_vec;    /* slot -> vector in a mapping, NULL when free */
    struct kd_entry **slot_owner;
    uint32_t nslots, slot_cap;
    uint32_t *free_slots;
    uint32_t nfree, free_cap;
    uint64_t live;
    kd_slot_hook hook;
    void *hook_ctx;
};

int keydir_init(struct keydir *kd);
void keydir_free(struct keydir *kd);
struct kd_entry *keydir_find(const struct keydir *kd, const char *id, size_t id_len);
/* Makes the record at (seg, offset) known: newest LSN wins, whatever the order of application.
 * Updates the segments' live accounting.  Returns JVDB_OK or JVDB_ENOMEM. */
int keydir_apply(struct keydir *kd, struct segment *seg, uint64_t offset, uint32_t dim);
/* The same, reading the record's fields from `h`, an identical copy the writer still holds, so that
 * the write path never touches the mapping: pages a process never mapped need no write-protection
 * round when the kernel writes them back, which an fdatasync per batch otherwise pays for. */
int keydir_apply_copy(struct keydir *kd, struct segment *seg, uint64_t offset, const struct rec_header *h, uint32_t dim);
/* Points an entry at an identical copy of its record elsewhere (compaction). */
void keydir_move(struct keydir *kd, struct kd_entry *e, struct segment *seg, uint64_t offset, uint32_t dim);
/* Forgets a tombstone entirely (compaction dropped it). */
void keydir_remove(struct keydir *kd, struct kd_entry *e);
static inline const struct rec_header *keydir_record(const struct kd_entry *e)
{
    return (const struct rec_header *)(e->seg->map + e->offset);
}
#endif
