/*
 * test_hnsw_file.c — loading the saved HNSW graph file (src/search/hnsw_persist.c) keeps memory
 * bounded: a file mapped for loading is never resident whole beside the graph it becomes; a
 * checkpoint plus its delta (ext.hnsw.log) replays to exactly the graph that was saved, and folds into
 * a checkpoint of that same graph.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "search/hnsw.h"
#include "search/hnsw_internal.h"
#include "search/hnsw_persist.h"
#include "search_testutil.h"

/* Every node stands for record "n<slot>" at LSN slot + 1. */
static int file_ident(void *ctx, uint32_t slot, const char **id, uint16_t *id_len, uint64_t *lsn)
{
    static char ids[4096][12];
    (void)ctx;
    snprintf(ids[slot % 4096], sizeof ids[0], "n%u", slot);
    *id = ids[slot % 4096];
    *id_len = (uint16_t)strlen(*id);
    *lsn = slot + 1;
    return 1;
}

/* KiB of the mapping at `addr` resident in this process (/proc/self/smaps). */
static long mapping_rss_kib(const void *addr)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    long rss = -1;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            continue;
        }
        if (in && sscanf(line, "Rss: %ld kB", &rss) == 1) break;
    }
    fclose(f);
    return rss;
}

/* A graph file much bigger than the batch of pages dropped at once: parsing it mapped, and building
 * the graph from it, leaves only a few MiB of it resident (the plain parse keeps it all). */
static void test_file_pages_dropped(void **state)
{
    (void)state;
    enum { N = 1500, DIM = 4096 };
    tu_data d;
    tu_data_make(&d, N, DIM, 10, 0.5, 606, JVDB_METRIC_L2);
    struct hnsw_params p;
    hnsw_params_init(&p);
    p.M = 4;
    p.ef_construction = 8;
    struct hnsw *h;
    assert_int_equal(hnsw_create(DIM, JVDB_METRIC_L2, &p, &h), 0);
    for (uint32_t s = 0; s < N; s++) assert_int_equal(hnsw_insert(h, d.slots, N, s), 0);
    char path[] = "/tmp/jvdb-test-hnsw-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    uint64_t size = 0;
    assert_int_equal(hnsw_save(h, d.slots, N, NULL, 0, path, 1, file_ident, NULL, NULL, NULL, NULL, &size), 0);
    assert_true(size > 20u << 20);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    assert_true(map != MAP_FAILED);
    struct hnsw_file f;
    assert_int_equal(hnsw_file_parse(map, size, &f), 0);
    long whole = mapping_rss_kib(map);
    hnsw_file_free(&f);
    munmap(map, size);
    fd = open(path, O_RDONLY);
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    assert_true(map != MAP_FAILED);
    assert_int_equal(hnsw_file_parse_mapped(map, size, &f), 0);
    long parsed = mapping_rss_kib(map);
    uint32_t *slot_of = malloc(N * sizeof *slot_of);
    assert_non_null(slot_of);
    for (uint32_t i = 0; i < N; i++) slot_of[i] = i;
    struct hnsw *g;
    assert_int_equal(hnsw_from_file(&f, slot_of, d.slots, N, &g), 0);
    long built = mapping_rss_kib(map);
    print_message("graph file %llu KiB: resident %ld KiB parsed whole, %ld KiB parsed mapped, %ld KiB after the load\n",
                  (unsigned long long)size / 1024, whole, parsed, built);
    assert_true(whole >= (long)(size / 1024) * 9 / 10);
    assert_true(parsed >= 0 && parsed <= 12 * 1024);
    assert_true(built >= 0 && built <= 12 * 1024);
    assert_int_equal(hnsw_node_count(g), N);
    hnsw_free(g);
    free(slot_of);
    hnsw_file_free(&f);
    munmap(map, size);
    unlink(path);
    hnsw_free(h);
    tu_data_free(&d);
}

/* Reads a whole file into memory (*len bytes). */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

/* The graph built from f (node i -> slot map[i]) has h's nodes with h's very lists. */
static void assert_same_graph(const struct hnsw *h, const struct hnsw_file *f, const uint32_t *map,
                              const float *const *slots, uint32_t nslots)
{
    struct hnsw *g;
    assert_int_equal(hnsw_from_file(f, map, slots, nslots, &g), 0);
    assert_int_equal(hnsw_node_count(g), hnsw_node_count(h));
    assert_int_equal(g->entry, h->entry);
    for (uint32_t s = 0; s < h->cap; s++) {
        if (h->level[s] == HNSW_ABSENT) continue;
        assert_true(hnsw_contains(g, s));
        assert_int_equal(g->level[s], h->level[s]);
        for (int l = 0; l <= h->level[s]; l++) {
            const uint32_t *a = hnsw_links(h, s, l), *b = hnsw_links(g, s, l);
            assert_int_equal(a[0], b[0]);
            assert_memory_equal(a + 1, b + 1, a[0] * sizeof *a);
        }
    }
    hnsw_free(g);
}

/* Checkpoint, then two delta batches (new nodes, re-made nodes, deletions): parsing the checkpoint and
 * replaying the delta gives back exactly the graph in memory, deleted nodes marked dead; so does the
 * fold; a torn last batch leaves the first one's graph. */
