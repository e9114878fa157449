/*
 * server.h — the REST server's entry point, called by the jvdb program for `jvdb serve`
 * (src/cli/main.c includes this header when it exists).
 */
#ifndef JVDB_SERVER_H
#define JVDB_SERVER_H

/* argv[0] is "serve"; data_dir comes from the global --data option (serve's own --data overrides
 * it).  Runs until SIGTERM, SIGINT or POST /v1/admin/shutdown; returns the process exit status
 * (0 after a clean stop, 1 on a failure to start, 2 for a wrong command line). */
int server_main(int argc, char **argv, const char *data_dir);

#endif
