/*
 * routes_keys.c — POST/GET /v1/api-keys and DELETE /v1/api-keys/{key_id} (admin only, auth.c).
 *
 * The routes change the key file exactly as `jvdb keys` does (keys.c: locked read-modify-write,
 * atomic replace) and then reload it in this process at once, so a revoked key is refused from
 * the next request on — no waiting for the once-a-second stat check that picks up CLI changes.
 * The created key is in the 201 answer and nowhere else.
 */
#include "server/keys.h"
#include "server/srv.h"

#include "core/log.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Sends a jansson tree (stolen) as the answer. */
static void keys_reply(struct http_resp *rs, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        http_error(rs, 500, "OUT_OF_MEMORY", "out of memory");
        return;
    }
    http_reply_text(rs, status, "application/json", text, strlen(text));
}

/* Reads the optional "databases" array of the body into names (pointers into the tree). */
static int keys_body_dbs(json_t *dbs, const char **names, size_t *n, struct http_resp *rs)
{
    *n = 0;
    if (!dbs || json_is_null(dbs)) return 0;
    if (!json_is_array(dbs) || json_array_size(dbs) > KEY_MAX_DATABASES) {
        http_error(rs, 400, "INVALID_ARGUMENT", "'databases' must be an array of at most %d database names",
                   KEY_MAX_DATABASES);
        return -1;
    }
    size_t i;
    json_t *d;
    json_array_foreach(dbs, i, d)
    {
        if (!json_is_string(d)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "'databases[%zu]' must be a string", i);
            return -1;
        }
        names[(*n)++] = json_string_value(d);
    }
    return 0;
}

/* Fills the spec from the body; 0, or -1 after answering 400. */
static int keys_body_spec(json_t *b, struct key_spec *sp, const char **names, struct http_resp *rs)
{
    memset(sp, 0, sizeof *sp);
    json_t *role = json_object_get(b, "role"), *desc = json_object_get(b, "description");
    /* expiresAt / expiresIn: the camelCase names; expires_at / expires_in (deprecated) also work. */
    const char *at_name = json_object_get(b, "expiresAt") ? "expiresAt" : "expires_at";
    const char *in_name = json_object_get(b, "expiresIn") ? "expiresIn" : "expires_in";
    if ((json_object_get(b, "expiresAt") && json_object_get(b, "expires_at")) ||
        (json_object_get(b, "expiresIn") && json_object_get(b, "expires_in"))) {
        http_error(rs, 400, "INVALID_ARGUMENT", "give '%s' or its old name, not both",
                   json_object_get(b, "expires_at") && json_object_get(b, "expiresAt") ? "expiresAt" : "expiresIn");
        return -1;
    }
    json_t *at = json_object_get(b, at_name), *in = json_object_get(b, in_name);
    if (!json_is_string(role) || !(sp->role = key_role_parse(json_string_value(role)))) {
        http_error(rs, 400, "INVALID_ARGUMENT", "'role' is required: \"read\", \"write\" or \"admin\"");
        return -1;
    }
    if (desc && !json_is_null(desc) && !json_is_string(desc)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "'description' must be a string");
        return -1;
    }
    sp->description = json_is_string(desc) ? json_string_value(desc) : "";
    if (keys_body_dbs(json_object_get(b, "databases"), names, &sp->ndb, rs)) return -1;
    sp->databases = names;
    int64_t now = (int64_t)time(NULL);
    if (at && in && !json_is_null(at) && !json_is_null(in)) {
        http_error(rs, 400, "INVALID_ARGUMENT", "give '%s' or '%s', not both", at_name, in_name);
        return -1;
    }
    json_t *e = at && !json_is_null(at) ? at : in && !json_is_null(in) ? in : NULL;
    if (e && (!json_is_string(e) || keys_parse_expiry(json_string_value(e), now, &sp->expires_s))) {
        http_error(rs, 400, "INVALID_ARGUMENT", "'%s' must be %s", e == at ? at_name : in_name,
                   e == at ? "a UTC time such as \"2027-01-31\" or \"2027-01-31T12:00:00Z\""
                           : "a duration such as \"30d\" or \"12h\"");
        return -1;
    }
    return 0;
}

void route_keys_create(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    static const char *const fields[] = { "role",       "databases",  "expiresAt",   "expiresIn",
                                          "expires_at", "expires_in", "description", NULL };
    json_t *b = route_body(s, rq, rs, fields);
    if (!b) return;
    struct key_spec sp;
    const char *names[KEY_MAX_DATABASES];
    char err[600], text[KEY_TEXT_LEN + 1];
    struct key_entry e;
    if (keys_body_spec(b, &sp, names, rs) == 0) {
        if (keys_spec_check(&sp, (int64_t)time(NULL), err, sizeof err)) {
            http_error(rs, 400, "INVALID_ARGUMENT", "%s", err);
        } else if (keys_create(s->cfg.data_dir, &sp, text, &e, err, sizeof err)) {
            http_error(rs, 500, "IO_ERROR", "cannot create the key: %s", err);
        } else {
            auth_reload(s, 1);
            log_info("API key %s created (role %s, %zu databases)", e.id, key_role_name(e.role), e.ndb);
            json_t *doc = keys_entry_json(&e, (int64_t)time(NULL));
            json_object_set_new(doc, "apiKey", json_string(text));
            json_object_set_new(doc, "api_key", json_string(text)); /* deprecated name */
            OPENSSL_cleanse(text, sizeof text);
            keys_entry_free(&e);
            keys_reply(rs, 201, doc);
        }
    }
    json_decref(b);
}

void route_keys_list(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    (void)rq;
    struct key_set ks;
    char err[600];
    if (keys_load(s->cfg.data_dir, &ks, err, sizeof err)) {
        http_error(rs, 500, "IO_ERROR", "%s", err);
        return;
    }
    int64_t now = (int64_t)time(NULL);
    json_t *arr = json_array();
    for (size_t i = 0; i < ks.n; i++) json_array_append_new(arr, keys_entry_json(&ks.v[i], now));
    keys_free(&ks);
    /* apiKeys, and api_keys (deprecated) for the clients written before: the same list. */
    keys_reply(rs, 200, json_pack("{s:O, s:o}", "apiKeys", arr, "api_keys", arr));
}

void route_keys_delete(struct server *s, struct http_req *rq, struct http_resp *rs)
{
    const char *id = rq->params[0];
    char err[600];
    int rc = keys_revoke(s->cfg.data_dir, id, err, sizeof err);
    if (rc < 0) {
        http_error(rs, 500, "IO_ERROR", "cannot revoke the key: %s", err);
        return;
    }
    if (rc > 0) {
        http_error(rs, 404, "NOT_FOUND", "no API key with id '%.40s'", id);
        return;
    }
    auth_reload(s, 1);
    log_info("API key %s revoked", id);
    keys_reply(rs, 200, json_pack("{s:s, s:s, s:b}", "keyId", id, "key_id", id, "revoked", 1));
}
