/*
 * config.c — `jvdb serve` settings: defaults, an optional JSON config file (--config FILE) and the
 * command-line flags, in that order of precedence (flags win), plus JVDB_API_KEY.
 *
 * The config file is one JSON object whose keys are the flag names without the dashes
 * ({"listen": "127.0.0.1:9000", "threads": 8, "compaction-interval": "30s"}); values may be strings
 * or numbers.  An unknown key is an error, so a typo never silently leaves a default in place.
 * An API key that could never be sent (empty, surrounding blanks, control characters) is refused
 * from every source, JVDB_API_KEY included: a server that was meant to be protected never starts open.
 */
#include "server/srv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:8080"

static const char config_usage[] =
    "Usage: jvdb [--data DIR] serve [OPTIONS]\n"
    "\n"
    "Runs the REST server (JadeVectorDB v1 API, admin API, Prometheus /metrics) on the data directory.\n"
    "\n"
    "Options:\n"
    "  --data DIR                 data directory (default: the global --data, $JVDB_DATA, ./jvdb-data)\n"
    "  --listen HOST:PORT         address to bind (default " CONFIG_DEFAULT_LISTEN "; port 0 = any free port)\n"
    "  --threads N                HTTP worker threads (default: 4 per core, at least 8)\n"
    "  --api-key KEY              bootstrap admin key: X-API-Key: KEY or Authorization: Bearer KEY\n"
    "                             (default: $JVDB_API_KEY); scoped keys: 'jvdb keys'.  With any\n"
    "                             key, every route but /health and /readyz needs one\n"
    "  --max-body SIZE            largest request body (default 32MiB); larger ones get 413\n"
    "  --max-buffered SIZE        memory for request bodies and their decoding, over all connections\n"
    "                             (default 512MiB, at least --max-body); a body beyond it gets 503\n"
    "  --max-connections N        open client connections (default 4096; the open-file limit is\n"
    "                             raised to fit)\n"
    "  --max-connections-per-ip N open connections from one client address (default 256; 0 = no\n"
    "                             limit; behind a reverse proxy every client is the proxy's address)\n"
    "  --header-timeout D         a new connection must send a complete request head within D\n"
    "                             (default 10s), or it is closed\n"
    "  --idle-timeout D           a connection idle this long is closed, and a kept-alive one must\n"
    "                             send its next request head within it (default 60s)\n"
    "  --max-json-depth N         deepest JSON nesting accepted in a request body (default 32)\n"
    "  --compaction-interval D    how often the compactor checks every database, e.g. 30s (default 60s);\n"
    "                             0 = no background compaction (POST .../compact still works)\n"
    "  --compaction-threads N     databases compacted in parallel (default 1)\n"
    "  --shutdown-timeout D       how long a stop waits for in-flight requests (default 30s)\n"
    "  --backup-repo R            backup repository: a directory or s3://bucket/prefix (enables the\n"
    "                             backup routes; S3 credentials from the AWS_* environment)\n"
    "  --repo-key-file F          the backup repository's key: archives encrypted (AES-256-GCM),\n"
    "                             metadata signed (default: $JVDB_REPO_KEY_FILE; none = plain)\n"
    "  --backup-full-every D      scheduled full backup of every database, e.g. 1d (default: none)\n"
    "  --backup-incremental-every D  scheduled incremental backups in between, e.g. 1h (default: none)\n"
    "  --backup-keep N            after each scheduled backup keep the newest N restorable points\n"
    "                             (and what they depend on); 0 = keep all (default)\n"
    "  --backup-keep-daily N      also keep the newest point of each of the last N days (UTC)\n"
    "  --backup-keep-weekly N     also keep the newest point of each of the last N ISO weeks\n"
    "  --backup-continuous D      continuous backup: ship every acknowledged write of every database\n"
    "                             to the repository as log objects within D (e.g. 1s); writers never wait\n"
    "  --backup-backlog-bytes N   unshipped bytes kept while the repository is unreachable (default 1GiB);\n"
    "                             past it the gap is covered by an incremental backup when it is back\n"
    "  --backup-lease D           the fencing lease of continuous backup (default 30s)\n"
    "  --backup-log-fold-bytes N  with --backup-continuous: an incremental backup once the log after\n"
    "                             the newest backup holds N bytes of records (default 256MiB; 0 = never)\n"
    "  --backup-log-fold-objects N  ... or N log objects (default 3600; 0 = never); restore --latest\n"
    "                             then applies only the log after it\n"
    "  --backup-retention D       prune log objects and backups older than D (e.g. 7d), never one a kept\n"
    "                             restore point needs\n"
    "  --backup-drill-every D     restore drill of every database with a backup, e.g. 1d: its newest\n"
    "                             backup restored into $TMPDIR and checked against the live database\n"
    "                             ('jvdb backup drill'); the first at start-up; results in /metrics\n"
    "  --follow R                 a read replica of repository R (a directory or s3://...): restores\n"
    "                             every database's newest state, then applies the log the primary\n"
    "                             ships (--backup-continuous); writes answer 403 READ_ONLY until\n"
    "                             POST /v1/admin/promote\n"
    "  --follow-interval D        how often a replica polls R (default 1s)\n"
    "  --tls-cert FILE            serve HTTPS with this PEM certificate (chain); needs --tls-key;\n"
    "                             both are read again on SIGHUP\n"
    "  --tls-key FILE             the certificate's PEM private key (unencrypted)\n"
    "  --cors-origin ORIGIN       allow browser requests from ORIGIN (https://app.example.com, or *);\n"
    "                             repeatable; preflight (OPTIONS) requests are answered\n"
    "  --log-level LEVEL          debug, info (default, or $JVDB_LOG), warn or error\n"
    "  --log-format text|json     one text line per event (default), or one JSON object per line\n"
    "                             (ts, level, msg; requests also request_id, method, path, status,\n"
    "                             duration_us, key)\n"
    "  --config FILE              JSON object of the same keys without dashes; flags win over it\n"
    "  --help                     this help\n"
    "\n"
    "Durations: 250ms, 30s, 5m, 2h, 1d (plain numbers are seconds).  Sizes: 1048576, 512KiB, 64MiB, 1GiB.\n"
    "Stops gracefully on SIGTERM, SIGINT or POST /v1/admin/shutdown; SIGHUP reloads the TLS\n"
    "certificate and the API key file.\n";

