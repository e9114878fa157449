/*
 * keys.c — the API key file (<data>/server/api-keys) and matching a key against it.
 *
 * Invariants:
 *  (1) A key is shown once, when it is made, and is stored nowhere: the file holds its SHA-256.
 *      Keys are 256 random bits (getrandom), so a plain hash is enough: nobody can search the
 *      key space from the hash, and a slow hash would only cost every request.
 *  (2) The file is only ever replaced whole (tmp, fsync, rename, fsync dir: fs_replace_file), so
 *      a reader sees the old set or the new one, and a crash leaves one of them.
 *  (3) Every read-modify-write of the file holds an flock on api-keys.lock for its length: the
 *      CLI and the server may both change keys, and neither loses the other's change.  The lock
 *      is between writers of the key file only; no request ever waits for it.
 *  (4) A file that cannot be read whole is an error, never an empty set: a damaged key file must
 *      not open the server to everyone.
 *
 * The key text is "jvdb_<16 hex id>_<64 hex secret>"; the id is public (lists, logs), the secret
 * is not.  Matching hashes the offered text and compares it with every stored hash in constant
 * time, so neither the time nor the log says how near a guess came.
 *
 * The file is JSON, one object: {"format": 1, "keys": [{"key_id", "sha256", "role", "databases",
 * "created_at", "expires_at", "description"}]} (docs/FORMAT.md, "API keys").  It is not named
 * *.json: <data>/server/<name>.json files belong to databases' metadata (dbmeta.c prunes them).
 */
#include "server/keys.h"
#include "server/srv.h"

#include "core/fs.h"
#include "core/log.h"
#include "store/db.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KEYS_FORMAT 1

key_role key_role_parse(const char *s)
{
    if (!s) return KEY_ROLE_NONE;
    if (!strcmp(s, "read")) return KEY_ROLE_READ;
    if (!strcmp(s, "write")) return KEY_ROLE_WRITE;
    if (!strcmp(s, "admin")) return KEY_ROLE_ADMIN;
    return KEY_ROLE_NONE;
}

