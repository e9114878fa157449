#ifndef JVDB_STORE_SEGMENT_H
#define JVDB_STORE_SEGMENT_H
/*
 * A segment file: a 64-byte header, then records.  Mapped read-only with a reservation of its
 * maximum size so pointers into it stay valid while the active segment grows by pwrite.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEG_HEADER_SIZE    64u
#define SEG_MAGIC          "JVDBSEG1"
#define SEG_FORMAT_VERSION 1u

struct seg_header {
    char magic[8];
    uint32_t version;
    uint32_t dim;
    uint64_t seg_no;
    int64_t created_ns;
    uint8_t reserved[24];
    uint64_t checksum; /* XXH3-64 of bytes [0, 56) */
};
_Static_assert(sizeof(struct seg_header) == SEG_HEADER_SIZE, "segment header is 64 bytes");

struct segment {
    uint64_t no;
    int fd;
    char *path;
    const uint8_t *map;
    uint64_t map_len; /* reserved address space */
    uint64_t size;    /* bytes of the file in use (header included) */
    bool sealed;
    /* Accounting kept by the keydir: records in the file, and bytes/records the keydir points at. */
    uint64_t records;
    uint64_t min_lsn, max_lsn; /* range of LSNs of every record in the file (0,0 when empty) */
    uint64_t live_records;
    uint64_t live_bytes;
    atomic_int refs;     /* the database's own reference plus pins by readers and jobs */
    atomic_bool retired; /* unlink the file when the last reference goes */
};

/* "<dir>/<no>.seg" with the number zero-padded to 10 digits. */
char *seg_path(const char *dir, uint64_t no);
/* Creates a new empty segment file (header written and fsynced, directory fsynced). */
int seg_create(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, struct segment **out);
/* Opens an existing segment, checks its header, maps it with at least `reserve` bytes of room. */
int seg_open(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, struct segment **out);
/* The same with a read-only descriptor (read-only and salvage opens never write a segment). */
int seg_open_readonly(const char *dir, uint64_t no, uint32_t dim, uint64_t reserve, struct segment **out);
/* One copy out of a segment mapping (seg_copy_out). */
struct seg_copy {
    const uint8_t *src; /* len bytes inside one segment's mapping */
    void *dst;
    uint32_t len;
};
/* Copies each item's bytes to its dst with pread from the file of the segment (of segs) whose
 * mapping holds src, instead of reading the mapping: a read through a long-lived mapping makes
 * the kernel map the page and its neighbours (fault-around), and those stay in the process's RSS
 * for as long as the mapping lives, whereas pread leaves the page cache unmapped.  Items are
 * sorted by src (their order changes) and nearby ones read together.  An src in no listed
 * mapping (a segment a compaction retired after the caller's read section began) is copied from
 * memory.  For random reads of a few records (re-rank, result building); scans should read the
 * mapping.  Returns 0, or -1 with errno set. */
int seg_copy_out(struct segment *const *segs, size_t nsegs, struct seg_copy *items, size_t n);
/* Reference counting: the last seg_unref unmaps, closes and (if retired) unlinks. */
void seg_ref(struct segment *s);
void seg_unref(struct segment *s);
#endif
