/*
 * bytes.h — fixed-width fields of the on-disk formats (keydir checkpoint, HNSW graph file), read and
 * written at any alignment in host order (little-endian: the formats say so, docs/FORMAT.md).
 */
#ifndef JVDB_CORE_BYTES_H
#define JVDB_CORE_BYTES_H

#include <stdint.h>
#include <string.h>

static inline uint16_t bytes_get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
static inline uint32_t bytes_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t bytes_get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void bytes_put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void bytes_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void bytes_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

#endif
