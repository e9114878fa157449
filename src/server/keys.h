/*
 * keys.h — scoped API keys: the key file both `jvdb serve` and `jvdb keys` read and write
 * (<data>/server/api-keys), and the match of an offered key against it.
 *
 * No store code: the file lives beside the server's other metadata and is replaced atomically
 * through src/core/fs.c; writers of the file (the CLI, the server's REST routes) serialise on an
 * flock of <data>/server/api-keys.lock, so a create in the CLI and a revoke over REST never lose
 * each other's change.
 */
#ifndef JVDB_SERVER_KEYS_H
#define JVDB_SERVER_KEYS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Roles are ordered: each allows everything the ones below it do. */
typedef enum { KEY_ROLE_NONE = 0, KEY_ROLE_READ = 1, KEY_ROLE_WRITE = 2, KEY_ROLE_ADMIN = 3 } key_role;

#define KEY_ID_LEN          16 /* hex digits of the public key id */
#define KEY_SECRET_LEN      64 /* hex digits of the secret part */
/* "jvdb_" ID "_" SECRET */
#define KEY_TEXT_LEN        (5 + KEY_ID_LEN + 1 + KEY_SECRET_LEN)
#define KEY_MAX_DATABASES   64
#define KEY_MAX_DESCRIPTION 256
#define KEY_MAX_KEYS        10000

struct key_entry {
    char id[KEY_ID_LEN + 1];
    unsigned char hash[32]; /* SHA-256 of the whole key text */
    key_role role;
    char **databases; /* NULL (ndb 0) = every database */
    size_t ndb;
    int64_t created_s;
    int64_t expires_s; /* unix seconds; 0 = never */
    char *description; /* never NULL once loaded */
};

struct key_set {
    struct key_entry *v;
    size_t n;
};

/* What `create` asks for. */
struct key_spec {
    key_role role;
    const char *const *databases;
    size_t ndb;
    int64_t expires_s;       /* 0 = never */
    const char *description; /* NULL = "" */
};

key_role key_role_parse(const char *s);
const char *key_role_name(key_role r);

/* "<data>/server/api-keys" (malloc'd). */
char *keys_file_path(const char *data_dir);

/* Reads the key file; a missing file is an empty set.  Returns 0, or -1 with a message in err. */
int keys_load(const char *data_dir, struct key_set *out, char *err, size_t cap);
void keys_free(struct key_set *ks);

/* Checks the spec (role, database names, expiry in the future, description length): 0, or -1
 * with a message in err naming what is wrong. */
int keys_spec_check(const struct key_spec *sp, int64_t now_s, char *err, size_t cap);
/* Creates a key: locks the file, reads it, appends, replaces it atomically.  `text` receives the
 * key itself (shown once, stored nowhere), `out` a copy of the stored entry (keys_entry_free).
 * Returns 0, or -1 with a message in err (nothing changed). */
int keys_create(const char *data_dir, const struct key_spec *sp, char text[KEY_TEXT_LEN + 1], struct key_entry *out,
                char *err, size_t cap);
/* Removes a key by id.  Returns 0, 1 when there is no such key, -1 with a message in err. */
int keys_revoke(const char *data_dir, const char *id, char *err, size_t cap);
void keys_entry_free(struct key_entry *e);

/* SHA-256 of a key text. */
int keys_hash(const char *text, unsigned char out[32]);
/* The entry whose hash equals `hash`, or NULL.  Every entry is compared in constant time
 * (CRYPTO_memcmp) so the time says nothing about how close a guess was. */
const struct key_entry *keys_match(const struct key_set *ks, const unsigned char hash[32]);
/* 1 when the key may be used on `database` (NULL: a route on no database, which needs a key
 * that is not limited to databases). */
int keys_allows_db(const struct key_entry *e, const char *database);

/* The entry as the API shows it (never the hash): key_id, role, databases, created_at,
 * expires_at, description, and "expired" relative to now_s. */
json_t *keys_entry_json(const struct key_entry *e, int64_t now_s);
/* "2026-11-29T21:00:00Z" from unix seconds. */
void keys_time_text(int64_t s, char out[32]);
/* An expiry: a duration from now ("30d", "12h") or a UTC date ("2027-01-31" or
 * "2027-01-31T12:00:00Z").  Returns 0, or -1. */
int keys_parse_expiry(const char *s, int64_t now_s, int64_t *out);

#endif
