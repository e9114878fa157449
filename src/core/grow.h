#ifndef JVDB_CORE_GROW_H
#define JVDB_CORE_GROW_H
#include <stddef.h>
#include <stdint.h>

/* The one growable-array helper.  Returns `arr` reallocated to hold at least `need` elements of `size` bytes,
 * and its new capacity in *cap: *cap doubled (or `first` when *cap is 0) until it holds `need`.  When
 * *cap already holds `need` returns `arr` unchanged.  On failure (out of memory, or a capacity whose byte size
 * would overflow) returns NULL and leaves `arr` and *cap unchanged; the caller reports the error in its own
 * words.  New elements are uninitialised. */
void *grow_array(void *arr, size_t *cap, size_t need, size_t size, size_t first);

/* grow_array for a uint32_t capacity: fails rather than grow the capacity past UINT32_MAX. */
void *grow_array32(void *arr, uint32_t *cap, size_t need, size_t size, size_t first);
#endif
