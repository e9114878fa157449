/*
 * fuzz_backup_archive.c — libFuzzer target for the backup archive reader (src/backup/archive.c):
 * zstd framing, stream header, records, trailer — everything a restore reads from a repository.
 * The input is served as the data object of a backup whose metadata matches the seed archive
 * (fuzz_seedgen makes it: dimension 4, l2, a full backup); the SHA-256 check is skipped so that
 * mutations reach the decoder and the record checks behind it.
 */
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct mem_reader {
    struct repo_reader base;
    const uint8_t *p;
    size_t left;
};

static int mem_read(struct repo_reader *r, void *buf, size_t cap, size_t *got)
{
    struct mem_reader *m = (struct mem_reader *)r;
    size_t n = cap < m->left ? cap : m->left;
    if (n > 4096) n = 4096; /* small reads exercise the streaming paths */
    memcpy(buf, m->p, n);
    m->p += n;
    m->left -= n;
    *got = n;
    return JVDB_OK;
}

static void mem_close(struct repo_reader *r) { (void)r; }

static int count_chunk(void *arg, const void *recs, size_t len, size_t nrecs)
{
    (void)recs;
    size_t *total = arg;
    *total += nrecs;
    return len % 64 != 0; /* the reader promises whole 64-byte aligned records */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mem_reader rd = { { mem_read, mem_close }, data, size };
    struct backup_meta expect;
    memset(&expect, 0, sizeof expect);
    strcpy(expect.id, "20260101T000000Z-full-1");
    strcpy(expect.database, "s");
    expect.type = JVDB_BACKUP_FULL;
    expect.dim = 4;
    expect.metric = JVDB_METRIC_L2;
    expect.lsn_from = 0;
    expect.lsn_to = 6;
    expect.put_count = 4;       /* the seed's live vectors */
    expect.stored_bytes = size; /* the raw size stays unknown, so even the seed fails the last check */
    expect.format_version = BACKUP_FORMAT_VERSION;
    size_t total = 0;
    struct archive_read_result res;
    int rc = archive_read(&rd.base, &expect, count_chunk, &total, NULL, &res);
    if (rc == 1) abort();
    return 0;
}
