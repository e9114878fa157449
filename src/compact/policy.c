/*
 * policy.c — when a database deserves compaction (docs/ARCHITECTURE.md 7), and which segments a
 * partial compaction takes.
 *
 * Triggers, checked in this order: dead ratio, large file with some dead space, age.  Every trigger
 * needs reclaimable space and at least `min_records` records in the files, so tiny or clean
 * databases are never rewritten for nothing.  A database may carry its own policy in its MANIFEST
 * (key "compaction"); otherwise the caller's, or the defaults, apply.
 */
#include "compact/compact.h"

#include "core/clock.h"
#include "core/err.h"
#include "store/db.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void jvdb_compact_policy_init(jvdb_compact_policy *p)
{
    p->dead_ratio = 0.30;
    p->large_bytes = 100ull << 20;
    p->large_min_dead_ratio = 0.05;
    p->max_age_s = 7 * 24 * 3600;
    p->min_records = 1000;
    p->max_seconds = 0;
    p->segment_dead_ratio = 0.30;
}

const char *jvdb_compact_trigger_name(jvdb_compact_trigger t)
{
    switch (t) {
    case JVDB_TRIGGER_FORCED: return "forced";
    case JVDB_TRIGGER_DEAD_RATIO: return "dead_ratio";
    case JVDB_TRIGGER_LARGE_FILE: return "large_file";
    case JVDB_TRIGGER_AGE: return "age";
    default: return "none";
    }
}

/* Refuses a policy whose ratios are outside (0, 1] ([0, 1] for the large-segment floor) or whose age or time limit
 * is negative or not finite. */
static int policy_check(const jvdb_compact_policy *p)
{
    if (!(p->dead_ratio > 0 && p->dead_ratio <= 1) || !(p->large_min_dead_ratio >= 0 && p->large_min_dead_ratio <= 1) ||
        !(p->segment_dead_ratio > 0 && p->segment_dead_ratio <= 1))
        return err_set(JVDB_EINVAL, "compaction ratios must be between 0 and 1");
    if (p->max_age_s < 0 || !(p->max_seconds >= 0) || !isfinite(p->max_seconds))
        return err_set(JVDB_EINVAL, "compaction max age and max seconds must not be negative");
    return JVDB_OK;
}

/* Reads the database's policy from its MANIFEST extras. */
static void policy_from_manifest(jvdb_db *db, jvdb_compact_policy *p)
{
    jvdb_compact_policy_init(p);
    json_t *o = db_manifest_extra(db, "compaction");
    if (!json_is_object(o)) {
        json_decref(o);
        return;
    }
    json_t *v;
    if ((v = json_object_get(o, "dead_ratio")) && json_is_number(v)) p->dead_ratio = json_number_value(v);
    if ((v = json_object_get(o, "large_bytes")) && json_is_integer(v)) p->large_bytes = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(o, "large_min_dead_ratio")) && json_is_number(v))
        p->large_min_dead_ratio = json_number_value(v);
    if ((v = json_object_get(o, "max_age_s")) && json_is_integer(v)) p->max_age_s = json_integer_value(v);
    if ((v = json_object_get(o, "min_records")) && json_is_integer(v)) p->min_records = (uint64_t)json_integer_value(v);
    if ((v = json_object_get(o, "max_seconds")) && json_is_number(v)) p->max_seconds = json_number_value(v);
    if ((v = json_object_get(o, "segment_dead_ratio")) && json_is_number(v))
        p->segment_dead_ratio = json_number_value(v);
    json_decref(o);
}

int compact_db_has_policy(jvdb_db *db)
{
    json_t *o = db_manifest_extra(db, "compaction");
    int has = json_is_object(o);
    json_decref(o);
    return has;
}

void jvdb_db_get_compact_policy(jvdb_db *db, jvdb_compact_policy *out) { policy_from_manifest(db, out); }

