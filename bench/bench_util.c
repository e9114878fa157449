/*
 * bench_util.c — owns what the ingest benchmarks share: option parsing, the in-memory data set,
 * clocks and /proc readings, and the JSON result line.  Keeping these in one place is what makes
 * the jvdb and SQLite programs measure the same thing the same way.
 */
#include "bench_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef BENCH_BUILD_TYPE
#define BENCH_BUILD_TYPE "unknown"
#endif

void bench_die(int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (errnum) fprintf(stderr, ": %s", strerror(errnum));
    fputc('\n', stderr);
    exit(1);
}

void bench_opts_default(bench_opts *o)
{
    o->dir = NULL;
    dg_spec_default(&o->data);
    o->batch = 1000;
    o->meta = "none";
}

static unsigned long long bench_parse_u64(const char *opt, const char *s, unsigned long long min)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < min) bench_die(0, "bad value '%s' for %s", s, opt);
    return v;
}

const char *bench_common_usage(void)
{
    return "  --dir DIR         working directory (required; created if missing)\n"
           "  --n N             rows (default 1000000)\n"
           "  --dim D           dimension (default 128)\n"
           "  --clusters C      gaussian clusters (default 1000)\n"
           "  --seed S          generator seed (default 42)\n"
           "  --batch B         rows per batch / transaction (default 1000)\n"
           "  --meta none|small metadata per row: none, or {\"cluster\":N} (default none)\n";
}

int bench_parse_common(int argc, char **argv, int *i, bench_opts *o)
{
    const char *a = argv[*i];
    static const char *const with_value[] = { "--dir", "--n", "--dim", "--clusters", "--seed", "--batch", "--meta" };
    int known = 0;
    for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(a, with_value[k]);
    if (!known) return 0;
    if (*i + 1 >= argc) bench_die(0, "%s needs a value", a);
    const char *v = argv[++*i];
    if (!strcmp(a, "--dir")) o->dir = v;
    else if (!strcmp(a, "--n")) o->data.n = bench_parse_u64(a, v, 1);
    else if (!strcmp(a, "--dim")) o->data.dim = (uint32_t)bench_parse_u64(a, v, 1);
    else if (!strcmp(a, "--clusters")) o->data.clusters = (uint32_t)bench_parse_u64(a, v, 1);
    else if (!strcmp(a, "--seed")) o->data.seed = bench_parse_u64(a, v, 0);
    else if (!strcmp(a, "--batch")) o->batch = (uint32_t)bench_parse_u64(a, v, 1);
    else if (!strcmp(v, "none") || !strcmp(v, "small")) o->meta = v;
    else bench_die(0, "bad value '%s' for --meta (expected none or small)", v);
    return 1;
}

void bench_make_dir(const char *dir)
{
    char *p = strdup(dir);
    if (!p) bench_die(ENOMEM, "strdup");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) bench_die(errno, "cannot create %s", p);
        *s = '/';
    }
    if (mkdir(p, 0755) < 0 && errno != EEXIST) bench_die(errno, "cannot create %s", p);
    free(p);
}

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One generator thread's share of the rows.  Rows are independent (datagen's promise), so the split
 * changes nothing in the output, only how long the wait before the measurement is. */
typedef struct gen_part {
    const dg_gen *g;
    bench_data *d;
    uint64_t first, end;
    uint32_t *cluster; /* per row, for the metadata */
} gen_part;

static void *gen_part_main(void *arg)
{
    gen_part *p = arg;
    for (uint64_t r = p->first; r < p->end; r++) p->cluster[r] = dg_row(p->g, r, p->d->vectors + r * p->d->dim);
    return NULL;
}

void bench_data_make(const bench_opts *o, bench_data *d)
{
    memset(d, 0, sizeof *d);
    double t0 = bench_now();
    dg_gen *g;
    if (dg_open(&o->data, &g) < 0) bench_die(errno, "cannot set up the generator");
    d->n = o->data.n;
    d->dim = o->data.dim;
    d->vectors = malloc(d->n * d->dim * sizeof(float));
    /* "v" + up to 20 digits + NUL per id. */
    d->id_buf = malloc(d->n * 22);
    d->ids = malloc(d->n * sizeof *d->ids);
    uint32_t *cluster = malloc(d->n * sizeof *cluster);
    if (!d->vectors || !d->id_buf || !d->ids || !cluster)
        bench_die(ENOMEM, "cannot hold %llu rows in memory", (unsigned long long)d->n);

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nthreads = ncpu < 1 ? 1 : ncpu > 16 ? 16 : (size_t)ncpu;
    gen_part parts[16];
    pthread_t tids[16];
    for (size_t t = 0; t < nthreads; t++) {
        parts[t] = (gen_part){ g, d, d->n * t / nthreads, d->n * (t + 1) / nthreads, cluster };
        if (t && pthread_create(&tids[t], NULL, gen_part_main, &parts[t]) != 0) bench_die(errno, "pthread_create");
    }
    gen_part_main(&parts[0]);
    for (size_t t = 1; t < nthreads; t++) pthread_join(tids[t], NULL);
    dg_close(g);

    int with_meta = !strcmp(o->meta, "small");
    if (with_meta) {
        d->meta_buf = malloc(d->n * 32);
        d->metas = malloc(d->n * sizeof *d->metas);
        if (!d->meta_buf || !d->metas) bench_die(ENOMEM, "cannot hold the metadata in memory");
    }
    char *ip = d->id_buf, *mp = d->meta_buf;
    for (uint64_t r = 0; r < d->n; r++) {
        d->ids[r] = ip;
        ip += sprintf(ip, "v%llu", (unsigned long long)r) + 1;
        if (with_meta) {
            d->metas[r] = mp;
            mp += sprintf(mp, "{\"cluster\":%u}", cluster[r]) + 1;
        }
    }
    free(cluster);
    d->gen_seconds = bench_now() - t0;
}

