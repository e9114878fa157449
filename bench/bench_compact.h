#ifndef JVDB_BENCH_COMPACT_H
#define JVDB_BENCH_COMPACT_H
/*
 * bench_compact.h — what the compaction benchmark's two programs (bench_compact for libjvdb,
 * bench_sqlite_vacuum for SQLite) must agree on so they measure the same rows: which rows are
 * deleted.  A row's fate is a pure function of (seed, row), like datagen's rows, so neither program
 * needs the other's list and any fraction can be asked for.
 */
#include <stdint.h>

/* SplitMix64's finaliser: a well-mixed 64-bit hash of the row number. */
static inline uint64_t bench_cd_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Whether row `row` is among the deleted fraction `frac` (0..1) of the data set with this seed.
 * Scattered rather than a contiguous range: deletes in a real database hit every segment. */
static inline int bench_cd_deleted(uint64_t seed, uint64_t row, double frac)
{
    uint64_t h = bench_cd_mix(bench_cd_mix(seed ^ 0x636f6d70616374ull) + row);
    return (double)(h >> 11) * 0x1.0p-53 < frac;
}

#endif
