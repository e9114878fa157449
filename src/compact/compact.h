#ifndef JVDB_COMPACT_COMPACT_H
#define JVDB_COMPACT_COMPACT_H
/*
 * What compact.c, policy.c and service.c share.  A database is compacted by one run at a time: a
 * run first claims the database's `compacting` flag and releases it when done.
 */
#include "jvdb.h"
#include "store/segment.h"

void compact_resolve_policy(jvdb_db *db, const jvdb_compact_policy *given, jvdb_compact_policy *out);
int compact_db_has_policy(jvdb_db *db);
/* Adds one finished compaction's numbers to running totals (the compactor's, the server's log). */
void compact_totals_add(jvdb_compactor_totals *t, const jvdb_compact_stats *st);
/* Whether partial compaction takes segment s (small_count: sealed segments under a quarter size). */
int compact_segment_wanted(const jvdb_compact_policy *p, uint64_t segment_max, const struct segment *s,
                           int small_count);
/* Claims the database for one compaction run: 1 if claimed, 0 if another run holds it. */
int compact_claim(jvdb_db *db);
/* jvdb_compact on a database the caller has claimed; releases the claim in every case. */
int compact_claimed(jvdb_db *db, const jvdb_compact_options *opts, jvdb_compact_stats *out);
#endif
