/*
 * validate.h — the invariants every stored record satisfies, checked at every way in.
 *
 * put, put_batch, restore and segment loading all call these, so a record that one entry point would
 * refuse can never come in through another.  Each check takes a `where` prefix ("record 3: ") that
 * starts its message, sets the thread's error message, and returns JVDB_EINVAL (JVDB_OK when fine).
 */
#ifndef JVDB_STORE_VALIDATE_H
#define JVDB_STORE_VALIDATE_H

#include "jvdb.h"

#include <stddef.h>
#include <stdint.h>

/* The largest squared Euclidean norm a stored vector or a query may have.  Any two vectors within it
 * have a squared distance (at most 4x this) and an inner product that float32 holds with room to
 * spare, so no score overflows to infinity and no ranking is wrong. */
#define REC_MAX_SQUARED_NORM (3.4028234663852886e38 / 8.0)

/* An id: 1..JVDB_MAX_ID_LEN bytes of valid UTF-8 (shortest form, no surrogates, at most U+10FFFF)
 * with no control character (U+0000-U+001F, U+007F-U+009F).  `len` is the id's byte length, so ids
 * read from files with embedded NULs are refused rather than cut short. */
int rec_check_id(const char *id, size_t len, const char *where);

/* Metadata: absent (NULL), or at most JVDB_MAX_META_LEN bytes holding one JSON object. */
int rec_check_meta(const char *meta, size_t len, const char *where);

/* A vector's values: every one finite and the squared norm at most REC_MAX_SQUARED_NORM.
 * `what` names the thing in messages ("vector", "query"). */
int rec_check_values(const float *v, uint32_t dim, const char *what, const char *where);

/* A stored vector: rec_check_values, and for a cosine database not the zero vector (it has no
 * direction, so no similarity to anything).  db_name (may be NULL) names the database in messages.
 * put, put_batch and restore (archive_check_record) all check vectors with this. */
int rec_check_vector(const float *v, uint32_t dim, jvdb_metric metric, const char *db_name, const char *where);

/* The one float32 range check for a number read as a double (JSON, CSV): whether it rounds to a
 * finite float32, i.e. |d| is below the midpoint between FLT_MAX and 2^128, so an exported FLT_MAX
 * printed with 9 digits reads back.  Checked before the conversion, which is undefined otherwise. */
int rec_fits_float32(double d);

/* Where an id's bytes first break the alphabet, or `len` when they do not; *why says how. */
size_t rec_id_bad_offset(const char *id, size_t len, const char **why);

#endif
