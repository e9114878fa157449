#ifndef JVDB_BENCH_UTIL_H
#define JVDB_BENCH_UTIL_H
/*
 * Pieces shared by the ingest benchmark programs: the command line they have in common, the
 * generated data set with its ids, clocks, /proc readings and a one-line JSON result printer that
 * bench/run-ingest parses.
 */
#include <stddef.h>
#include <stdint.h>

#include "datagen.h"

typedef struct bench_opts {
    const char *dir;  /* working directory (created if missing) */
    dg_spec data;     /* what to generate */
    uint32_t batch;   /* rows per batch / transaction */
    const char *meta; /* "none" or "small" ({"cluster":N}) */
} bench_opts;

void bench_opts_default(bench_opts *o);
/* Consumes argv[*i] (and its value) if it is a common option; returns 1 if consumed, 0 if not
 * recognised.  Exits with a message on a bad value. */
int bench_parse_common(int argc, char **argv, int *i, bench_opts *o);
/* The help text for the common options. */
const char *bench_common_usage(void);
/* mkdir -p of o->dir; exits on failure. */
void bench_make_dir(const char *dir);

/* The generated rows held in memory, ready to hand to an engine. */
typedef struct bench_data {
    uint64_t n;
    uint32_t dim;
    float *vectors; /* n * dim */
    char *id_buf;   /* "v<row>\0" strings back to back */
    char **ids;     /* n pointers into id_buf */
    char *meta_buf;
    char **metas; /* NULL when meta is "none" */
    double gen_seconds;
} bench_data;

/* Generates everything before the clock starts, so generation never counts as ingest time. */
void bench_data_make(const bench_opts *o, bench_data *d);
void bench_data_free(bench_data *d);

double bench_now(void); /* CLOCK_MONOTONIC seconds */
/* CPU time this process has used so far. */
void bench_cpu_times(double *user_s, double *sys_s);

/* The timed region of a benchmark: wall time and what the process used meanwhile.  Involuntary
 * context switches say how often other work on the machine took the CPU away, which is the noise
 * that the medians are there to absorb. */
typedef struct bench_region {
    double t0, seconds;
    double user_s, sys_s;
    long minor_faults, vol_cs, invol_cs;
    long long write_bytes;       /* /proc/self/io write_bytes; -1 if unreadable */
    long long write_bytes_start; /* the reading at begin (internal) */
} bench_region;

/* Starts the clock (and perf sampling, see bench_perf_enable). */
void bench_region_begin(bench_region *r);
/* Stops both and fills the deltas. */
void bench_region_end(bench_region *r);
/* Adds ingest_s, the rusage deltas and proc_write_bytes to the JSON line. */
void bench_json_region(const bench_region *r);
/* A "Key:   N kB" field of /proc/self/status in kB, or -1. */
long bench_proc_status_kb(const char *key);
/* write_bytes of /proc/self/io: bytes this process caused to be sent to storage, or -1. */
long long bench_proc_write_bytes(void);
/* Size of a file in bytes, 0 if it does not exist. */
uint64_t bench_file_size(const char *path);

/* Batch latencies: percentile p (0..100) of an array of seconds, which gets sorted. */
double bench_percentile(double *v, size_t n, double p);

/* One JSON object on one line of stdout: begin, fields, end. */
void bench_json_begin(void);
void bench_json_str(const char *key, const char *value);
void bench_json_num(const char *key, double value);
void bench_json_int(const char *key, long long value);
void bench_json_end(void);
/* The fields every result carries: build type, data set and options. */
void bench_json_common(const bench_opts *o, const bench_data *d);

/* Brackets the timed region for `perf record --delay=-1 --control fd:CTL,ACK`: when the environment
 * names those descriptors in BENCH_PERF_CTL_FD / BENCH_PERF_ACK_FD, these tell perf to start and stop
 * sampling, so a profile shows the measured work and not data generation or teardown.  No-ops
 * otherwise. */
void bench_perf_enable(void);
void bench_perf_disable(void);

/* Prints "bench: <message>: <strerror>" (errnum != 0) and exits 1. */
void bench_die(int errnum, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#endif
