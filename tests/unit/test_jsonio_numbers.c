/*
 * test_jsonio_numbers.c — the REST server's decimal-to-float conversion (jf_number_text in
 * src/server/jsonio.c) against the C library, and the fast vector decoders against the general
 * (jansson) ones.
 *
 * Invariant checked: for every JSON number text, jf_number_text gives the double jansson gives
 * (strtod for reals, a 64-bit integer for integers), bit for bit, or declines (NULL) exactly
 * where the general path must decide; so the float32 stored is (float)strtod(text), as before the
 * fast path.  Millions of random decimals are tried (short and long mantissas, every exponent
 * from denormal to overflow, -0), plus edge cases; the float32 result is also compared with
 * strtof, and the only differences allowed are the double-rounding cases (the double lands exactly
 * on a float32 midpoint), which the general path shares.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonio.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* xorshift64*: a reproducible random stream. */
static uint64_t next(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static long failures, strtof_diffs, declined, total;

/* 1 when d is exactly halfway between two adjacent float32 values (where double rounding bites). */
static int is_float_midpoint(double d)
{
    float f = (float)d;
    double lo = (double)f, other = (double)nextafterf(f, d > lo ? INFINITY : -INFINITY);
    return d != lo && d - lo == (other - lo) / 2;
}

/* Checks one JSON number text (NUL-terminated). */
static void check(const char *s)
{
    size_t n = strlen(s);
    double got;
    const char *end = jf_number_text(s, s + n, &got);
    total++;
    int real = strpbrk(s, ".eE") != NULL;
    char *e;
    errno = 0;
    double want = real ? strtod(s, &e) : (double)strtoll(s, &e, 10);
    int lib_ok = e == s + n && errno == 0;
    if (!end) {
        declined++;
        /* Declining is only allowed where the general path decides: out of range or long integers. */
        if (lib_ok && (real || n <= 18)) {
            printf("FAIL declined %s\n", s);
            failures++;
        }
        return;
    }
    if (end != s + n || !lib_ok || memcmp(&got, &want, sizeof got)) {
        printf("FAIL %s: got %.17g want %.17g\n", s, got, want);
        failures++;
        return;
    }
    if (fabs(want) >= ldexp(2.0 - ldexp(1.0, -24), 127)) return; /* refused as out of float32 range */
    float f = (float)got, g = strtof(s, NULL);
    if (!real && !strcmp(s, "-0")) g = 0.0f; /* an integer: jansson's 0 */
    if (memcmp(&f, &g, sizeof f)) {
        if (!is_float_midpoint(got)) {
            printf("FAIL %s: float %.9g but strtof %.9g, not a double-rounding case\n", s, f, g);
            failures++;
        }
        strtof_diffs++;
    }
}

/* A random decimal: sign, 1..25 mantissa digits with the point anywhere, optional exponent. */
static void random_decimal(char *buf)
{
    char *p = buf;
    if (next() & 1) *p++ = '-';
    int digits = 1 + (int)(next() % ((next() & 3) ? 9 : 25));
    int point = (int)(next() % (unsigned)(digits + 1));
    int lead_zero = point == 0;
    if (lead_zero) *p++ = '0';
    for (int i = 0; i < digits; i++) {
        if (i == point && i) *p++ = '.';
        if (i == 0 && lead_zero) *p++ = '.';
        int d = (int)(next() % 10);
        if (i == 0 && !lead_zero && d == 0 && digits > 1) d = 1; /* JSON forbids leading zeros */
        *p++ = (char)('0' + d);
    }
    if (next() & 1) {
        int ex = (int)(next() % 100) - 50;
        if (next() % 8 == 0) ex = (int)(next() % 700) - 350;
        p += sprintf(p, "%c%s%d", (next() & 1) ? 'e' : 'E', ex >= 0 && (next() & 1) ? "+" : "", ex);
    }
    *p = 0;
}

int main(void)
{
    static const char *const edge[] = { "0",
                                        "-0",
                                        "0.0",
                                        "-0.0",
                                        "0e0",
                                        "-0e-5",
                                        "1",
                                        "-1",
                                        "0.1",
                                        "1e-45",
                                        "1.4e-45",
                                        "7e-46",
                                        "7.1e-46",
                                        "1.17549435e-38",
                                        "1.1754942e-38",
                                        "1.17549421e-38",
                                        "3.40282347e+38",
                                        "3.4028235e38",
                                        "3.40282357e38",
                                        "3.4028236e38",
                                        "1e38",
                                        "1e39",
                                        "1e308",
                                        "1.7976931348623157e308",
                                        "1e309",
                                        "1e-308",
                                        "4.9e-324",
                                        "2.4703282292062327e-324",
                                        "1e-400",
                                        "123456789012345678",
                                        "1234567890123456789",
                                        "-123456789012345678",
                                        "9007199254740993",
                                        "9007199254740993.0",
                                        "0.000000000000000000000000000001",
                                        "1e22",
                                        "1e23",
                                        "1e-22",
                                        "1e-23",
                                        "1.00000005960464477539062",
                                        "1.000000059604644775390625",
                                        "1.00000005960464477539063",
                                        "0.3",
                                        "0.30000001192092896",
                                        "16777217",
                                        "16777217.0",
                                        "33554435e-1",
                                        "1.0000000000000000000000001",
                                        "12345678901234567890e-10",
                                        "8.589973e9",
                                        "4.0000003e-38",
                                        NULL };
    for (size_t i = 0; edge[i]; i++) check(edge[i]);
    /* Every float32 printed as the server prints it (%.9g), over a wide spread of bit patterns. */
    char buf[128];
    for (long i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)next();
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f)) continue;
        snprintf(buf, sizeof buf, "%.9g", (double)f);
        if (!strchr(buf, '.') && !strchr(buf, 'e')) strcat(buf, ".0");
        check(buf);
        snprintf(buf, sizeof buf, "%.17g", (double)f * (1 + ldexp((double)(next() % 7) - 3, -30)));
        if (strchr(buf, 'n') || strchr(buf, 'i')) continue;
        check(buf);
    }
    for (long i = 0; i < 1500000; i++) {
        random_decimal(buf);
        check(buf);
    }
    /* Exact float32 midpoints written out in full and nudged by one unit in the last digit. */
    for (long i = 0; i < 20000; i++) {
        uint32_t bits = (uint32_t)(next() % 0x7f000000u);
        float f;
        memcpy(&f, &bits, 4);
        double mid = ((double)f + (double)nextafterf(f, INFINITY)) / 2;
        snprintf(buf, sizeof buf, "%.40e", mid);
        check(buf);
        snprintf(buf, sizeof buf, "%.16e", mid);
        check(buf);
    }
    /* Float printing: the fast digits must give printf's text exactly, for every kind of float. */
    long fmt_checked = 0;
    for (long i = 0; i < 1500000; i++) {
        uint32_t bits = (uint32_t)next();
        if (i % 3 == 0) bits = (bits & 0x807fffffu) | ((uint32_t)(100 + next() % 60) << 23); /* 1e-8 .. 1e10 */
        if (i < 64) bits = (uint32_t)i << 23 | (uint32_t)(i & 1) << 31;
        float f;
        memcpy(&f, &bits, 4);
        if (!isfinite(f)) continue;
        char a[64], b[64];
        int na = jw_format_float_fast(a, sizeof a, f), nb = jw_format_float_ref(b, sizeof b, f);
        fmt_checked++;
        if (na != nb || strcmp(a, b)) {
            printf("FAIL float %.9g (0x%08x): fast '%s' printf '%s'\n", f, bits, a, b);
            failures++;
        }
    }
    static const float fedge[] = { 1.0f,      -1.0f,       0.1f, 1e-5f, 1e-4f,         123456.0f,       1234567.0f,
                                   999999.5f, 9999999.0f,  1e9f, 1e10f, 3.4028235e38f, 1.17549435e-38f, 1.4e-45f,
                                   0.0f,      -0.0f,       0.5f, 2.5f,  100000.0f,     1000000.0f,      1e-16f,
                                   1e27f,     16777216.0f, 0.3f, 0.7f,  65504.0f };
    for (size_t i = 0; i < sizeof fedge / sizeof fedge[0]; i++) {
        char a[64], b[64];
        jw_format_float_fast(a, sizeof a, fedge[i]);
        jw_format_float_ref(b, sizeof b, fedge[i]);
        if (strcmp(a, b)) {
            printf("FAIL float edge %.9g: fast '%s' printf '%s'\n", fedge[i], a, b);
            failures++;
        }
    }
    printf("%ld floats printed as printf prints them\n", fmt_checked);
    printf("%ld numbers: %ld declined (strtod/jansson decide), %ld float32 differ from strtof "
           "(double rounding, as the general path), %ld failures\n",
           total, declined, strtof_diffs, failures);
    return failures ? 1 : 0;
}
