/* grow.c — the growable array every module uses (arrays of segments, slots, records, names).  Invariant: a
 * failed grow changes nothing, so the caller's array and count stay valid and it can report and return. */
#include "core/grow.h"

#include <stdlib.h>

/* The capacity grow_array moves to: cap doubled (first when 0) until it holds need; 0 if that overflows. */
static size_t grow_next(size_t cap, size_t need, size_t size, size_t first, size_t max)
{
    if (need > max) return 0;
    size_t n = cap ? cap : (first ? first : 1);
    while (n < need) n = n > max / 2 ? max : n * 2;
    if (n > max || n > SIZE_MAX / size) return 0;
    return n;
}

void *grow_array(void *arr, size_t *cap, size_t need, size_t size, size_t first)
{
    if (need <= *cap && arr) return arr;
    size_t n = grow_next(*cap, need, size, first, SIZE_MAX);
    if (!n) return NULL;
    void *p = realloc(arr, n * size);
    if (!p) return NULL;
    *cap = n;
    return p;
}

void *grow_array32(void *arr, uint32_t *cap, size_t need, size_t size, size_t first)
{
    if (need <= *cap && arr) return arr;
    size_t n = grow_next(*cap, need, size, first, UINT32_MAX);
    if (!n) return NULL;
    void *p = realloc(arr, n * size);
    if (!p) return NULL;
    *cap = (uint32_t)n;
    return p;
}
