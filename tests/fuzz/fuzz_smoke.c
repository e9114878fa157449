/*
 * fuzz_smoke.c — a stand-in for libFuzzer's driver so that every fuzz target also runs in
 * `make test` (gcc, ASan + UBSan): it feeds the target the seed corpus files given on the command
 * line plus a bounded number of random mutations of them (byte flips, truncations, insertions),
 * deterministically.  `make fuzz` runs the real coverage-guided fuzzer for longer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    int iterations = getenv("JVDB_FUZZ_SMOKE") ? atoi(getenv("JVDB_FUZZ_SMOKE")) : 2000;
    int runs = 0;
    if (argc < 2) {
        /* A smoke run without seeds would pass having tested nothing. */
        fprintf(stderr, "usage: %s SEED...: no seed files given\n", argv[0]);
        return 1;
    }
    for (int a = 1; a < argc; a++) {
        FILE *f = fopen(argv[a], "rb");
        if (!f) {
            fprintf(stderr, "cannot open seed %s\n", argv[a]);
            return 2;
        }
        static uint8_t seed[1 << 16], buf[1 << 16];
        size_t n = fread(seed, 1, sizeof seed, f);
        fclose(f);
        LLVMFuzzerTestOneInput(seed, n);
        runs++;
        for (int i = 0; i < iterations / (argc - 1); i++) {
            memcpy(buf, seed, n);
            size_t len = n;
            int edits = 1 + (int)(next() % 8);
            for (int e = 0; e < edits && len; e++) {
                switch (next() % 4) {
                case 0: buf[next() % len] ^= (uint8_t)(1u << (next() % 8)); break;
                case 1: buf[next() % len] = (uint8_t)next(); break;
                case 2: len = next() % (len + 1); break;
                default:
                    if (len < sizeof buf) buf[len++] = (uint8_t)next();
                }
            }
            LLVMFuzzerTestOneInput(buf, len);
            runs++;
        }
    }
    printf("%d inputs run\n", runs);
    return 0;
}
