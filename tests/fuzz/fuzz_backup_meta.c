/*
 * fuzz_backup_meta.c — libFuzzer target for the backup.json parser (src/backup/meta.c), which reads
 * files from a backup repository: untrusted bytes.  A parse that succeeds must serialise back to
 * the very same bytes (the parser only accepts the canonical form).
 */
#include <stdlib.h>
#include <string.h>

#include "backup/backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct backup_meta m;
    struct backup_settings st;
    int has = 0;
    if (meta_parse((const char *)data, size, "fuzz", &m, &st, &has) != JVDB_OK) return 0;
    char *out;
    size_t len;
    if (meta_serialize(&m, has ? &st : NULL, &out, &len) != JVDB_OK) abort();
    backup_settings_free(&st);
    if (len != size || memcmp(out, data, size) != 0) abort();
    free(out);
    return 0;
}
