/*
 * test_hnsw_file.c — loading the saved HNSW graph file (src/search/hnsw_persist.c) keeps memory
 * bounded: a file mapped for loading is never resident whole beside the graph it becomes.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_file_pages_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
