/* TEMPORARY STUB -- never committed. */
#include "backup/wal.h"
#include <stdlib.h>
int wal_list(jvdb_repo *r, const char *db, struct wal_entry **out, size_t *n)
{ (void)r; (void)db; *out = NULL; *n = 0; return 0; }
int wal_path(const struct wal_entry *ents, size_t n, int64_t incarnation, uint64_t base_lsn, size_t **idx, size_t *k)
{ (void)ents; (void)n; (void)incarnation; (void)base_lsn; *idx = NULL; *k = 0; return 0; }
int wal_read(jvdb_repo *r, const char *db, const struct wal_entry *e, uint32_t dim, jvdb_metric metric,
             archive_chunk_fn fn, void *arg)
{ (void)r; (void)db; (void)e; (void)dim; (void)metric; (void)fn; (void)arg; return 0; }
