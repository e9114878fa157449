#ifndef JVDB_SEARCH_FILTER_H
#define JVDB_SEARCH_FILTER_H
#include <jansson.h>
#include <stddef.h>

#include "jvdb.h"

/* Compiles an already-parsed JSON filter (the server hands over its request's "filters" object). */
int filter_from_json(const json_t *doc, jvdb_filter **out);
/* 1 when the metadata (JSON object bytes, possibly none) satisfies every condition. */
int filter_match(const jvdb_filter *f, const char *meta, size_t meta_len);
#endif
