/*
 * version.c — the library's run-time version (include/jvdb.h, "version").
 *
 * The numbers are those of the header the library was compiled with, so a program can compare
 * jvdb_version_number() with the JVDB_VERSION_NUMBER it was compiled against.
 */
#include "jvdb.h"

const char *jvdb_version(void) { return JVDB_VERSION; }

int jvdb_version_number(void) { return JVDB_VERSION_NUMBER; }