static void test_delta_replays_exactly(void **state)
{
    (void)state;
    enum { N = 600, ALL = 700, DIM = 8 };
    tu_data d;
    tu_data_make(&d, ALL, DIM, 10, 0.5, 707, JVDB_METRIC_L2);
    struct hnsw_params p;
    hnsw_params_init(&p);
    p.M = 6;
    struct hnsw *h;
    assert_int_equal(hnsw_create(DIM, JVDB_METRIC_L2, &p, &h), 0);
    for (uint32_t s = 0; s < N; s++) assert_int_equal(hnsw_insert(h, d.slots, ALL, s), 0);
    char path[] = "/tmp/jvdb-test-hnswd-XXXXXX", dpath[64];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    snprintf(dpath, sizeof dpath, "%s.log", path);
    struct hnsw_numbering num = { 0 };
    assert_int_equal(hnsw_save(h, d.slots, ALL, NULL, 0, path, 1, file_ident, NULL, NULL, NULL, &num, NULL), 0);
    hnsw_dirty_clear(h);
    for (uint32_t s = N; s < N + 50; s++) assert_int_equal(hnsw_insert(h, d.slots, ALL, s), 0);
    assert_int_equal(hnsw_insert(h, d.slots, ALL, 5), 0); /* re-made */
    hnsw_mark_deleted(h, 30);
    hnsw_mark_deleted(h, 31);
    uint64_t w1 = 0, w2 = 0;
    assert_int_equal(hnsw_delta_append(h, d.slots, ALL, dpath, 2, file_ident, NULL, NULL, NULL, &num, &w1), 0);
    /* The first batch's graph, kept to compare with a torn second batch. */
    size_t len1;
    uint8_t *after1 = slurp(dpath, &len1);
    uint32_t *map1 = malloc(ALL * sizeof *map1);
    assert_non_null(map1);
    for (uint32_t i = 0; i < ALL; i++) map1[i] = HNSW_FILE_NONE;
    for (uint32_t s = 0; s < h->cap; s++)
        if (h->level[s] != HNSW_ABSENT) map1[num.no[s]] = s;
    for (uint32_t s = N + 50; s < N + 80; s++) assert_int_equal(hnsw_insert(h, d.slots, ALL, s), 0);
    hnsw_mark_deleted(h, 40);
    assert_int_equal(hnsw_delta_append(h, d.slots, ALL, dpath, 3, file_ident, NULL, NULL, NULL, &num, &w2), 0);
    assert_int_equal(hnsw_delta_estimate(h, &num, 100), 56); /* nothing changed since: an empty batch */

    size_t clen, dlen;
    uint8_t *ck = slurp(path, &clen), *dl = slurp(dpath, &dlen);
    print_message("checkpoint %zu bytes, delta batches %llu + %llu bytes\n", clen, (unsigned long long)w1,
                  (unsigned long long)w2);
    assert_true(w1 + w2 == dlen && w1 < clen / 2);
    struct hnsw_file f;
    assert_int_equal(hnsw_file_parse(ck, clen, &f), 0);
    size_t good;
    uint32_t batches;
    assert_int_equal(hnsw_delta_apply(&f, dl, dlen, &good, &batches), 0);
    assert_int_equal(good, dlen);
    assert_int_equal(batches, 2);
    assert_int_equal(f.nnodes, N + 80);
    assert_int_equal(f.lsn, 3);
    uint32_t *map = malloc(ALL * sizeof *map);
    assert_non_null(map);
    for (uint32_t s = 0; s < h->cap; s++)
        if (h->level[s] != HNSW_ABSENT) {
            map[num.no[s]] = s;
            assert_int_equal(f.nodes[num.no[s]].dead, h->deleted[s]);
        }
    assert_same_graph(h, &f, map, d.slots, ALL);

    /* Folded into one checkpoint: the same graph. */
    uint8_t *folded;
    size_t flen;
    assert_int_equal(hnsw_file_fold(ck, clen, dl, dlen, &folded, &flen), 0);
    struct hnsw_file g;
    assert_int_equal(hnsw_file_parse(folded, flen, &g), 0);
    assert_int_equal(g.nnodes, N + 80);
    assert_same_graph(h, &g, map, d.slots, ALL);
    hnsw_file_free(&g);
    free(folded);
    hnsw_file_free(&f);

    /* The second batch torn: the first one's node count and LSN. */
    assert_int_equal(hnsw_file_parse(ck, clen, &f), 0);
    assert_int_equal(hnsw_delta_apply(&f, dl, dlen - 3, &good, &batches), 0);
    assert_int_equal(good, len1);
    assert_int_equal(batches, 1);
    assert_int_equal(f.nnodes, N + 50);
    assert_int_equal(f.lsn, 2);
    hnsw_file_free(&f);
    /* A delta of another checkpoint (its tag altered): ignored whole. */
    dl[16] ^= 1;
    assert_int_equal(hnsw_file_parse(ck, clen, &f), 0);
    assert_int_equal(hnsw_delta_apply(&f, dl, dlen, &good, &batches), 0);
    assert_int_equal(good, 0);
    assert_int_equal(f.nnodes, N);
    hnsw_file_free(&f);

    free(map);
    free(map1);
    free(after1);
    free(ck);
    free(dl);
    unlink(path);
    unlink(dpath);
    hnsw_numbering_free(&num);
    hnsw_free(h);
    tu_data_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_pages_dropped),
        cmocka_unit_test(test_delta_replays_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
