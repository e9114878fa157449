/*
 * fuzz_hnsw_file.c — libFuzzer target for the saved HNSW graph reader (src/search/hnsw_persist.c):
 * hnsw_file_parse, then, for a file it accepts, hnsw_from_file with a third of the nodes dropped (the
 * repair path), a search and a vacuum over the result.  Checksums would stop most mutations at the
 * door, so every input is also tried re-signed: the header, each block and the trailer get correct
 * XXH3 values wherever the input's own lengths place them.  Graphs of sq8 rows navigate on the rows
 * the file carries; others on made-up float vectors.
 *
 * An input holding the delta file's magic ("JVDBHNSD") is a checkpoint followed by a delta
 * (ext.hnsw.log): the delta is replayed over the checkpoint (hnsw_delta_apply) before the graph is
 * built, and folded with it (hnsw_file_fold), whose output must parse.  Re-signing also gives the
 * delta its checkpoint's tag, header and batch checksums.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "search/hnsw_persist.h"
#include "search/sq8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Re-signs a delta file of checkpoint `ck`: its tag, header checksum and every batch checksum its own
 * lengths place. */
static void resign_delta(const uint8_t *ck, size_t cklen, uint8_t *d, size_t len)
{
    if (len < 48 || cklen < 80) return;
    memcpy(d + 16, ck + 72, 8);
    put64(d + 40, XXH3_64bits(d, 40));
    size_t off = 48;
    while (len - off >= 56) {
        uint32_t plen = get32(d + off + 20);
        if (plen > len - off - 56) break;
        put64(d + off + 48 + plen, XXH3_64bits(d + off, 48 + (size_t)plen));
        off += 56 + (size_t)plen;
    }
}

static void resign(uint8_t *b, size_t len)
{
    if (len < 80 + 24) return;
    put64(b + 72, XXH3_64bits(b, 72));
    size_t off = 80, end = len - 24;
    uint32_t xlen = get32(b + 68);
    if (xlen > end - off || end - off - xlen < 8) return;
    put64(b + off + xlen, XXH3_64bits(b + off, xlen));
    off += (size_t)xlen + 8;
    while (end - off >= 24) {
        uint32_t plen = get32(b + off + 12);
        if (plen > end - off - 24) break;
        put64(b + off + 16 + plen, XXH3_64bits(b + off, 16 + (size_t)plen));
        off += 24 + (size_t)plen;
    }
    put64(b + end + 16, XXH3_64bits(b + end, 16));
}

static void exercise(const uint8_t *b, size_t len, const uint8_t *delta, size_t dlen)
{
    struct hnsw_file f;
    if (hnsw_file_parse(b, len, &f) != JVDB_OK) return;
    if (delta) {
        size_t good;
        uint32_t batches;
        if (hnsw_delta_apply(&f, delta, dlen, &good, &batches) != JVDB_OK) {
            hnsw_file_free(&f);
            return;
        }
        if (good > dlen) abort();
        /* What a backup would carry: one checkpoint that must read back with the same nodes. */
        uint8_t *folded;
        size_t flen;
        if (hnsw_file_fold(b, len, delta, dlen, &folded, &flen) == JVDB_OK) {
            struct hnsw_file g;
            if (hnsw_file_parse(folded, flen, &g) != JVDB_OK || g.nnodes != f.nnodes || g.lsn != f.lsn) abort();
            hnsw_file_free(&g);
            free(folded);
        }
    }
    /* Vectors for at most 4096 nodes of a small dimension; bigger files stop at parsing. */
    if (f.nnodes > 4096 || f.dim > 64) {
        hnsw_file_free(&f);
        return;
    }
    uint32_t *map = malloc(((size_t)f.nnodes + 1) * sizeof *map);
    size_t stride = f.p.sq8 ? f.row_bytes / 4 : f.dim; /* floats per row */
    float *store = malloc(((size_t)f.nnodes + 1) * stride * sizeof *store);
    const float **slots = malloc(((size_t)f.nnodes + 1) * sizeof *slots);
    if (!map || !store || !slots) abort();
    for (uint32_t i = 0; i < f.nnodes; i++) {
        map[i] = i % 3 == 1 ? HNSW_FILE_NONE : f.nnodes - 1 - i; /* reversed: slots are not file order */
        /* sq8 rows the loader would refuse (search.c checks sq8_row_valid) are not searched. */
        if (f.p.sq8 && !sq8_row_valid((const int8_t *)hnsw_file_row(&f, &f.nodes[i]), f.dim)) {
            hnsw_file_free(&f);
            free(map);
            free(store);
            free(slots);
            return;
        }
        if (f.p.sq8) memcpy(store + (size_t)i * stride, hnsw_file_row(&f, &f.nodes[i]), f.row_bytes);
        else
            for (uint32_t d = 0; d < f.dim; d++) store[(size_t)i * f.dim + d] = (float)((i * 31 + d * 7) % 17) - 8;
        slots[i] = store + (size_t)i * stride;
    }
    struct hnsw *h;
    if (hnsw_from_file(&f, map, slots, f.nnodes, &h) == JVDB_OK) {
        struct hnsw_query q;
        hnsw_query_init(&q);
        uint32_t out[10], n;
        float sc[10];
        if (hnsw_search(h, slots, f.nnodes, store, &q, out, sc, &n, NULL) == JVDB_OK)
            for (uint32_t i = 0; i < n; i++)
                if (out[i] >= f.nnodes || !hnsw_contains(h, out[i])) abort();
        for (uint32_t s = 0; s < f.nnodes; s += 5)
            if (hnsw_contains(h, s)) hnsw_mark_deleted(h, s);
        uint32_t removed;
        if (hnsw_vacuum(h, slots, f.nnodes, &removed) == JVDB_OK &&
            hnsw_search(h, slots, f.nnodes, store, &q, out, sc, &n, NULL) == JVDB_OK)
            for (uint32_t i = 0; i < n; i++)
                if (hnsw_is_deleted(h, out[i]) || !hnsw_contains(h, out[i])) abort();
        hnsw_free(h);
    }
    free(map);
    free(store);
    free(slots);
    hnsw_file_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The checkpoint ends where the delta's magic starts, if anywhere. */
    size_t ck = size;
    for (size_t i = 0; i + 8 <= size; i++)
        if (!memcmp(data + i, "JVDBHNSD", 8)) {
            ck = i;
            break;
        }
    const uint8_t *delta = ck < size ? data + ck : NULL;
    exercise(data, ck, delta, size - ck);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    resign(copy, ck);
    if (delta) resign_delta(copy, ck, copy + ck, size - ck);
    exercise(copy, ck, delta ? copy + ck : NULL, size - ck);
    free(copy);
    return 0;
}