int config_parse_duration(const char *s, uint64_t *ms)
{
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0)) return -1;
    double mult;
    if (!*end || !strcmp(end, "s")) mult = 1000;
    else if (!strcmp(end, "ms")) mult = 1;
    else if (!strcmp(end, "m")) mult = 60e3;
    else if (!strcmp(end, "h")) mult = 3600e3;
    else if (!strcmp(end, "d")) mult = 86400e3;
    else return -1;
    double r = v * mult;
    if (r > 1e15) return -1;
    *ms = (uint64_t)(r + 0.5);
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    if (!s || !*s || *s == '-') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t mult;
    if (!*end || !strcmp(end, "B")) mult = 1;
    else if (!strcmp(end, "K") || !strcmp(end, "KB") || !strcmp(end, "KiB")) mult = 1ull << 10;
    else if (!strcmp(end, "M") || !strcmp(end, "MB") || !strcmp(end, "MiB")) mult = 1ull << 20;
    else if (!strcmp(end, "G") || !strcmp(end, "GB") || !strcmp(end, "GiB")) mult = 1ull << 30;
    else return -1;
    if (v > UINT64_MAX / mult) return -1;
    *bytes = v * mult;
    return 0;
}

/* A plain decimal count (no size suffixes). */
static int config_parse_count(const char *s, uint64_t *n)
{
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *n = v;
    return 0;
}

/* Prints a usage error (fmt takes two strings) and the pointer to --help on stderr; returns 2, the exit
 * status of a bad command line. */
static int config_error(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "jvdb serve: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nRun 'jvdb serve --help' for the options.\n");
    return 2;
}

/* Why `key` cannot be an API key, or NULL: an empty key would mean "no authentication" by
 * accident, and a header value never keeps surrounding blanks or control characters, so such a
 * key could never be matched. */
static const char *config_key_problem(const char *key)
{
    size_t n = strlen(key);
    if (!n) return "is empty (unset it for no authentication)";
    if (key[0] == ' ' || key[0] == '\t' || key[n - 1] == ' ' || key[n - 1] == '\t')
        return "starts or ends with a blank";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) return "contains a control character";
    return NULL;
}

