/*
 * server.c — `jvdb serve`: start-up and the graceful stop.
 *
 * Start: settings (config.c), the open-file limit raised to fit the connection limit with room to
 * spare for the databases' own files (a flood of connections must never leave a database unable to
 * open a segment), the data directory (its flock makes this the only process using it),
 * server metadata, metrics, the background compactor, then the HTTP daemon; the bound address is
 * printed on stdout ("listening on http://HOST:PORT") for scripts and tests that asked for port 0.
 *
 * Stop: SIGTERM and SIGINT are blocked in every thread (they inherit the mask from here) and taken
 * synchronously by the main thread with sigwait(); POST /v1/admin/shutdown sends SIGTERM to the main
 * thread, so there is exactly one way to stop.  The order is the one that loses nothing: stop
 * accepting and refuse new requests (503), let in-flight requests finish and answer (API
 * compactions are cancelled cleanly), stop the job threads (a job compaction is cancelled
 * cleanly, a backup job finishes; queued jobs stay on record and the next start marks them
 * interrupted), stop the backup scheduler (a backup it is taking finishes)
 * and the compactor (a compaction in progress is abandoned cleanly), then jvdb_env_close() does
 * the final fdatasync and releases the lock.
 *
 * SIGHUP is taken the same way and reloads what an operator rotates without a restart: the TLS
 * certificate and the API key file.  /readyz answers 503 until ready.c has opened every database.
 */
#include "server/server.h"
#include "server/jobs.h"
#include "server/srv.h"

#include "core/clock.h"
#include "core/log.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <errno.h>

/* What the transport calls upward (http.c names neither auth.c nor metrics.c). */
static const struct http_hooks server_http_hooks = { auth_check, metrics_observe };

/* Descriptors kept free of connections: segments, manifests, backups, logs. */
#define SERVER_FD_RESERVE 1024

/* Applies --log-json and --log-level; without --log-level, JVDB_LOG decides if set, else info. */
static void server_set_log_level(const struct server_config *c)
{
    log_set_json(c->log_json);
    if (!c->log_level) {
        /* No --log-level: JVDB_LOG decides if set, else info (a server should say what it does). */
        if (!getenv("JVDB_LOG")) log_set_level(LOG_INFO);
        return;
    }
    enum log_level l = LOG_INFO;
    if (!strcmp(c->log_level, "debug")) l = LOG_DEBUG;
    else if (!strcmp(c->log_level, "warn")) l = LOG_WARN;
    else if (!strcmp(c->log_level, "error")) l = LOG_ERROR;
    log_set_level(l);
}

/* Raises RLIMIT_NOFILE's soft limit to what --max-connections needs; when the hard limit is lower,
 * an explicit --max-connections is an error and the default shrinks to fit (with a warning). */
static int server_fit_nofile(struct server *s)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return 0;
    rlim_t need = (rlim_t)s->cfg.max_connections + SERVER_FD_RESERVE;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        struct rlimit nr = { want, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &nr) == 0) rl.rlim_cur = want;
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need) return 0;
    if (s->cfg.max_connections_set) {
        fprintf(stderr,
                "jvdb serve: --max-connections %u needs %llu open files, but the limit is %llu (hard %llu); raise it "
                "(ulimit -n, systemd LimitNOFILE=) or lower --max-connections\n",
                s->cfg.max_connections, (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max);
        return -1;
    }
    unsigned fit = rl.rlim_cur > SERVER_FD_RESERVE + 16 ? (unsigned)(rl.rlim_cur - SERVER_FD_RESERVE) : 16;
    log_warn("the open-file limit is %llu: serving at most %u connections instead of %u (raise it with ulimit -n "
             "or systemd LimitNOFILE=)",
             (unsigned long long)rl.rlim_cur, fit, s->cfg.max_connections);
    s->cfg.max_connections = fit;
    return 0;
}

/* Starts background compaction with its events logged, unless --compaction-interval is 0; -1 when the
 * compactor cannot start. */
static int server_start_compactor(struct server *s)
{
    if (!s->cfg.compaction_interval_ms) {
        log_info("background compaction is off (--compaction-interval 0)");
        return 0;
    }
    jvdb_compactor_options o;
    jvdb_compactor_options_init(&o);
    o.threads = s->cfg.compaction_threads;
    o.check_interval_ms = (uint32_t)s->cfg.compaction_interval_ms;
    int rc = jvdb_compactor_start(s->env, &o, &s->compactor);
    if (rc != JVDB_OK) {
        log_error("cannot start the compactor: %s", jvdb_errmsg());
        return -1;
    }
    jvdb_compactor_on_event(s->compactor, compact_log_event, s);
    return 0;
}

/* Stops and frees everything the server started, users before what they use: jobs and the threads that
 * touch databases go before the environment closes, the modules' state after it. */