void bench_data_free(bench_data *d)
{
    free(d->vectors);
    free(d->id_buf);
    free(d->ids);
    free(d->meta_buf);
    free(d->metas);
    memset(d, 0, sizeof *d);
}

long bench_proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    size_t klen = strlen(key);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

long long bench_proc_write_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    if (!f) return -1;
    char line[128];
    long long v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "write_bytes:", 12)) v = strtoll(line + 12, NULL, 10);
    fclose(f);
    return v;
}

uint64_t bench_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *v, size_t n, double p)
{
    if (n == 0) return 0.0;
    qsort(v, n, sizeof *v, bench_cmp_double);
    /* Nearest rank: the smallest value with at least p% of the samples at or below it. */
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

static int json_fields;

void bench_json_begin(void)
{
    json_fields = 0;
    fputc('{', stdout);
}

static void bench_json_key(const char *key) { printf("%s\"%s\": ", json_fields++ ? ", " : "", key); }

void bench_json_str(const char *key, const char *value)
{
    bench_json_key(key);
    fputc('"', stdout);
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', stdout);
        if ((unsigned char)*p < 0x20) printf("\\u%04x", (unsigned char)*p);
        else fputc(*p, stdout);
    }
    fputc('"', stdout);
}

void bench_json_num(const char *key, double value)
{
    bench_json_key(key);
    printf("%.9g", value);
}

void bench_json_int(const char *key, long long value)
{
    bench_json_key(key);
    printf("%lld", value);
}

void bench_json_end(void)
{
    fputs("}\n", stdout);
    fflush(stdout);
}

void bench_json_common(const bench_opts *o, const bench_data *d)
{
    bench_json_str("build_type", BENCH_BUILD_TYPE);
    bench_json_int("n", (long long)o->data.n);
    bench_json_int("dim", o->data.dim);
    bench_json_int("clusters", o->data.clusters);
    bench_json_int("seed", (long long)o->data.seed);
    bench_json_int("batch", o->batch);
    bench_json_str("meta", o->meta);
    if (d) bench_json_num("gen_s", d->gen_seconds);
}

static void bench_perf_ctl(const char *cmd)
{
    const char *ctl = getenv("BENCH_PERF_CTL_FD"), *ack = getenv("BENCH_PERF_ACK_FD");
    if (!ctl) return;
    int fd = atoi(ctl);
    if (write(fd, cmd, strlen(cmd)) < 0) return;
    if (ack) {
        /* perf answers "ack\n"; waiting for it makes sure sampling has really switched. */
        char buf[16];
        if (read(atoi(ack), buf, sizeof buf) < 0) return;
    }
}

void bench_perf_enable(void) { bench_perf_ctl("enable\n"); }
void bench_perf_disable(void) { bench_perf_ctl("disable\n"); }

static double bench_tv(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6; }

void bench_cpu_times(double *user_s, double *sys_s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user_s = bench_tv(ru.ru_utime);
    *sys_s = bench_tv(ru.ru_stime);
}

static void bench_rusage(bench_region *r, int sign)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r->user_s += sign * bench_tv(ru.ru_utime);
    r->sys_s += sign * bench_tv(ru.ru_stime);
    r->minor_faults += sign * ru.ru_minflt;
    r->vol_cs += sign * ru.ru_nvcsw;
    r->invol_cs += sign * ru.ru_nivcsw;
    long long wb = bench_proc_write_bytes();
    if (sign < 0) r->write_bytes_start = wb;
    else r->write_bytes = wb < 0 || r->write_bytes_start < 0 ? -1 : wb - r->write_bytes_start;
}

void bench_region_begin(bench_region *r)
{
    memset(r, 0, sizeof *r);
    bench_rusage(r, -1);
    bench_perf_enable();
    r->t0 = bench_now();
}

void bench_region_end(bench_region *r)
{
    r->seconds = bench_now() - r->t0;
    bench_perf_disable();
    bench_rusage(r, 1);
}

void bench_json_region(const bench_region *r)
{
    bench_json_num("ingest_s", r->seconds);
    bench_json_num("user_s", r->user_s);
    bench_json_num("sys_s", r->sys_s);
    bench_json_int("minor_faults", r->minor_faults);
    bench_json_int("voluntary_cs", r->vol_cs);
    bench_json_int("involuntary_cs", r->invol_cs);
    bench_json_int("proc_write_bytes", r->write_bytes);
}