const char *key_role_name(key_role r)
{
    switch (r) {
    case KEY_ROLE_READ: return "read";
    case KEY_ROLE_WRITE: return "write";
    case KEY_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

char *keys_file_path(const char *data_dir)
{
    char *dir = fs_join(data_dir, "server");
    char *p = dir ? fs_join(dir, "api-keys") : NULL;
    free(dir);
    return p;
}

int keys_hash(const char *text, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(text, strlen(text), out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

const struct key_entry *keys_match(const struct key_set *ks, const unsigned char hash[32])
{
    const struct key_entry *found = NULL;
    for (size_t i = 0; i < ks->n; i++)
        if (CRYPTO_memcmp(ks->v[i].hash, hash, 32) == 0) found = &ks->v[i];
    return found;
}

int keys_allows_db(const struct key_entry *e, const char *database)
{
    if (!e->ndb) return 1;
    if (!database) return 0;
    for (size_t i = 0; i < e->ndb; i++)
        if (!strcmp(e->databases[i], database)) return 1;
    return 0;
}

void keys_time_text(int64_t s, char out[32])
{
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ" as UTC unix seconds; -1 when it is neither. */
static int keys_parse_time(const char *s, int64_t *out)
{
    struct tm tm = { 0 };
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (!end) return -1;
    if (*end) {
        end = strptime(end, "T%H:%M:%SZ", &tm);
        if (!end || *end) return -1;
    }
    *out = (int64_t)timegm(&tm);
    return 0;
}

int keys_parse_expiry(const char *s, int64_t now_s, int64_t *out)
{
    uint64_t ms;
    if (!s || !*s) return -1;
    if (strchr(s, '-')) return keys_parse_time(s, out);
    if (config_parse_duration(s, &ms) || ms < 1000) return -1;
    *out = now_s + (int64_t)(ms / 1000);
    return 0;
}

void keys_entry_free(struct key_entry *e)
{
    for (size_t i = 0; i < e->ndb; i++) free(e->databases[i]);
    free(e->databases);
    free(e->description);
    memset(e, 0, sizeof *e);
}

void keys_free(struct key_set *ks)
{
    for (size_t i = 0; i < ks->n; i++) keys_entry_free(&ks->v[i]);
    free(ks->v);
    ks->v = NULL;
    ks->n = 0;
}

/* ---------------------------------------------------------------- file <-> entries */

/* Decodes exactly 2n hex digits into n bytes; -1 on any other text. */
static int keys_hex_decode(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* Writes n bytes as 2n lowercase hex digits and a NUL. */
static void keys_hex_encode(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", in[i]);
}

/* Whether id has the shape of a key id (KEY_ID_LEN lowercase hex digits). */
static int keys_id_valid(const char *id)
{
    if (strlen(id) != KEY_ID_LEN) return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

/* One stored entry from its JSON object; 0, or -1 with a message. */
static int keys_entry_from_json(json_t *o, struct key_entry *e, char *err, size_t cap)
{
    const char *id = NULL, *hash = NULL, *role = NULL, *created = NULL, *desc = "";
    json_t *dbs = NULL, *exp = NULL;
    json_error_t je;
    if (json_unpack_ex(o, &je, JSON_STRICT, "{s:s, s:s, s:s, s:o, s:s, s:o, s?s}", "key_id", &id, "sha256", &hash,
                       "role", &role, "databases", &dbs, "created_at", &created, "expires_at", &exp, "description",
                       &desc)) {
        snprintf(err, cap, "%s", je.text);
        return -1;
    }
    if (!keys_id_valid(id)) return snprintf(err, cap, "key_id '%.40s' is not %d hex digits", id, KEY_ID_LEN), -1;
    memcpy(e->id, id, KEY_ID_LEN + 1);
    if (keys_hex_decode(hash, e->hash, 32)) return snprintf(err, cap, "key %s: sha256 is not 64 hex digits", id), -1;
    if (!(e->role = key_role_parse(role))) return snprintf(err, cap, "key %s: unknown role '%.20s'", id, role), -1;
    if (keys_parse_time(created, &e->created_s)) return snprintf(err, cap, "key %s: bad created_at", id), -1;
    if (json_is_string(exp)) {
        if (keys_parse_time(json_string_value(exp), &e->expires_s) || !e->expires_s)
            return snprintf(err, cap, "key %s: bad expires_at", id), -1;
    } else if (!json_is_null(exp)) {
        return snprintf(err, cap, "key %s: expires_at must be a time or null", id), -1;
    }
    if (!json_is_array(dbs) || json_array_size(dbs) > KEY_MAX_DATABASES)
        return snprintf(err, cap, "key %s: databases must be an array of names", id), -1;
    e->description = strdup(desc);
    e->databases = json_array_size(dbs) ? calloc(json_array_size(dbs), sizeof *e->databases) : NULL;
    size_t i;
    json_t *d;
    json_array_foreach(dbs, i, d)
    {
        if (!json_is_string(d) || !db_name_valid(json_string_value(d)))
            return snprintf(err, cap, "key %s: databases[%zu] is not a database name", id, i), -1;
        if (!e->databases || !(e->databases[e->ndb] = strdup(json_string_value(d)))) break;
        e->ndb++;
    }
    if (!e->description || e->ndb != json_array_size(dbs)) return snprintf(err, cap, "out of memory"), -1;
    return 0;
}

/* One key as it is stored in the key file: its secret's SHA-256, never the secret. */
static json_t *keys_entry_stored(const struct key_entry *e)
{
    char hex[65], created[32], exp[32];
    keys_hex_encode(e->hash, 32, hex);
    keys_time_text(e->created_s, created);
    if (e->expires_s) keys_time_text(e->expires_s, exp);
    json_t *dbs = json_array();
    for (size_t i = 0; i < e->ndb; i++) json_array_append_new(dbs, json_string(e->databases[i]));
    return json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:s}", "key_id", e->id, "sha256", hex, "role",
                     key_role_name(e->role), "databases", dbs, "created_at", created, "expires_at",
                     e->expires_s ? json_string(exp) : json_null(), "description", e->description);
}

json_t *keys_entry_json(const struct key_entry *e, int64_t now_s)
{
    char created[32], exp[32];
    keys_time_text(e->created_s, created);
    if (e->expires_s) keys_time_text(e->expires_s, exp);
    json_t *dbs = json_array();
    for (size_t i = 0; i < e->ndb; i++) json_array_append_new(dbs, json_string(e->databases[i]));
    /* camelCase (keyId, createdAt, expiresAt) like the rest of the API; the snake_case names stay
     * beside them, deprecated, for the clients and scripts written before (docs/API.md). */
    json_t *o =
        json_pack("{s:s, s:s, s:o, s:s, s:o, s:b, s:s}", "key_id", e->id, "role", key_role_name(e->role), "databases",
                  dbs, "created_at", created, "expires_at", e->expires_s ? json_string(exp) : json_null(), "expired",
                  e->expires_s && e->expires_s <= now_s, "description", e->description);
    if (o && (json_object_set_new(o, "keyId", json_string(e->id)) ||
              json_object_set_new(o, "createdAt", json_string(created)) ||
              json_object_set_new(o, "expiresAt", e->expires_s ? json_string(exp) : json_null()))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Parses the file's text into a set; 0, or -1 with a message. */
static int keys_parse(const char *text, size_t len, struct key_set *out, char *err, size_t cap)
{
    json_error_t je;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) return snprintf(err, cap, "%s (line %d, column %d)", je.text, je.line, je.column), -1;
    json_t *keys = json_object_get(doc, "keys");
    json_t *fmt = json_object_get(doc, "format");
    int rc = -1;
    if (!json_is_integer(fmt) || json_integer_value(fmt) != KEYS_FORMAT)
        snprintf(err, cap, "\"format\" must be %d", KEYS_FORMAT);
    else if (json_object_size(doc) != 2) snprintf(err, cap, "only \"format\" and \"keys\" may be at the top level");
    else if (!json_is_array(keys) || json_array_size(keys) > KEY_MAX_KEYS)
        snprintf(err, cap, "\"keys\" must be an array of at most %d keys", KEY_MAX_KEYS);
    else if (json_array_size(keys) && !(out->v = calloc(json_array_size(keys), sizeof *out->v)))
        snprintf(err, cap, "out of memory");
    else rc = 0;
    for (size_t i = 0; rc == 0 && i < json_array_size(keys); i++) {
        char why[256];
        rc = keys_entry_from_json(json_array_get(keys, i), &out->v[out->n++], why, sizeof why);
        if (rc) snprintf(err, cap, "keys[%zu]: %s", i, why);
    }
    json_decref(doc);
    if (rc) keys_free(out);
    return rc;
}

int keys_load(const char *data_dir, struct key_set *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    char *path = keys_file_path(data_dir);
    if (!path) return snprintf(err, cap, "out of memory"), -1;
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        rc = 0; /* no key file: no keys */
    } else if (fs_read_file(path, &text, &len) != JVDB_OK) {
        snprintf(err, cap, "cannot read the key file %s: %s", path, jvdb_errmsg());
        rc = -1;
    } else if (keys_parse(text, len, out, err, cap)) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, cap, "the key file %s is damaged: %s", path, why);
        rc = -1;
    }
    free(text);
    free(path);
    return rc;
}

/* Run as root (an operator's `sudo jvdb keys ...`), a new file would belong to root and a server
 * running as its own user could no longer read it: files made here take the owner of
 * <data>/server, which the server made. */
static void keys_chown_like_dir(const char *data_dir, const char *path)
{
    if (geteuid() != 0) return;
    char *dir = fs_join(data_dir, "server");
    struct stat st;
    if (dir && stat(dir, &st) == 0 && (st.st_uid != 0 || st.st_gid != 0) && chown(path, st.st_uid, st.st_gid) != 0)
        log_warn("cannot give %s to uid %u: %s", path, (unsigned)st.st_uid, strerror(errno));
    free(dir);
}

/* Writes the set over the file (invariant 2), mode 0600 from its first byte (hashes only, but
 * nobody else needs them; a chmod after the rename left 0644 after a crash between the two);
 * 0, or -1 with a message. */
static int keys_save(const char *data_dir, const struct key_set *ks, char *err, size_t cap)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < ks->n; i++) json_array_append_new(arr, keys_entry_stored(&ks->v[i]));
    json_t *doc = json_pack("{s:i, s:o}", "format", KEYS_FORMAT, "keys", arr);
    char *text = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
    json_decref(doc);
    char *path = keys_file_path(data_dir);
    int rc = -1;
    if (!text || !path) {
        snprintf(err, cap, "out of memory");
    } else if (fs_replace_file_mode(path, text, strlen(text), 0600, "api_keys") != JVDB_OK) {
        snprintf(err, cap, "%s", jvdb_errmsg());
    } else {
        keys_chown_like_dir(data_dir, path);
        rc = 0;
    }
    free(text);
    free(path);
    return rc;
}

/* Takes the writers' lock (invariant 3): the descriptor, or -1 with a message. */
static int keys_lock(const char *data_dir, char *err, size_t cap)
{
    char *dir = fs_join(data_dir, "server");
    if (!dir) return snprintf(err, cap, "out of memory"), -1;
    if (!fs_exists(data_dir)) {
        snprintf(err, cap, "data directory '%s' does not exist (start 'jvdb serve' on it once, or create it)",
                 data_dir);
        free(dir);
        return -1;
    }
    char *lock = fs_mkdir(dir) == JVDB_OK ? fs_join(dir, "api-keys.lock") : NULL;
    free(dir);
    int fd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (fd >= 0) keys_chown_like_dir(data_dir, lock);
    if (fd < 0) snprintf(err, cap, "cannot open the key lock file in '%s/server': %s", data_dir, strerror(errno));
    else if (flock(fd, LOCK_EX) != 0) {
        snprintf(err, cap, "cannot lock the key file: %s", strerror(errno));
        close(fd);
        fd = -1;
    }
    free(lock);
    return fd;
}

/* Releases the key file lock taken by keys_lock and closes its descriptor. */
static void keys_unlock(int fd)
{
    flock(fd, LOCK_UN);
    close(fd);
}

/* ---------------------------------------------------------------- create / revoke */

int keys_spec_check(const struct key_spec *sp, int64_t now_s, char *err, size_t cap)
{
    if (sp->role != KEY_ROLE_READ && sp->role != KEY_ROLE_WRITE && sp->role != KEY_ROLE_ADMIN)
        return snprintf(err, cap, "role must be read, write or admin"), -1;
    if (sp->ndb > KEY_MAX_DATABASES)
        return snprintf(err, cap, "a key names at most %d databases", KEY_MAX_DATABASES), -1;
    for (size_t i = 0; i < sp->ndb; i++) {
        if (!db_name_valid(sp->databases[i]))
            return snprintf(err, cap,
                            "database name '%.80s' is not allowed (use 1 to %d characters of A-Z a-z 0-9 _ -)",
                            sp->databases[i], JVDB_MAX_NAME_LEN),
                   -1;
    }
    if (sp->expires_s && sp->expires_s <= now_s) return snprintf(err, cap, "the expiry is not in the future"), -1;
    const char *d = sp->description ? sp->description : "";
    if (strlen(d) > KEY_MAX_DESCRIPTION)
        return snprintf(err, cap, "the description is longer than %d bytes", KEY_MAX_DESCRIPTION), -1;
    for (const char *p = d; *p; p++)
        if ((unsigned char)*p < 0x20) return snprintf(err, cap, "the description contains a control character"), -1;
    return 0;
}

/* A fresh key text and its id, from the kernel's random source. */
static int keys_random(char text[KEY_TEXT_LEN + 1], char id[KEY_ID_LEN + 1])
{
    unsigned char raw[KEY_ID_LEN / 2 + KEY_SECRET_LEN / 2];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    char idhex[KEY_ID_LEN + 1], sec[KEY_SECRET_LEN + 1];
    keys_hex_encode(raw, KEY_ID_LEN / 2, idhex);
    keys_hex_encode(raw + KEY_ID_LEN / 2, KEY_SECRET_LEN / 2, sec);
    snprintf(text, KEY_TEXT_LEN + 1, "jvdb_%s_%s", idhex, sec);
    memcpy(id, idhex, KEY_ID_LEN + 1);
    OPENSSL_cleanse(raw, sizeof raw);
    OPENSSL_cleanse(sec, sizeof sec);
    return 0;
}

/* A deep copy of an entry (for the caller of create). */
static int keys_entry_copy(const struct key_entry *src, struct key_entry *dst)
{
    *dst = *src;
    dst->description = strdup(src->description);
    dst->databases = src->ndb ? calloc(src->ndb, sizeof *dst->databases) : NULL;
    dst->ndb = 0;
    for (size_t i = 0; i < src->ndb && dst->databases; i++)
        if ((dst->databases[i] = strdup(src->databases[i]))) dst->ndb++;
    return dst->description && dst->ndb == src->ndb ? 0 : -1;
}

/* Fills a new entry from the spec. */
static int keys_entry_new(const struct key_spec *sp, const char *id, const char *text, int64_t now_s,
                          struct key_entry *e)
{
    memset(e, 0, sizeof *e);
    memcpy(e->id, id, KEY_ID_LEN + 1);
    if (keys_hash(text, e->hash)) return -1;
    e->role = sp->role;
    e->created_s = now_s;
    e->expires_s = sp->expires_s;
    e->description = strdup(sp->description ? sp->description : "");
    e->databases = sp->ndb ? calloc(sp->ndb, sizeof *e->databases) : NULL;
    for (size_t i = 0; i < sp->ndb && e->databases; i++)
        if ((e->databases[i] = strdup(sp->databases[i]))) e->ndb++;
    return e->description && e->ndb == sp->ndb ? 0 : -1;
}

int keys_create(const char *data_dir, const struct key_spec *sp, char text[KEY_TEXT_LEN + 1], struct key_entry *out,
                char *err, size_t cap)
{
    int64_t now = (int64_t)time(NULL);
    if (keys_spec_check(sp, now, err, cap)) return -1;
    int fd = keys_lock(data_dir, err, cap);
    if (fd < 0) return -1;
    struct key_set ks;
    int rc = keys_load(data_dir, &ks, err, cap);
    if (rc == 0 && ks.n >= KEY_MAX_KEYS) rc = -1, snprintf(err, cap, "there are already %d keys", KEY_MAX_KEYS);
    struct key_entry *grown = rc == 0 ? realloc(ks.v, (ks.n + 1) * sizeof *ks.v) : NULL;
    if (rc == 0 && !grown) rc = -1, snprintf(err, cap, "out of memory");
    char id[KEY_ID_LEN + 1];
    if (rc == 0) {
        ks.v = grown;
        memset(&ks.v[ks.n], 0, sizeof *ks.v);
        if (keys_random(text, id) || keys_entry_new(sp, id, text, now, &ks.v[ks.n])) {
            keys_entry_free(&ks.v[ks.n]);
            rc = -1, snprintf(err, cap, "cannot make a random key");
        } else {
            ks.n++;
            rc = keys_save(data_dir, &ks, err, cap);
            if (rc == 0 && keys_entry_copy(&ks.v[ks.n - 1], out)) rc = -1, snprintf(err, cap, "out of memory");
        }
    }
    keys_free(&ks);
    keys_unlock(fd);
    if (rc) OPENSSL_cleanse(text, KEY_TEXT_LEN + 1);
    return rc;
}

int keys_revoke(const char *data_dir, const char *id, char *err, size_t cap)
{
    int fd = keys_lock(data_dir, err, cap);
    if (fd < 0) return -1;
    struct key_set ks;
    int rc = keys_load(data_dir, &ks, err, cap);
    size_t at = ks.n;
    for (size_t i = 0; rc == 0 && i < ks.n; i++)
        if (!strcmp(ks.v[i].id, id)) at = i;
    if (rc == 0 && at == ks.n) {
        rc = 1;
    } else if (rc == 0) {
        keys_entry_free(&ks.v[at]);
        memmove(&ks.v[at], &ks.v[at + 1], (ks.n - at - 1) * sizeof *ks.v);
        ks.n--;
        rc = keys_save(data_dir, &ks, err, cap);
    }
    keys_free(&ks);
    keys_unlock(fd);
    return rc;
}