static void server_cleanup(struct server *s)
{
    follow_stop(s); /* first: its thread writes to the databases */
    jobs_free(s);   /* then: jobs hold databases and the repository */
    ship_stop(s);
    ready_stop(s);
    sched_stop(s);
    if (s->compactor) jvdb_compactor_stop(s->compactor);
    s->compactor = NULL;
    jvdb_env_close(s->env);
    s->env = NULL;
    compact_log_free(s);
    backup_free(s);
    metrics_free(s);
    auth_free(s);
    free(s->meta_dir);
    pthread_mutex_destroy(&s->meta_mu);
    config_free(&s->cfg);
}

int server_main(int argc, char **argv, const char *data_dir)
{
    static struct server srv; /* one per process; static so nothing on this stack outlives it */
    struct server *s = &srv;
    memset(s, 0, sizeof *s);
    int rc = config_load(&s->cfg, argc, argv, data_dir);
    if (rc) {
        config_free(&s->cfg);
        return rc == 1 ? 0 : 2;
    }
    server_set_log_level(&s->cfg);
    if (server_fit_nofile(s)) {
        config_free(&s->cfg);
        return 1;
    }
    s->main_thread = pthread_self();
    s->started_wall_ns = clock_wall_ns();
    s->started_mono_ns = clock_mono_ns();

    pthread_mutex_init(&s->meta_mu, NULL);

    /* Before any thread exists, so that all of them inherit the mask. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t stopset;
    sigemptyset(&stopset);
    sigaddset(&stopset, SIGTERM);
    sigaddset(&stopset, SIGINT);
    sigaddset(&stopset, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stopset, NULL);

    struct stat dst;
    /* Kept from before the CLI refused to create one: a first start on a new host makes it. */
    if (stat(s->cfg.data_dir, &dst) != 0 && errno == ENOENT)
        log_info("data directory '%s' does not exist: creating it", s->cfg.data_dir);
    rc = jvdb_env_open(s->cfg.data_dir, &s->env);
    if (rc != JVDB_OK) {
        fprintf(stderr, "jvdb serve: cannot open data directory '%s': %s\n", s->cfg.data_dir, jvdb_errmsg());
        server_cleanup(s);
        return 1;
    }
    s->routes = &routes_main; /* before metrics_init, which sizes its counters by the table */
    if (dbmeta_init(s) || metrics_init(s) || compact_log_init(s) || auth_init(s)) {
        fprintf(stderr, "jvdb serve: cannot prepare '%s/server': %s\n", s->cfg.data_dir, jvdb_errmsg());
        server_cleanup(s);
        return 1;
    }
    dbmeta_prune(s);
    /* The readiness state exists before any HTTP thread can ask for it. */
    if (backup_init(s) || follow_start(s) || server_start_compactor(s) || sched_start(s) || ship_start(s) ||
        ready_start(s) || jobs_init(s) || http_start(s, &server_http_hooks)) {
        http_stop(s);
        fprintf(stderr, "jvdb serve: cannot start (see the log above)\n");
        server_cleanup(s);
        return 1;
    }
    if (!auth_enabled(s) && strncmp(s->cfg.host, "127.", 4) && strcmp(s->cfg.host, "::1") &&
        strcmp(s->cfg.host, "localhost"))
        log_warn("listening on %s without an API key: anyone who can reach it can read, change and drop every "
                 "database (set --api-key or JVDB_API_KEY, or create keys with 'jvdb keys create')",
                 s->cfg.host);
    uint16_t port = http_port(s);
    const char *scheme = s->cfg.tls_cert ? "https" : "http";
    const char *fmt = strchr(s->cfg.host, ':') ? "listening on %s://[%s]:%u\n" : "listening on %s://%s:%u\n";
    printf(fmt, scheme, s->cfg.host, (unsigned)port);
    fflush(stdout);
    log_info("jvdb %s serving '%s' on %s:%u: %u HTTP threads, authentication %s, compaction check every %.1f s",
             JVDB_VERSION, s->cfg.data_dir, s->cfg.host, (unsigned)port, s->cfg.threads, auth_enabled(s) ? "on" : "off",
             (double)s->cfg.compaction_interval_ms / 1000.0);
    log_info("limits: %u connections (%u per address), request head within %.1f s, idle %u s, body %" PRIu64
             " bytes, %" PRIu64 " bytes of bodies held at once",
             s->cfg.max_connections, s->cfg.max_conn_per_ip, (double)s->cfg.header_timeout_ms / 1000.0,
             s->cfg.idle_timeout_s, s->cfg.max_body, s->cfg.max_buffered);

    int sig = 0;
    for (;;) {
        if (sigwait(&stopset, &sig) != 0) continue;
        if (sig != SIGHUP) break;
        log_info("SIGHUP: reloading the TLS certificate and the API key file");
        http_tls_reload(s);
        auth_reload(s, 1);
    }
    log_info("stopping (%s): no new connections, finishing requests in flight", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&s->stopping, 1);
    __atomic_store_n(&s->cancel, 1, __ATOMIC_RELAXED); /* polled by running compactions */
    http_stop(s);
    log_info("stopping the jobs, the backup scheduler and the compactor");
    server_cleanup(s);
    log_info("stopped; data directory closed");
    return 0;
}
