#ifndef JVDB_STORE_BULK_H
#define JVDB_STORE_BULK_H
/* Many-vector writes built on db_write_ops (bulk.c), shared with the filtered forms in src/search. */
#include <jansson.h>

#include "store/db.h"

/* Applies an RFC 7396 merge patch (an object; a null value removes the key) to metadata `meta`
 * (meta_len bytes, 0 = none) and returns the malloc'd JSON text of the result (NULL when empty). */
int bulk_merge_meta(const char *meta, size_t meta_len, const json_t *patch, char **out);
/* Parses and checks a merge patch: a JSON object. */
int bulk_parse_patch(const char *patch_json, json_t **out);
#endif
