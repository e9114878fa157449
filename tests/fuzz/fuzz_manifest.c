/*
 * fuzz_manifest.c — libFuzzer target for the MANIFEST parser (src/store/manifest.c).  Inputs whose
 * checksum line is wrong are rejected early, so the target also re-signs the JSON part: the first
 * line of the input is taken as the JSON, and a correct "xxh3:" line is appended, to reach the JSON
 * field validation behind the checksum.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "store/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct manifest m;
    if (manifest_parse((const char *)data, size, "fuzz", &m) == JVDB_OK) manifest_free(&m);
    const uint8_t *nl = memchr(data, '\n', size);
    size_t json_len = nl ? (size_t)(nl - data) : size;
    char *signed_copy = malloc(json_len + 32);
    if (!signed_copy) return 0;
    memcpy(signed_copy, data, json_len);
    int n = snprintf(signed_copy + json_len, 32, "\nxxh3:%016" PRIx64 "\n", (uint64_t)XXH3_64bits(data, json_len));
    if (manifest_parse(signed_copy, json_len + (size_t)n, "fuzz", &m) == JVDB_OK) {
        char *out;
        size_t len;
        if (manifest_serialize(&m, &out, &len) == JVDB_OK) {
            struct manifest back;
            if (manifest_parse(out, len, "fuzz-roundtrip", &back) != JVDB_OK) abort(); /* must round-trip */
            manifest_free(&back);
            free(out);
        }
        manifest_free(&m);
    }
    free(signed_copy);
    return 0;
}
