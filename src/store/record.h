#ifndef JVDB_STORE_RECORD_H
#define JVDB_STORE_RECORD_H
/*
 * The record format of docs/FORMAT.md ("Record"): a 64-byte header, then for puts the
 * float32 vector (64-byte aligned in the mapping), then the id bytes, then the metadata bytes, then
 * zero padding to a multiple of 64.  Integers are little-endian (the only byte order we build for).
 */
#include <stddef.h>
#include <stdint.h>

#define REC_HEADER_SIZE 64u
#define REC_ALIGN       64u
#define REC_KIND_PUT    1u
#define REC_KIND_DELETE 2u
#define REC_FLAG_MORE   1u /* more records of the same batch follow */

struct rec_header {
    uint64_t checksum; /* XXH3-64 of bytes [8, total_len) */
    uint64_t lsn;
    int64_t time_ns;
    uint32_t total_len;
    uint32_t meta_len;
    uint16_t id_len;
    uint8_t kind;
    uint8_t flags;
    uint8_t reserved[28];
};
_Static_assert(sizeof(struct rec_header) == REC_HEADER_SIZE, "record header is 64 bytes");

static inline size_t rec_align(size_t n) { return (n + REC_ALIGN - 1) & ~(size_t)(REC_ALIGN - 1); }

/* Encoded size of a record. */
size_t rec_size(uint32_t dim, unsigned kind, size_t id_len, size_t meta_len);

/* Writes a record into buf (rec_size bytes, zeroed padding) with lsn 0 and no checksum yet: the
 * writer assigns LSNs under its lock and then calls rec_seal. */
void rec_encode(void *buf, uint32_t dim, unsigned kind, const char *id, size_t id_len, const float *vector,
                const char *meta, size_t meta_len, int64_t time_ns);
void rec_seal(void *buf, uint64_t lsn, unsigned flags);

enum rec_check {
    REC_OK = 0,
    REC_SHORT, /* the bytes available end before the record does */
    REC_BAD,   /* header fields impossible or checksum mismatch */
};
/* Validates the record at p with `avail` bytes available; on REC_BAD, *why says what failed. */
enum rec_check rec_check(const void *p, size_t avail, uint32_t dim, const char **why);
/* The content invariants every stored record has always kept (no NUL in its id or metadata, finite
 * vector values), for a record whose structure and checksum rec_check has already accepted. */
enum rec_check rec_check_content(const struct rec_header *h, uint32_t dim, const char **why);

static inline const float *rec_vector(const struct rec_header *h)
{
    return (const float *)((const char *)h + REC_HEADER_SIZE);
}
const char *rec_id(const struct rec_header *h, uint32_t dim);
const char *rec_meta(const struct rec_header *h, uint32_t dim);
#endif
