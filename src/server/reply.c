/*
 * reply.c — writing the answer: the JSON and text responses and the error object
 * {"error": CODE, "message": ...} every part of the server (transport, auth, routes, jobs) answers
 * with, and the mapping of library status codes onto HTTP statuses.
 *
 * Invariant: this file sits at the bottom of src/server (it calls only jsonio.c and the library),
 * so anything may answer through it; a response body replaced here is always freed first.
 */
#include "server/srv.h"

#include <stdio.h>
#include <stdlib.h>

void http_reply_json(struct http_resp *rs, int status, struct jw *w)
{
    size_t len = 0;
    char *body = jw_take(w, &len);
    if (!body) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory writing the response");
        return;
    }
    free(rs->body);
    rs->status = status;
    rs->body = body;
    rs->len = len;
    rs->content_type = "application/json";
}

void http_reply_text(struct http_resp *rs, int status, const char *content_type, char *text, size_t len)
{
    free(rs->body);
    rs->status = status;
    rs->body = text;
    rs->len = len;
    rs->content_type = content_type;
}

void http_error(struct http_resp *rs, int status, const char *code, const char *fmt, ...)
{
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct jw w;
    jw_init(&w);
    jw_obj(&w);
    jw_kstr(&w, "error", code);
    jw_kstr(&w, "message", msg);
    jw_obj_end(&w);
    free(rs->body);
    rs->body = jw_take(&w, &rs->len);
    rs->status = status;
    rs->content_type = "application/json";
}

void http_lib_error(struct http_resp *rs, int rc) { http_lib_error_msg(rs, rc, jvdb_errmsg()); }

void http_lib_error_msg(struct http_resp *rs, int rc, const char *msg)
{
    if (!msg || !*msg) msg = jvdb_strerror(rc);
    switch (rc) {
    case JVDB_EINVAL: http_error(rs, 400, "INVALID_ARGUMENT", "%s", msg); break;
    case JVDB_ENOTFOUND: http_error(rs, 404, "NOT_FOUND", "%s", msg); break;
    case JVDB_EEXISTS: http_error(rs, 409, "ALREADY_EXISTS", "%s", msg); break;
    case JVDB_EBUSY: http_error(rs, 409, "BUSY", "%s", msg); break;
    case JVDB_ELOCKED: http_error(rs, 409, "LOCKED", "%s", msg); break;
    case JVDB_ENOSPC: http_error(rs, 500, "NO_SPACE", "%s", msg); break;
    case JVDB_ECORRUPT: http_error(rs, 500, "CORRUPT", "%s", msg); break;
    case JVDB_ENOMEM: http_error(rs, 500, "OUT_OF_MEMORY", "%s", msg); break;
    case JVDB_EFAILED: http_error(rs, 500, "DATABASE_FAILED", "%s", msg); break;
    case JVDB_EIO: http_error(rs, 500, "IO_ERROR", "%s", msg); break;
    default: http_error(rs, 500, "INTERNAL", "%s", msg); break;
    }
}
