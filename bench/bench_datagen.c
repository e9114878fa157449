/*
 * bench_datagen.c — owns the command-line front of datagen: writes the clustered data set (or its
 * query stream) as an .fvecs file, for `jvdb import` and for peers that read files (FAISS, hnswlib).
 */
#include "datagen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_datagen OUT.fvecs [--n N] [--dim D] [--clusters C] [--seed S] [--sigma F] [--queries]\n"
            "  Defaults: 1000000 rows of dimension 128 in 1000 clusters, seed 42, sigma 0.35.\n"
            "  --queries writes N vectors of the query stream instead of the data set.\n");
    exit(2);
}

static unsigned long long parse_u64(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) usage();
    return v;
}

int main(int argc, char **argv)
{
    dg_spec s;
    dg_spec_default(&s);
    const char *out = NULL;
    int queries = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--queries")) queries = 1;
        else if (i + 1 < argc && !strcmp(a, "--n")) s.n = parse_u64(argv[++i]);
        else if (i + 1 < argc && !strcmp(a, "--dim")) s.dim = (uint32_t)parse_u64(argv[++i]);
        else if (i + 1 < argc && !strcmp(a, "--clusters")) s.clusters = (uint32_t)parse_u64(argv[++i]);
        else if (i + 1 < argc && !strcmp(a, "--seed")) s.seed = parse_u64(argv[++i]);
        else if (i + 1 < argc && !strcmp(a, "--sigma")) s.sigma = strtof(argv[++i], NULL);
        else if (a[0] != '-' && !out) out = a;
        else usage();
    }
    if (!out) usage();
    dg_gen *g;
    if (dg_open(&s, &g) < 0) {
        fprintf(stderr, "bench_datagen: bad parameters: %s\n", strerror(errno));
        return 1;
    }
    int rc = queries ? dg_write_queries_fvecs(g, s.n, out) : dg_write_fvecs(g, out);
    if (rc < 0) fprintf(stderr, "bench_datagen: cannot write %s: %s\n", out, strerror(errno));
    dg_close(g);
    return rc < 0 ? 1 : 0;
}
