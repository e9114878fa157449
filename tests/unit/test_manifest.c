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
    uint64_t segs[] = {3, 7, 9};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rejects_nonsense),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
