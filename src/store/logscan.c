/*
 * logscan.c — every record after an LSN, read straight from the published segments, for the backup
 * log (src/backup/wal.c ships them verbatim, superseded versions and tombstones included).
 *
 * Invariant: it runs inside the caller's read section and only reads what is published: the segment
 * list, and each segment's bytes below its size (stored with release after the bytes are written),
 * so every record it hands out is complete and stays mapped until the read section ends.  It never
 * takes a lock, so a shipment never waits for writers nor makes them wait.  Also here: the MANIFEST
 * pin by which compaction keeps what the log still needs (db_ship_pin).
 */
#include "store/db.h"

#include "core/err.h"
#include "store/record.h"

int db_records_after(const jvdb_db *db, uint64_t after, uint64_t upto, db_rec_fn fn, void *arg)
{
    const struct db_seglist *l = db_segments(db);
    for (size_t i = 0; i < l->n; i++) {
        const struct segment *s = l->segs[i];
        if (s != l->active && __atomic_load_n(&s->max_lsn, __ATOMIC_RELAXED) <= after) continue;
        uint64_t size = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
        for (uint64_t off = SEG_HEADER_SIZE; off + REC_HEADER_SIZE <= size;) {
            const struct rec_header *h = (const struct rec_header *)(s->map + off);
            if (h->total_len < REC_HEADER_SIZE || h->total_len % REC_ALIGN || h->total_len > size - off)
                return err_set(JVDB_ECORRUPT, "%s: the record at offset %llu has an impossible length %u", s->path,
                               (unsigned long long)off, h->total_len);
            if (h->lsn > after && h->lsn <= upto) {
                int rc = fn(arg, h);
                if (rc) return rc;
            }
            off += h->total_len;
        }
    }
    return JVDB_OK;
}

uint64_t db_ship_pin(jvdb_db *db)
{
    json_t *pin = db_manifest_extra(db, DB_SHIP_PIN_KEY);
    json_t *lsn = json_object_get(pin, "shipped_lsn"), *inc = json_object_get(pin, "incarnation");
    /* A key carried over from another incarnation (restored from a backup's settings) pins nothing. */
    uint64_t v = json_is_integer(lsn) && json_is_integer(inc) && json_integer_value(inc) == db_created_ns(db) &&
                         json_integer_value(lsn) >= 0
                     ? (uint64_t)json_integer_value(lsn)
                     : UINT64_MAX;
    json_decref(pin);
    return v;
}
