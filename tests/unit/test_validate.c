/* Record invariants at every entry point (src/store/validate.c): the id alphabet, the vector
 * magnitude bound that keeps float32 scores finite, and metadata that is a JSON object. */
#include "test_util.h"

#include "store/record.h"
#include "store/validate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ids: valid UTF-8 without control characters is accepted; everything else is refused by name. */
static void test_id_alphabet(void **state)
{
    (void)state;
    assert_ok(rec_check_id("plain-id_1", 10, ""));
    const char *text = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \"q\",x";
    assert_ok(rec_check_id(text, strlen(text), ""));
    assert_err(rec_check_id("a\0b", 3, "record 2: "), JVDB_EINVAL, "record 2: id holds a NUL byte at byte 1");
    assert_err(rec_check_id("a\nb", 3, ""), JVDB_EINVAL, "id holds a control character at byte 1");
    assert_err(rec_check_id("a\x7f", 2, ""), JVDB_EINVAL, "control character");
    assert_err(rec_check_id("\xc2\x85", 2, ""), JVDB_EINVAL, "control character"); /* U+0085 (C1) */
    assert_err(rec_check_id("ab\xff", 3, ""), JVDB_EINVAL, "id is not valid UTF-8 at byte 2");
    assert_err(rec_check_id("\xc0\xaf", 2, ""), JVDB_EINVAL, "not valid UTF-8");         /* overlong '/' */
    assert_err(rec_check_id("\xed\xa0\x80", 3, ""), JVDB_EINVAL, "not valid UTF-8");     /* surrogate */
    assert_err(rec_check_id("\xf4\x90\x80\x80", 4, ""), JVDB_EINVAL, "not valid UTF-8"); /* > U+10FFFF */
    assert_err(rec_check_id("\xe2\x82", 2, ""), JVDB_EINVAL, "not valid UTF-8");         /* cut short */
    char *long_id = malloc(2001);
    memset(long_id, 'a', 2000);
    long_id[2000] = '\0';
    assert_err(rec_check_id(long_id, 2000, ""), JVDB_EINVAL, "id is 2000 bytes long; the limit is 1024");
    free(long_id);
}

/* Metadata: a JSON object or nothing; embedded NULs and other JSON values are refused. */
static void test_meta(void **state)
{
    (void)state;
    assert_ok(rec_check_meta(NULL, 0, ""));
    assert_ok(rec_check_meta("{\"a\":[1,2]}", 11, ""));
    assert_err(rec_check_meta("{\"a\":1}\0x", 9, ""), JVDB_EINVAL, "metadata holds a NUL byte");
    assert_err(rec_check_meta("[1]", 3, ""), JVDB_EINVAL, "metadata must be a JSON object");
    assert_err(rec_check_meta("{\"a\":1}, \"x\":{", 14, ""), JVDB_EINVAL, "not valid JSON");
}

