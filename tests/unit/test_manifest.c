/* test_manifest.c — MANIFEST serialisation round trip, unknown keys kept, damage detected. */
#include <stdlib.h>
#include <string.h>

#include "store/manifest.h"
#include "test_util.h"

static void test_round_trip(void **state)
{
    (void)state;
    struct manifest m;
    memset(&m, 0, sizeof m);
    strcpy(m.name, "db1");
    m.dim = 128;
    m.metric = JVDB_METRIC_DOT;
    m.sync = JVDB_SYNC_INTERVAL;
    m.sync_interval_ms = 200;
    m.segment_max_bytes = 1 << 20;
    uint64_t segs[] = { 3, 7, 9 };
    m.segments = segs;
    m.nsegments = 3;
    m.next_segment = 10;
    m.active = 7;
    m.lsn_floor = 12345;
    m.backup_horizon = 99;
    m.extra = json_pack("{s:i}", "future_field", 5);
    char *text;
    size_t len;
    assert_ok(manifest_serialize(&m, &text, &len));
    json_decref(m.extra);
    struct manifest back;
    assert_ok(manifest_parse(text, len, "test", &back));
    assert_string_equal(back.name, "db1");
    assert_int_equal(back.dim, 128);
    assert_int_equal(back.metric, JVDB_METRIC_DOT);
    assert_int_equal(back.sync, JVDB_SYNC_INTERVAL);
    assert_int_equal(back.sync_interval_ms, 200);
    assert_int_equal(back.nsegments, 3);
    assert_int_equal(back.segments[2], 9);
    assert_int_equal(back.active, 7);
    assert_int_equal(back.lsn_floor, 12345);
    assert_int_equal(back.backup_horizon, 99);
    assert_int_equal(json_integer_value(json_object_get(back.extra, "future_field")), 5);
    manifest_free(&back);
    /* Every single-byte change is caught. */
    for (size_t i = 0; i < len; i++) {
        text[i] ^= 1;
        assert_int_not_equal(manifest_parse(text, len, "test", &back), JVDB_OK);
        text[i] ^= 1;
    }
    free(text);
}

static void test_rejects_nonsense(void **state)
{
    (void)state;
    struct manifest m;
    assert_err(manifest_parse("{}", 2, "M", &m), JVDB_ECORRUPT, "no checksum line");
    const char *body = "{\"format\":1}";
    char buf[256];
    snprintf(buf, sizeof buf, "%s\nxxh3:0000000000000000\n", body);
    assert_err(manifest_parse(buf, strlen(buf), "M", &m), JVDB_ECORRUPT, "checksum mismatch");
}

/* Serialises a one-segment manifest of `metric` written as `format` (0 = the default) and parses it. */
static int format_round_trip(jvdb_metric metric, uint32_t format, struct manifest *back, char **text)
{
    struct manifest m;
    memset(&m, 0, sizeof m);
    strcpy(m.name, "f");
    m.dim = 4;
    m.metric = metric;
    m.format = format;
    m.segment_max_bytes = 1 << 20;
    uint64_t seg = 1;
    m.segments = &seg;
    m.nsegments = 1;
    m.active = 1;
    m.next_segment = 2;
    size_t len;
    assert_ok(manifest_serialize(&m, text, &len));
    return manifest_parse(*text, len, "M", back);
}

/* Format 2 marks cosine databases whose vectors are stored as given; l2 and dot stay format 1, which
 * every version reads; a format-1 cosine database (normalised vectors) keeps its number until the
 * store marks it; a format this version does not know is refused with the range it reads. */
static void test_format_versions(void **state)
{
    (void)state;
    struct manifest back;
    char *text;
    assert_ok(format_round_trip(JVDB_METRIC_COSINE, 0, &back, &text));
    assert_non_null(strstr(text, "\"format\":2,"));
    assert_int_equal(back.format, 2);
    manifest_free(&back);
    free(text);
    assert_ok(format_round_trip(JVDB_METRIC_DOT, 0, &back, &text));
    assert_non_null(strstr(text, "\"format\":1,"));
    assert_int_equal(back.format, 1);
    manifest_free(&back);
    free(text);
    assert_ok(format_round_trip(JVDB_METRIC_COSINE, 1, &back, &text));
    assert_int_equal(back.format, 1);
    assert_int_equal(back.metric, JVDB_METRIC_COSINE);
    manifest_free(&back);
    free(text);
    assert_int_equal(manifest_format_for(JVDB_METRIC_COSINE), 2);
    assert_int_equal(manifest_format_for(JVDB_METRIC_L2), 1);
    assert_err(format_round_trip(JVDB_METRIC_L2, 3, &back, &text), JVDB_ECORRUPT,
               "M: unsupported format 3 (this version reads 1 to 2)");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rejects_nonsense),
        cmocka_unit_test(test_format_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