int jvdb_db_set_compact_policy(jvdb_db *db, const jvdb_compact_policy *p)
{
    int rc = policy_check(p);
    if (rc) return rc;
    json_t *o = json_pack("{s:f, s:I, s:f, s:I, s:I, s:f, s:f}", "dead_ratio", p->dead_ratio, "large_bytes",
                          (json_int_t)p->large_bytes, "large_min_dead_ratio", p->large_min_dead_ratio, "max_age_s",
                          (json_int_t)p->max_age_s, "min_records", (json_int_t)p->min_records, "max_seconds",
                          p->max_seconds, "segment_dead_ratio", p->segment_dead_ratio);
    if (!o) return err_set(JVDB_ENOMEM, "out of memory");
    return db_set_manifest_extra(db, "compaction", o);
}

void compact_resolve_policy(jvdb_db *db, const jvdb_compact_policy *given, jvdb_compact_policy *out)
{
    if (given) *out = *given;
    else jvdb_db_get_compact_policy(db, out);
}

int jvdb_needs_compaction(jvdb_db *db, const jvdb_compact_policy *given, jvdb_compact_trigger *why, char *reason,
                          size_t cap)
{
    jvdb_compact_policy p;
    compact_resolve_policy(db, given, &p);
    jvdb_stats st;
    *why = JVDB_TRIGGER_NONE;
    char dummy[8];
    if (!reason) {
        reason = dummy;
        cap = sizeof dummy;
    }
    snprintf(reason, cap, "no trigger fired");
    if (jvdb_stats_get(db, &st) != JVDB_OK) return 0;
    uint64_t records = st.live_records + st.dead_records;
    /* Reclaimable: dead bytes outside the active segment (which is sealed first, so all count). */
    if (st.dead_bytes == 0) {
        snprintf(reason, cap, "nothing to reclaim");
        return 0;
    }
    if (records < p.min_records) {
        snprintf(reason, cap, "%llu records < min_records %llu", (unsigned long long)records,
                 (unsigned long long)p.min_records);
        return 0;
    }
    if (st.dead_ratio >= p.dead_ratio) {
        *why = JVDB_TRIGGER_DEAD_RATIO;
        snprintf(reason, cap, "dead ratio %.3f >= %.3f", st.dead_ratio, p.dead_ratio);
        return 1;
    }
    if (st.file_bytes >= p.large_bytes && st.dead_ratio >= p.large_min_dead_ratio) {
        *why = JVDB_TRIGGER_LARGE_FILE;
        snprintf(reason, cap, "%llu bytes >= %llu with dead ratio %.3f >= %.3f", (unsigned long long)st.file_bytes,
                 (unsigned long long)p.large_bytes, st.dead_ratio, p.large_min_dead_ratio);
        return 1;
    }
    int64_t last = db_last_compaction_ns(db);
    double age = (double)(clock_wall_ns() - last) / 1e9;
    if (p.max_age_s > 0 && age >= (double)p.max_age_s) {
        *why = JVDB_TRIGGER_AGE;
        snprintf(reason, cap, "%.0f s since the last compaction >= %lld s", age, (long long)p.max_age_s);
        return 1;
    }
    snprintf(reason, cap, "dead ratio %.3f < %.3f", st.dead_ratio, p.dead_ratio);
    return 0;
}

int compact_segment_wanted(const jvdb_compact_policy *p, uint64_t segment_max, const struct segment *s, int small_count)
{
    /* Sealed, so the size is fixed; live_bytes falls while writers overwrite (atomics). */
    uint64_t size = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE),
             live = __atomic_load_n(&s->live_bytes, __ATOMIC_RELAXED);
    if (size <= SEG_HEADER_SIZE) return 1; /* empty: nothing to copy, the file just goes */
    if (live > size - SEG_HEADER_SIZE) live = size - SEG_HEADER_SIZE;
    double dead = (double)(size - SEG_HEADER_SIZE - live) / (double)size;
    if (dead >= p->segment_dead_ratio) return 1;
    /* Small neighbours are merged so that many small files do not accumulate. */
    return small_count >= 2 && size < segment_max / 4;
}