/* Replaces *dst with a copy of v; -1 (and *dst unchanged) when out of memory. */
static int config_set_str(char **dst, const char *v)
{
    char *n = strdup(v);
    if (!n) return -1;
    free(*dst);
    *dst = n;
    return 0;
}

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (all interfaces is never implied: ":PORT" means loopback). */
static int config_split_listen(struct server_config *c)
{
    const char *s = c->listen;
    const char *colon;
    size_t hlen;
    const char *hstart = s;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return -1;
        hstart = s + 1;
        hlen = (size_t)(close - hstart);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -1;
        hlen = (size_t)(colon - s);
    }
    if (hlen >= sizeof c->host) return -1;
    if (hlen == 0) {
        strcpy(c->host, "127.0.0.1");
    } else {
        memcpy(c->host, hstart, hlen);
        c->host[hlen] = 0;
    }
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p > 65535) return -1;
    c->port = (uint16_t)p;
    return 0;
}

/* "*" or "scheme://host[:port]" as a browser sends it in Origin (no path, no trailing slash). */
static int config_add_origin(struct server_config *c, const char *v)
{
    const char *host = !strncmp(v, "https://", 8) ? v + 8 : !strncmp(v, "http://", 7) ? v + 7 : NULL;
    int ok = !strcmp(v, "*") || (host && *host && !strpbrk(host, "/ \t?#"));
    if (!ok)
        return config_error(
            "bad --cors-origin '%s'%s (expected * or scheme://host[:port], e.g. https://app.example.com)", v, "");
    char **n = realloc(c->cors_origins, (c->ncors + 1) * sizeof *n);
    if (!n) return 2;
    c->cors_origins = n;
    if (!(n[c->ncors] = strdup(v))) return 2;
    c->ncors++;
    return 0;
}

