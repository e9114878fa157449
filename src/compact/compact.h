#ifndef JVDB_COMPACT_COMPACT_H
#define JVDB_COMPACT_COMPACT_H
#include "jvdb.h"
#include "store/segment.h"

void compact_resolve_policy(jvdb_db *db, const jvdb_compact_policy *given, jvdb_compact_policy *out);
int compact_db_has_policy(jvdb_db *db);
/* Whether partial compaction takes segment s (small_count: sealed segments under a quarter size). */
int compact_segment_wanted(const jvdb_compact_policy *p, uint64_t segment_max, const struct segment *s, int small_count);
#endif
