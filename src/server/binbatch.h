/*
 * binbatch.h — the binary body of POST /v1/databases/{id}/vectors/batch
 * (Content-Type: application/octet-stream), for clients that hold float32 arrays and would
 * otherwise spend most of a batch printing and parsing decimal numbers.
 *
 * Layout (all integers unsigned little-endian; docs/API.md "Binary batches"):
 *   offset 0   4 bytes   magic "JVB1"
 *          4   u32       count: vectors in the batch, >= 1
 *          8   u32       dim: values per vector, 1..JVDB_MAX_DIM
 *         12   u32       meta_len: bytes of the metadata sidecar at the end (0 = no metadata)
 *         16   count*dim float32 values, vector after vector (IEEE 754 binary32, little-endian)
 *    then, count times: u16 id length (1..JVDB_MAX_ID_LEN), then the id's bytes (UTF-8)
 *    then meta_len bytes: a JSON array of count entries, each an object or null
 *    and nothing after.
 * Every length is checked against the bytes actually present before it is used; ids, values and
 * metadata then go through the same record rules (src/store/validate.c) as a JSON batch.
 */
#ifndef JVDB_SERVER_BINBATCH_H
#define JVDB_SERVER_BINBATCH_H

#include <stddef.h>

#include "server/jsonio.h"

#define JB_MAGIC      "JVB1"
#define JB_HEADER_LEN 16

/* Decodes a binary batch into *out (count vectors, freed with jf_batch_free).  Returns 0, or -1
 * with a message in err naming what is wrong ("binary batch: ...", "record 3: ...") and the record
 * in *index (-1 when the error is not about one record); nothing is allocated then.  max_depth
 * bounds the nesting of the metadata sidecar's objects, as for JSON bodies. */
int jb_decode(const unsigned char *body, size_t len, unsigned max_depth, struct jf_vector **out, size_t *count,
              long *index, char *err, size_t cap);

#endif