/* One setting by its flag name (without dashes); used for flags and config-file keys alike. */
static int config_apply(struct server_config *c, const char *key, const char *v)
{
    uint64_t n;
    if (!strcmp(key, "data")) {
        if (!*v) return config_error("the data directory name is empty%s%s", "", "");
        return config_set_str(&c->data_dir, v) ? 2 : 0;
    }
    if (!strcmp(key, "listen")) {
        if (config_set_str(&c->listen, v)) return 2;
        if (config_split_listen(c)) return config_error("bad --listen '%s'%s (expected HOST:PORT)", v, "");
        return 0;
    }
    if (!strcmp(key, "threads")) {
        if (config_parse_count(v, &n) || n < 1 || n > 1024)
            return config_error("bad --threads '%s'%s (expected 1..1024)", v, "");
        c->threads = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "api-key")) {
        const char *why = config_key_problem(v);
        if (why) return config_error("the API key from --api-key %s%s", why, "");
        return config_set_str(&c->api_key, v) ? 2 : 0;
    }
    if (!strcmp(key, "max-body")) {
        if (config_parse_size(v, &n) || n < 1)
            return config_error("bad --max-body '%s'%s (expected a size such as 32MiB)", v, "");
        c->max_body = n;
        return 0;
    }
    if (!strcmp(key, "max-buffered")) {
        if (config_parse_size(v, &n) || n < 1)
            return config_error("bad --max-buffered '%s'%s (expected a size such as 512MiB)", v, "");
        c->max_buffered = n;
        return 0;
    }
    if (!strcmp(key, "max-connections")) {
        if (config_parse_count(v, &n) || n < 16 || n > 1000000)
            return config_error("bad --max-connections '%s'%s (expected 16..1000000)", v, "");
        c->max_connections = (unsigned)n;
        c->max_connections_set = 1;
        return 0;
    }
    if (!strcmp(key, "max-connections-per-ip")) {
        if (config_parse_count(v, &n) || n > 1000000)
            return config_error("bad --max-connections-per-ip '%s'%s (expected 0..1000000, 0 = no limit)", v, "");
        c->max_conn_per_ip = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "header-timeout")) {
        if (config_parse_duration(v, &n) || n < 100 || n > 3600000)
            return config_error("bad --header-timeout '%s'%s (expected a duration from 100ms to 1h, such as 10s)", v,
                                "");
        c->header_timeout_ms = n;
        return 0;
    }
    if (!strcmp(key, "idle-timeout")) {
        if (config_parse_duration(v, &n) || n < 1000 || n > 86400000)
            return config_error("bad --idle-timeout '%s'%s (expected a duration from 1s to 1d, such as 60s)", v, "");
        c->idle_timeout_s = (unsigned)((n + 999) / 1000); /* MHD counts whole seconds */
        return 0;
    }
    if (!strcmp(key, "max-json-depth")) {
        if (config_parse_count(v, &n) || n < 2 || n > 1000)
            return config_error("bad --max-json-depth '%s'%s (expected 2..1000)", v, "");
        c->max_depth = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "compaction-interval")) {
        if (config_parse_duration(v, &n) || (n > 0 && n < 10) || n > UINT32_MAX)
            return config_error("bad --compaction-interval '%s'%s (expected a duration such as 30s, or 0 for none)", v,
                                "");
        c->compaction_interval_ms = n;
        return 0;
    }
    if (!strcmp(key, "compaction-threads")) {
        if (config_parse_count(v, &n) || n < 1 || n > 64)
            return config_error("bad --compaction-threads '%s'%s (expected 1..64)", v, "");
        c->compaction_threads = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "shutdown-timeout")) {
        if (config_parse_duration(v, &n)) return config_error("bad --shutdown-timeout '%s'%s", v, "");
        c->shutdown_timeout_s = (double)n / 1000.0;
        return 0;
    }
    if (!strcmp(key, "log-level")) {
        if (strcmp(v, "debug") && strcmp(v, "info") && strcmp(v, "warn") && strcmp(v, "error"))
            return config_error("bad --log-level '%s'%s (expected debug, info, warn or error)", v, "");
        return config_set_str(&c->log_level, v) ? 2 : 0;
    }
    if (!strcmp(key, "log-format")) {
        if (strcmp(v, "text") && strcmp(v, "json"))
            return config_error("bad --log-format '%s'%s (expected text or json)", v, "");
        c->log_json = !strcmp(v, "json");
        return 0;
    }
    if (!strcmp(key, "backup-repo")) {
        if (!*v) return config_error("the backup repository is empty%s%s", "", "");
        return config_set_str(&c->backup_repo, v) ? 2 : 0;
    }
    if (!strcmp(key, "repo-key-file")) {
        if (!*v) return config_error("the repository key file is empty%s%s", "", "");
        return config_set_str(&c->backup_repo_key_file, v) ? 2 : 0;
    }
    if (!strcmp(key, "backup-full-every") || !strcmp(key, "backup-incremental-every") ||
        !strcmp(key, "backup-drill-every")) {
        if (config_parse_duration(v, &n) || n < 100)
            return config_error("bad --%s '%s' (expected a duration of at least 100ms, such as 1h)", key, v);
        if (!strcmp(key, "backup-full-every")) c->backup_full_every_ms = n;
        else if (!strcmp(key, "backup-drill-every")) c->backup_drill_every_ms = n;
        else c->backup_incr_every_ms = n;
        return 0;
    }
    if (!strcmp(key, "follow")) {
        if (!*v) return config_error("the repository to follow is empty%s%s", "", "");
        return config_set_str(&c->follow_repo, v) ? 2 : 0;
    }
    if (!strcmp(key, "follow-interval")) {
        if (config_parse_duration(v, &n) || n < 10 || n > 3600000)
            return config_error("bad --follow-interval '%s'%s (expected a duration from 10ms to 1h, such as 1s)", v,
                                "");
        c->follow_interval_ms = n;
        return 0;
    }
    if (!strcmp(key, "backup-continuous") || !strcmp(key, "backup-lease") || !strcmp(key, "backup-retention")) {
        if (config_parse_duration(v, &n) || n < 10)
            return config_error("bad --%s '%s' (expected a duration of at least 10ms, such as 1s)", key, v);
        if (!strcmp(key, "backup-continuous")) c->backup_continuous_ms = n;
        else if (!strcmp(key, "backup-lease")) c->backup_lease_ms = n;
        else c->backup_retention_ms = n;
        return 0;
    }
    if (!strcmp(key, "backup-backlog-bytes")) {
        if (config_parse_size(v, &n) || n == 0) return config_error("bad --backup-backlog-bytes '%s'%s", v, "");
        c->backup_backlog_bytes = n;
        return 0;
    }
    if (!strcmp(key, "backup-log-fold-bytes")) {
        if (config_parse_size(v, &n))
            return config_error("bad --backup-log-fold-bytes '%s'%s", v, " (a size, 0 = never)");
        c->backup_fold_bytes = n;
        c->backup_fold_set |= 1;
        return 0;
    }
    if (!strcmp(key, "backup-log-fold-objects")) {
        if (config_parse_count(v, &n))
            return config_error("bad --backup-log-fold-objects '%s'%s", v, " (a count, 0 = never)");
        c->backup_fold_objects = n;
        c->backup_fold_set |= 2;
        return 0;
    }
    if (!strcmp(key, "tls-cert") || !strcmp(key, "tls-key")) {
        if (!*v) return config_error("the file name of --%s is empty%s", key, "");
        return config_set_str(!strcmp(key, "tls-cert") ? &c->tls_cert : &c->tls_key, v) ? 2 : 0;
    }
    if (!strcmp(key, "cors-origin")) return config_add_origin(c, v);
    if (!strcmp(key, "backup-keep")) {
        if (config_parse_count(v, &n) || n > 100000) return config_error("bad --backup-keep '%s'%s", v, "");
        c->backup_keep = (unsigned)n;
        return 0;
    }
    if (!strcmp(key, "backup-keep-daily") || !strcmp(key, "backup-keep-weekly")) {
        if (config_parse_count(v, &n) || n > 100000) return config_error("bad --%s '%s'", key, v);
        if (!strcmp(key, "backup-keep-daily")) c->backup_keep_daily = (unsigned)n;
        else c->backup_keep_weekly = (unsigned)n;
        return 0;
    }
    return config_error("unknown option '%s'%s", key, "");
}

