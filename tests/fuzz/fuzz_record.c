/*
 * fuzz_record.c — libFuzzer target for the record parser (src/store/record.c), the code that
 * recovery, compaction and restores run over bytes read from disk.  The first byte picks a
 * dimension; the rest is walked record by record exactly as a segment scan does.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "store/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint32_t dim = 1 + data[0] % 64;
    /* Records are read from a 64-byte aligned mapping: give the parser the same alignment. */
    static uint8_t buf[1 << 20] __attribute__((aligned(64)));
    size_t n = size - 1 < sizeof buf ? size - 1 : sizeof buf;
    memcpy(buf, data + 1, n);
    size_t off = 0;
    while (off < n) {
        const char *why = "";
        if (rec_check(buf + off, n - off, dim, &why) != REC_OK) break;
        const struct rec_header *h = (const struct rec_header *)(buf + off);
        /* Touch every field the store reads, so a length bug shows as an overflow. */
        volatile uint8_t sink = 0;
        const char *id = rec_id(h, dim);
        for (uint32_t i = 0; i < h->id_len; i++) sink ^= (uint8_t)id[i];
        const char *meta = rec_meta(h, dim);
        for (uint32_t i = 0; i < h->meta_len; i++) sink ^= (uint8_t)meta[i];
        if (h->kind == REC_KIND_PUT) sink ^= (uint8_t)rec_vector(h)[dim - 1];
        (void)sink;
        off += h->total_len;
    }
    return 0;
}
