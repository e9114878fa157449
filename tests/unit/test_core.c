/* The core helpers every module shares (src/core): the growable array (grow.c) and the monotonic
 * deadline (clock.c).  A failed grow must leave the array and its capacity as they were. */
#include "test_util.h"

#include "core/clock.h"
#include "core/grow.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Doubles from the first capacity, keeps the contents, and does nothing when the room is there. */
static void test_grow_doubles(void **state)
{
    (void)state;
    int *v = NULL;
    size_t cap = 0;
    v = grow_array(v, &cap, 1, sizeof *v, 4);
    assert_non_null(v);
    assert_int_equal(cap, 4);
    for (int i = 0; i < 4; i++) v[i] = i;
    int *same = grow_array(v, &cap, 4, sizeof *v, 4);
    assert_ptr_equal(same, v);
    assert_int_equal(cap, 4);
    v = grow_array(v, &cap, 5, sizeof *v, 4);
    assert_int_equal(cap, 8);
    v = grow_array(v, &cap, 100, sizeof *v, 4);
    assert_int_equal(cap, 128);
    for (int i = 0; i < 4; i++) assert_int_equal(v[i], i);
    free(v);
}

/* A byte size that would overflow, or a uint32 capacity past UINT32_MAX, fails and changes nothing. */
static void test_grow_overflow_changes_nothing(void **state)
{
    (void)state;
    size_t cap = 0;
    char *v = grow_array(NULL, &cap, 8, 1, 8);
    assert_non_null(v);
    assert_null(grow_array(v, &cap, SIZE_MAX / 2 + 2, 2, 8));
    assert_int_equal(cap, 8);
    uint32_t c32 = 8;
    assert_null(grow_array32(v, &c32, (size_t)UINT32_MAX + 1, 1, 8));
    assert_int_equal(c32, 8);
    free(v);
}

/* A timed wait on a clock_cond_init condition ends at its CLOCK_MONOTONIC deadline, not before. */
static void test_cond_wait_deadline(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    assert_int_equal(clock_cond_init(&cv), 0);
    pthread_mutex_lock(&mu);
    int64_t t0 = clock_mono_ns();
    int rc;
    do rc = clock_cond_wait_ns(&cv, &mu, 20 * 1000000);
    while (rc == 0);
    assert_int_equal(rc, ETIMEDOUT);
    assert_true(clock_mono_ns() - t0 >= 20 * 1000000);
    /* A deadline already past returns at once. */
    assert_int_equal(clock_cond_wait_until(&cv, &mu, clock_mono_ns() - 1000), ETIMEDOUT);
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow_doubles),
        cmocka_unit_test(test_grow_overflow_changes_nothing),
        cmocka_unit_test(test_cond_wait_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