/* Applies each key of a JSON config file as the option of that name: a string or number value, or an array
 * of strings for cors-origin; refuses duplicate keys, other types and a nested `config`. */
static int config_load_file(struct server_config *c, const char *path)
{
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s (line %d, column %d)", je.text, je.line, je.column);
        return config_error("cannot read config file '%s': %s", path, msg);
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        return config_error("config file '%s' must hold a JSON object%s", path, "");
    }
    const char *key;
    json_t *v;
    int rc = 0;
    json_object_foreach(doc, key, v)
    {
        char buf[64];
        const char *text;
        if (!strcmp(key, "cors-origin") && json_is_array(v)) {
            size_t i;
            json_t *o;
            json_array_foreach(v, i, o)
            {
                if (!json_is_string(o)) {
                    rc = config_error("config file key '%s' must hold strings%s", key, "");
                    break;
                }
                if ((rc = config_apply(c, key, json_string_value(o)))) break;
            }
            if (rc) break;
            continue;
        }
        if (json_is_string(v)) {
            text = json_string_value(v);
        } else if (json_is_integer(v)) {
            snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text = buf;
        } else if (json_is_real(v)) {
            snprintf(buf, sizeof buf, "%g", json_real_value(v));
            text = buf;
        } else {
            rc = config_error("config file key '%s' must be a string or a number%s", key, "");
            break;
        }
        if (!strcmp(key, "config")) {
            rc = config_error("a config file cannot name another config file ('%s')%s", path, "");
            break;
        }
        if ((rc = config_apply(c, key, text))) break;
    }
    json_decref(doc);
    return rc;
}

/* The default number of HTTP threads: 4 per online core, kept within 8..64 (why: below). */
static unsigned config_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    /* Routes run on MHD's pool threads and block there (a write waits for fdatasync, shared by
     * group commit; a compaction or a backup asked for over HTTP runs to its end), and while one
     * blocks, the other connections MHD gave that thread wait too.  So: many more threads than
     * cores.  (Handing blocking routes to separate workers with MHD_suspend_connection /
     * MHD_resume_connection was tried: with libmicrohttpd 0.9.75 a resume that comes before MHD
     * has finished suspending leaves the connection parked for good — a hung client, and a panic
     * in MHD_stop_daemon.) */
    long t = n > 0 ? 4 * n : 8;
    if (t < 8) t = 8;
    if (t > 64) t = 64;
    return (unsigned)t;
}

