#ifndef JVDB_CORE_CLOCK_H
#define JVDB_CORE_CLOCK_H
#include <stdint.h>
int64_t clock_wall_ns(void); /* CLOCK_REALTIME in ns */
int64_t clock_mono_ns(void); /* CLOCK_MONOTONIC in ns */
#endif
