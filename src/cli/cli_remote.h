/*
 * cli_remote.h — the jvdb CLI as a client of a running server (cli_remote.c).
 *
 * When `jvdb serve` holds the data directory, the CLI sends each command to it over the server's
 * unix socket (<data>/jvdb.sock); with --server URL / JVDB_SERVER it sends them over HTTP(S) to any
 * server, with --api-key / JVDB_API_KEY.  The command files parse and check their arguments as
 * always, then call one function here in place of the library; each fills the same structures the
 * library would, or prints the same lines, so output and exit codes do not depend on where the
 * command ran (docs/CLI.md, "Working beside a running server").
 *
 * Every function returns a CLI exit code (0, or CLI_EXIT_FAIL after printing the server's message)
 * unless it says otherwise.
 */
#ifndef JVDB_CLI_REMOTE_H
#define JVDB_CLI_REMOTE_H

#include "cli/cli.h"

struct cli_remote;

/* Decides where command `cmd` (argv of the command, argv[0] its word) runs: through the server at
 * `url` when given (else $JVDB_SERVER), else through <data>/jvdb.sock when a server answers there,
 * else locally (ctx->remote stays NULL).  A command that cannot work through a server is refused
 * here with a message saying so.  Returns 0 or an exit code. */
int cli_remote_setup(struct cli_ctx *ctx, const char *url, const char *api_key, int argc, char **argv);
void cli_remote_free(struct cli_ctx *ctx);

/* The server's message for the last failed call of cli_remote_put_batch (import reports it with
 * the lines the batch covered, as it does a library error). */
const char *cli_remote_errmsg(struct cli_ctx *ctx);

int cli_remote_stats(struct cli_ctx *ctx, const char *name);
int cli_remote_db_list(struct cli_ctx *ctx);
int cli_remote_db_info(struct cli_ctx *ctx, const char *name);
/* `sync` as typed (already checked), NULL for the default. */
int cli_remote_db_create(struct cli_ctx *ctx, const char *name, uint32_t dim, jvdb_metric metric, const char *sync);
int cli_remote_db_drop(struct cli_ctx *ctx, const char *name);

int cli_remote_dim(struct cli_ctx *ctx, const char *name, uint32_t *dim);
int cli_remote_put(struct cli_ctx *ctx, const char *name, const char *id, const float *v, size_t n, const char *meta,
                   uint64_t *lsn);
/* JVDB-style: returns 0, or -1 with the message in cli_remote_errmsg (nothing printed). */
int cli_remote_put_batch(struct cli_ctx *ctx, const char *name, const jvdb_record *recs, size_t n);
/* *v (dim floats) and *meta (compact JSON text or NULL) are malloc'd. */
int cli_remote_get(struct cli_ctx *ctx, const char *name, const char *id, float **v, uint32_t *dim, char **meta);
/* Exactly one of ids (n of them) and filter_json. */
int cli_remote_delete(struct cli_ctx *ctx, const char *name, const char *const *ids, size_t n, const char *filter_json,
                      uint64_t *deleted);
int cli_remote_count(struct cli_ctx *ctx, const char *name, const char *filter_json, uint64_t *count);
/* Results as jvdb_search gives them (free with jvdb_results_free). */
int cli_remote_search(struct cli_ctx *ctx, const char *name, const float *q, uint32_t dim, const jvdb_search_params *p,
                      const char *filter_json, jvdb_result **res, size_t *n);
/* One compaction; *st as jvdb_compact fills it, `reason` the policy's sentence. */
int cli_remote_compact(struct cli_ctx *ctx, const char *name, bool force, bool full, jvdb_compact_stats *st,
                       char *reason, size_t cap);
/* Calls fn for every vector of `name`, as jvdb_iterate does (lsn 0), in id order: the server's
 * scroll, 1000 a page.  A non-zero return from fn stops it and is returned; -1 after printing. */
int cli_remote_iterate(struct cli_ctx *ctx, const char *name, jvdb_iter_fn fn, void *arg);

/* Backups through a server go to its repository (serve --backup-repo); *out as the library fills it. */
int cli_remote_backup_create(struct cli_ctx *ctx, const char *name, const char *type, const char *description,
                             int level, jvdb_backup_info *out);
/* name NULL: every backup of the repository.  *v is malloc'd.  windows (optional): the answer's
 * "windows" (the restorable window of each database), a new reference. */
int cli_remote_backup_list(struct cli_ctx *ctx, const char *name, jvdb_backup_info **v, size_t *n, json_t **windows);
int cli_remote_backup_show(struct cli_ctx *ctx, const char *id, jvdb_backup_info *out);
/* 0 when the chain is intact; else prints what the server found wrong. */
int cli_remote_backup_verify(struct cli_ctx *ctx, const char *id);
/* *answer: the server's restore answer (databaseId, backupId, lsn, replaced, stats.vectorCount). */
/* target (optional, stolen): the point-in-time fields of the body (latest, toLsn, toTime); id then
 * names the database. */
int cli_remote_backup_restore(struct cli_ctx *ctx, const char *id, const char *as, bool force, json_t *target,
                              json_t **answer);

/* `keys create|list|revoke` with --server: /v1/api-keys (admin), printed as the local command. */
int cli_remote_keys_create(struct cli_ctx *ctx, const char *role, const char *const *dbs, size_t ndb, int64_t expires_s,
                           const char *description);
int cli_remote_keys_list(struct cli_ctx *ctx);
int cli_remote_keys_revoke(struct cli_ctx *ctx, const char *id);

#endif