int config_load(struct server_config *c, int argc, char **argv, const char *data_dir)
{
    memset(c, 0, sizeof *c);
    c->threads = config_default_threads();
    c->max_body = 32ull << 20;
    c->max_buffered = 512ull << 20;
    c->max_connections = 4096;
    c->max_conn_per_ip = 256;
    c->header_timeout_ms = 10000;
    c->idle_timeout_s = 60;
    c->max_depth = 32;
    c->compaction_interval_ms = 60000;
    c->compaction_threads = 1;
    c->follow_interval_ms = 1000;
    c->shutdown_timeout_s = 30;
    if (config_set_str(&c->data_dir, data_dir ? data_dir : "./jvdb-data") ||
        config_set_str(&c->listen, CONFIG_DEFAULT_LISTEN))
        return 2;
    config_split_listen(c);
    const char *env_key = getenv("JVDB_API_KEY");
    const char *env_why = env_key ? config_key_problem(env_key) : NULL;
    if (env_key && !env_why && config_set_str(&c->api_key, env_key)) return 2;

    /* The config file first, wherever --config appears, so that flags override it. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(config_usage, stdout);
            return 1;
        }
        const char *file = NULL;
        if (!strcmp(a, "--config")) {
            if (i + 1 >= argc) return config_error("option '--config' needs a file%s%s", "", "");
            file = argv[++i];
        } else if (!strncmp(a, "--config=", 9)) {
            file = a + 9;
        }
        if (file) {
            int rc = config_load_file(c, file);
            if (rc) return rc;
        }
    }
    if (env_why) return config_error("the API key from JVDB_API_KEY %s%s", env_why, "");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) return config_error("unexpected argument '%s'%s", a, "");
        char key[64];
        const char *val;
        const char *eq = strchr(a + 2, '=');
        size_t klen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (klen >= sizeof key) return config_error("unknown option '%s'%s", a, "");
        memcpy(key, a + 2, klen);
        key[klen] = 0;
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) return config_error("option '%s' needs a value%s", a, "");
            val = argv[++i];
        }
        if (!strcmp(key, "config")) continue;
        int rc = config_apply(c, key, val);
        if (rc) return rc;
    }
    if (c->max_buffered < c->max_body)
        return config_error("--max-buffered must be at least --max-body, or no body of the largest size could "
                            "ever be read%s%s",
                            "", "");
    if (!c->tls_cert != !c->tls_key) return config_error("TLS needs both --tls-cert and --tls-key%s%s", "", "");
    if (c->backup_repo_key_file && !c->backup_repo && !c->follow_repo)
        return config_error("--repo-key-file is the key of a backup repository: add --backup-repo R%s%s", "", "");
    if ((c->backup_full_every_ms || c->backup_incr_every_ms || c->backup_keep || c->backup_keep_daily ||
         c->backup_keep_weekly || c->backup_drill_every_ms) &&
        !c->backup_repo)
        return config_error("scheduled backups need a repository: add --backup-repo DIR%s%s", "", "");
    if (c->follow_repo && (c->backup_full_every_ms || c->backup_incr_every_ms || c->backup_drill_every_ms ||
                           c->backup_continuous_ms || c->backup_retention_ms))
        return config_error("a replica (--follow) takes no scheduled backups, drills or continuous backup: its "
                            "primary does%s%s",
                            "", "");
    if ((c->backup_continuous_ms || c->backup_retention_ms) && !c->backup_repo)
        return config_error("continuous backup needs a repository: add --backup-repo R%s%s", "", "");
    if (!c->backup_backlog_bytes) c->backup_backlog_bytes = 1ull << 30;
    if (!c->backup_lease_ms) c->backup_lease_ms = 30000;
    if (!(c->backup_fold_set & 1)) c->backup_fold_bytes = 256ull << 20;
    if (!(c->backup_fold_set & 2)) c->backup_fold_objects = 3600;
    return 0;
}

void config_free(struct server_config *c)
{
    free(c->data_dir);
    free(c->listen);
    free(c->api_key);
    free(c->log_level);
    free(c->backup_repo);
    free(c->backup_repo_key_file);
    free(c->follow_repo);
    free(c->tls_cert);
    free(c->tls_key);
    for (size_t i = 0; i < c->ncors; i++) free(c->cors_origins[i]);
    free(c->cors_origins);
    memset(c, 0, sizeof *c);
}