/* Through the public API: put refuses ids outside the alphabet and changes nothing. */
static void test_put_refuses_bad_ids(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    jvdb_db *db = tu_create(env, "ids", 4, JVDB_METRIC_L2, 0);
    float v[4] = { 1, 2, 3, 4 };
    assert_err(jvdb_put(db, "tab\there", v, 4, NULL, NULL), JVDB_EINVAL, "control character at byte 3");
    assert_err(jvdb_put(db, "bad\xfe", v, 4, NULL, NULL), JVDB_EINVAL, "not valid UTF-8 at byte 3");
    jvdb_record recs[2] = { { "ok", v, 4, NULL }, { "x\x1b[31m", v, 4, NULL } };
    assert_err(jvdb_put_batch(db, recs, 2, NULL), JVDB_EINVAL, "record 1: id holds a control character");
    assert_int_equal(jvdb_count(db), 0);
    assert_ok(jvdb_put(db, "\xe6\x97\xa5\xe6\x9c\xac", v, 4, "{\"k\":\"line\\nbreak\"}", NULL));
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Issue 9 item 10: vectors so large that their squared distances overflow float32 are refused at put
 * and as queries; vectors just inside the bound are all findable with finite scores, for every metric. */
static void test_magnitude_bound_keeps_scores_finite(void **state)
{
    (void)state;
    char *dir = tu_tempdir();
    jvdb_env *env;
    assert_ok(jvdb_env_open(dir, &env));
    const jvdb_metric metrics[] = { JVDB_METRIC_L2, JVDB_METRIC_DOT, JVDB_METRIC_COSINE };
    const double limit = sqrt(REC_MAX_SQUARED_NORM);
    for (size_t m = 0; m < 3; m++) {
        char name[16];
        snprintf(name, sizeof name, "mag%zu", m);
        jvdb_db *db = tu_create(env, name, 4, metrics[m], 0);
        float huge[4] = { 2e19f, 0, 0, 0 };
        assert_err(jvdb_put(db, "huge", huge, 4, NULL, NULL), JVDB_EINVAL, "vector has magnitude 2e+19");
        /* Opposite vectors at 0.99 of the bound: the largest distance any two stored vectors can have. */
        float a[4] = { (float)(limit * 0.99), 0, 0, 0 }, b[4] = { (float)(-limit * 0.99), 0, 0, 0 };
        float c[4] = { 0, (float)(limit * 0.5), (float)(limit * 0.5), 0 }, d[4] = { 1, 2, 3, 4 };
        assert_ok(jvdb_put(db, "a", a, 4, NULL, NULL));
        assert_ok(jvdb_put(db, "b", b, 4, NULL, NULL));
        assert_ok(jvdb_put(db, "c", c, 4, NULL, NULL));
        assert_ok(jvdb_put(db, "d", d, 4, NULL, NULL));
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.k = 10;
        p.exact = 1;
        jvdb_result *r;
        size_t n;
        assert_err(jvdb_search(db, huge, 4, &p, &r, &n), JVDB_EINVAL, "query has magnitude 2e+19");
        const float *queries[] = { a, b, c, d };
        for (size_t q = 0; q < 4; q++) {
            assert_ok(jvdb_search(db, queries[q], 4, &p, &r, &n));
            assert_int_equal(n, 4);
            for (size_t i = 0; i < n; i++)
                if (!isfinite(r[i].score)) fail_msg("metric %zu query %zu: %s scored %g", m, q, r[i].id, r[i].score);
            jvdb_results_free(r, n);
        }
    }
    jvdb_env_close(env);
    tu_rmdir(dir);
}

/* Issue 9 item 3: a record whose checksum a forger recomputed is still refused when its content
 * breaks what put always enforced (segment load, compaction input and backup archives share this). */
static void test_checksummed_record_with_bad_content_is_refused(void **state)
{
    (void)state;
    _Alignas(64) char buf[256];
    float v[4] = { 1, 2, 3, 4 };
    const char *why = NULL;
    rec_encode(buf, 4, REC_KIND_PUT, "good", 4, v, "{}", 2, 0);
    rec_seal(buf, 1, 0);
    assert_int_equal(rec_check(buf, sizeof buf, 4, &why), REC_OK);
    float nan_v[4] = { 1, NAN, 3, 4 };
    rec_encode(buf, 4, REC_KIND_PUT, "nan", 3, nan_v, NULL, 0, 0);
    rec_seal(buf, 2, 0);
    assert_int_equal(rec_check(buf, sizeof buf, 4, &why), REC_BAD);
    assert_string_equal(why, "vector holds a NaN or infinite value");
    rec_encode(buf, 4, REC_KIND_PUT, "a\0b", 3, v, NULL, 0, 0);
    rec_seal(buf, 3, 0);
    assert_int_equal(rec_check(buf, sizeof buf, 4, &why), REC_BAD);
    assert_string_equal(why, "id holds a NUL byte");
    rec_encode(buf, 4, REC_KIND_DELETE, "x", 1, NULL, "{\0}", 3, 0);
    rec_seal(buf, 4, 0);
    assert_int_equal(rec_check(buf, sizeof buf, 4, &why), REC_BAD);
    assert_string_equal(why, "metadata holds a NUL byte");
}

/* One vector check for put and restore: the cosine zero vector is refused with one message, the
 * values checked as rec_check_values; one float32 range check with its bound at the midpoint above
 * FLT_MAX. */
static void test_vector_check_and_float32_range(void **state)
{
    (void)state;
    float zero[3] = { 0, 0, 0 }, tiny[3] = { 1e-30f, 0, 0 }, nan3[3] = { 1, NAN, 0 };
    assert_ok(rec_check_vector(zero, 3, JVDB_METRIC_L2, "d", ""));
    assert_ok(rec_check_vector(tiny, 3, JVDB_METRIC_COSINE, "d", ""));
    assert_err(rec_check_vector(zero, 3, JVDB_METRIC_COSINE, "cos", "record 1: "), JVDB_EINVAL,
               "record 1: a zero vector has no direction, so cosine database 'cos' cannot store it");
    assert_err(rec_check_vector(zero, 3, JVDB_METRIC_COSINE, NULL, ""), JVDB_EINVAL,
               "a zero vector has no direction, so a cosine database cannot store it");
    assert_err(rec_check_vector(nan3, 3, JVDB_METRIC_COSINE, "cos", ""), JVDB_EINVAL, "vector value 1 is NaN");
    assert_true(rec_fits_float32(3.40282347e+38));
    assert_true(rec_fits_float32(-3.40282347e+38));
    assert_true(rec_fits_float32(0x1.fffffefffffffp+127));
    assert_false(rec_fits_float32(0x1.ffffffp+127));
    assert_false(rec_fits_float32(INFINITY));
    assert_false(rec_fits_float32(NAN));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_alphabet),
        cmocka_unit_test(test_vector_check_and_float32_range),
        cmocka_unit_test(test_meta),
        cmocka_unit_test(test_put_refuses_bad_ids),
        cmocka_unit_test(test_magnitude_bound_keeps_scores_finite),
        cmocka_unit_test(test_checksummed_record_with_bad_content_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
