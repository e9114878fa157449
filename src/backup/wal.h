/* TEMPORARY STUB of the ship engineer's wal.h (contract) -- never committed. */
#ifndef JVDB_BACKUP_WAL_H
#define JVDB_BACKUP_WAL_H
#include "backup/backup.h"
struct wal_entry {
    char name[160];
    int64_t incarnation;
    uint64_t lsn_from, lsn_to;
    int64_t first_time_ns, last_time_ns;
    uint64_t epoch;
    int64_t size;
};
int wal_list(jvdb_repo *r, const char *db, struct wal_entry **out, size_t *n);
int wal_path(const struct wal_entry *ents, size_t n, int64_t incarnation, uint64_t base_lsn, size_t **idx, size_t *k);
int wal_read(jvdb_repo *r, const char *db, const struct wal_entry *e, uint32_t dim, jvdb_metric metric,
             archive_chunk_fn fn, void *arg);
#endif
