/*
 * routes_export.c — GET /v1/databases/{id}/export: every vector of a database as JSON Lines
 * ({"id", "values", "metadata"} per line: what `jvdb export` writes and `jvdb import` reads), streamed.
 *
 * The answer is produced while it is sent (chunked transfer): ids a page at a time in id order
 * (jvdb_scroll_ids, EXPORT_PAGE per page), each vector read with jvdb_get when its line is due, so
 * the memory an export holds is one page of ids and one line, whatever the database's size.  As with
 * scroll: every vector that exists throughout the export comes exactly once; one written or deleted
 * meanwhile may or may not.  The database is held, as a request holds it, until the last byte is
 * sent or the client goes away; a drop of it waits for that, no other request does.
 */
#include "server/srv.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define EXPORT_PAGE 10000

struct export_stream {
    struct server *s;
    jvdb_db *db;
    char **ids; /* the current page */
    size_t n, next;
    int more;       /* pages follow this one */
    float *vec;     /* one vector */
    struct jw line; /* the line being sent, without its newline */
    size_t sent;    /* bytes of `line` and its newline already handed out */
};

/* Frees a page of ids. */
static void export_page_free(struct export_stream *x)
{
    jvdb_scroll_ids_free(x->ids, x->n);
    x->ids = NULL;
    x->n = x->next = 0;
}

/* Reads the page after the last id of the current one (the first page when there is none). */
static int export_next_page(struct export_stream *x)
{
    char *after = x->n ? strdup(x->ids[x->n - 1]) : NULL;
    if (x->n && !after) return JVDB_ENOMEM;
    export_page_free(x);
    int rc = jvdb_scroll_ids(x->db, NULL, after, EXPORT_PAGE, &x->ids, &x->n, &x->more);
    free(after);
    return rc;
}

/* Formats the next vector's line into x->line; 1 when there was one, 0 at the end, < 0 on an error. */
static int export_next_line(struct export_stream *x)
{
    for (;;) {
        if (x->next == x->n) {
            if (x->ids && !x->more) return 0;
            int rc = export_next_page(x);
            if (rc != JVDB_OK) return rc;
            if (x->n == 0) return 0;
        }
        const char *id = x->ids[x->next++];
        char *meta = NULL;
        int rc = jvdb_get(x->db, id, x->vec, &meta);
        if (rc == JVDB_ENOTFOUND) continue; /* deleted since its page was read */
        if (rc != JVDB_OK) return rc;
        jw_free(&x->line);
        jw_init(&x->line);
        jw_obj(&x->line);
        jw_kstr(&x->line, "id", id);
        jw_key(&x->line, "values");
        jw_floats(&x->line, x->vec, jvdb_db_dim(x->db));
        if (meta) {
            jw_key(&x->line, "metadata");
            jw_json(&x->line, meta);
        }
        jw_obj_end(&x->line);
        jvdb_free(meta);
        x->sent = 0;
        return x->line.oom ? JVDB_ENOMEM : 1;
    }
}

/* http_stream callback: the next bytes of the answer, -1 at its end, -2 on an error. */
static long export_read(void *arg, char *buf, size_t max)
{
    struct export_stream *x = arg;
    size_t out = 0;
    while (out < max) {
        if (x->sent == x->line.len + 1) {
            int r = export_next_line(x);
            if (r == 0) break;
            if (r < 0) {
                /* The status line is long gone: all the client can be told is a cut answer. */
                log_warn("export of '%s' stopped after an error: %s", jvdb_db_name(x->db), jvdb_errmsg());
                return out ? (long)out : -2;
            }
        }
        if (x->sent == x->line.len) {
            buf[out++] = '\n';
            x->sent++;
            continue;
        }
        size_t k = x->line.len - x->sent;
        if (k > max - out) k = max - out;
        memcpy(buf + out, x->line.buf + x->sent, k);
        x->sent += k;
        out += k;
    }
    return out ? (long)out : -1;
}

/* http_stream end: gives the database back and frees the export's state. */
static void export_free(void *arg)
{
    struct export_stream *x = arg;
    export_page_free(x);
    jw_free(&x->line);
    free(x->vec);
    route_db_release(x->s, x->db);
    free(x);
}

void route_vec_export(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    jvdb_db *db = route_db_acquire(s, rq->params[0], rs);
    if (!db) return;
    struct export_stream *x = calloc(1, sizeof *x);
    float *vec = malloc((size_t)jvdb_db_dim(db) * sizeof *vec);
    if (!x || !vec) {
        free(x);
        free(vec);
        route_db_release(s, db);
        http_error(rs, 500, "INTERNAL", "out of memory");
        return;
    }
    x->s = s;
    x->db = db;
    x->vec = vec;
    jw_init(&x->line);
    x->sent = 1; /* nothing to send yet: as if an empty line had gone out */
    /* The first page is read now, so an error (e.g. out of memory) still gets a proper status. */
    int rc = export_next_page(x);
    if (rc != JVDB_OK) {
        http_lib_error(rs, rc);
        export_free(x);
        return;
    }
    rs->status = 200;
    rs->content_type = "application/x-ndjson";
    rs->stream = export_read;
    rs->stream_free = export_free;
    rs->stream_arg = x;
}
