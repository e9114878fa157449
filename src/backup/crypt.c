/*
 * crypt.c — encrypted and signed repositories (docs/FORMAT.md, "Encrypted repositories").
 *
 * A layer over any repository (directory or S3) with the same struct repo_ops, so backup.c never
 * knows whether it talks to plain or encrypted storage.  An encrypted repository holds a marker,
 * jvdb-repo.json, with the key-derivation salt and a key check; from the key file and that salt,
 * HKDF-SHA-256 derives two independent keys: one for AES-256-GCM over the archives, one for
 * HMAC-SHA-256 over every backup.json.  The invariants it keeps:
 *
 *   - every byte a reader gets back was written by a holder of the key, for this database and
 *     backup id, in this order, and nothing was cut off: each 1 MiB chunk of an archive is sealed
 *     with a nonce derived from the object's random 96-bit base nonce and the chunk number, and its
 *     AAD binds the object header, the chunk number, a final-chunk flag and "<database>/<id>";
 *     backup.json is an envelope whose HMAC covers the database, the id and the canonical bytes;
 *     an extra object (the HNSW graph) is sealed like an archive, its AAD binding its name too;
 *   - the key never opens what it did not seal: a plain repository given a key, an encrypted one
 *     given none, or one given another key, fails with a message saying which (never garbage).
 *
 * The check of the marker happens at the first operation (so opening stays free of I/O, as it is
 * for a plain repository) and is cached in the handle, which, like every repository handle, serves
 * one thread at a time (so no lock is held across that I/O); an S3 repository pays one GET for it.
 * Without a key the layer only checks that the repository is not encrypted and passes through.
 */
#include "backup/backup.h"

#include "core/err.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CRYPT_MARKER     "jvdb-repo.json"
#define CRYPT_MAGIC      "JVDBENC1"
#define CRYPT_VERSION    1u
#define CRYPT_CHUNK      (1u << 20)
#define CRYPT_TAG        16u
#define CRYPT_HDR        32u
#define CRYPT_KEY_MIN    32u
#define CRYPT_KEY_MAX    4096u
/* The envelope of a signed backup.json: PREFIX <64 hex> MID <canonical json> "}\n". */
#define CRYPT_ENV_PREFIX "{\"hmac_sha256\":\""
#define CRYPT_ENV_MID    "\",\"signed\":"

enum crypt_state { CRYPT_UNKNOWN, CRYPT_PLAIN, CRYPT_PENDING, CRYPT_ON };

struct repo_crypt {
    struct jvdb_repo base;
    jvdb_repo *inner;
    char *key_file; /* NULL: no key given */
    unsigned char ikm[CRYPT_KEY_MAX];
    size_t ikm_len;
    enum crypt_state state;
    unsigned char enc[32], mac[32];
    struct repo_ops ops; /* ours, with the inner repository's kind */
};

/* ------------------------------------------------------------------ primitives */

/* Writes n bytes as 2n lowercase hex digits and a NUL. */
static void crypt_hex(const unsigned char *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Reads exactly 2n lowercase hex digits into n bytes; -1 on any other length or character. */
static int crypt_unhex(const char *s, unsigned char *out, size_t n)
{
    if (!s || strlen(s) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[2 * i + k];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
            else return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

/* HKDF-SHA-256 of the key file's bytes with `salt`, expanded for `info` into one 32-byte key. */
static int crypt_hkdf(const unsigned char *ikm, size_t ikm_len, const unsigned char *salt, size_t salt_len,
                      const char *info, unsigned char out[32])
{
    EVP_PKEY_CTX *k = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, NULL);
    size_t outlen = 32;
    int ok = k && EVP_PKEY_derive_init(k) > 0 && EVP_PKEY_CTX_set_hkdf_md(k, EVP_sha256()) > 0 &&
             EVP_PKEY_CTX_set1_hkdf_salt(k, salt, (int)salt_len) > 0 &&
             EVP_PKEY_CTX_set1_hkdf_key(k, ikm, (int)ikm_len) > 0 &&
             EVP_PKEY_CTX_add1_hkdf_info(k, (const unsigned char *)info, (int)strlen(info)) > 0 &&
             EVP_PKEY_derive(k, out, &outlen) > 0 && outlen == 32;
    EVP_PKEY_CTX_free(k);
    return ok ? JVDB_OK : err_set(JVDB_EIO, "key derivation (HKDF-SHA-256) failed in OpenSSL");
}

/* HMAC-SHA-256 over the concatenation of n parts. */
static int crypt_hmac(const unsigned char key[32], const void *const *parts, const size_t *lens, size_t n,
                      unsigned char out[32])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *c = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                            OSSL_PARAM_construct_end() };
    size_t outl = 0;
    int ok = c && EVP_MAC_init(c, key, 32, params) == 1;
    for (size_t i = 0; ok && i < n; i++) ok = EVP_MAC_update(c, parts[i], lens[i]) == 1;
    ok = ok && EVP_MAC_final(c, out, &outl, 32) == 1 && outl == 32;
    EVP_MAC_CTX_free(c);
    EVP_MAC_free(mac);
    return ok ? JVDB_OK : err_set(JVDB_EIO, "HMAC-SHA-256 failed in OpenSSL");
}

/* ------------------------------------------------------------------ the marker */

/* Loads the key file into c->ikm, trailing whitespace dropped; refuses one shorter than CRYPT_KEY_MIN or
 * longer than CRYPT_KEY_MAX bytes. */
static int crypt_read_key(struct repo_crypt *c)
{
    FILE *f = fopen(c->key_file, "rb");
    if (!f) return err_errno(errno, "cannot read the repository key file %s", c->key_file);
    size_t n = fread(c->ikm, 1, sizeof c->ikm, f);
    int more = fgetc(f) != EOF, bad = ferror(f);
    fclose(f);
    if (bad) return err_set(JVDB_EIO, "cannot read the repository key file %s", c->key_file);
    if (more)
        return err_set(JVDB_EINVAL, "the repository key file %s is longer than %u bytes", c->key_file, CRYPT_KEY_MAX);
    /* An editor's trailing newline must not change the key. */
    while (n && (c->ikm[n - 1] == '\n' || c->ikm[n - 1] == '\r' || c->ikm[n - 1] == ' ' || c->ikm[n - 1] == '\t')) n--;
    if (n < CRYPT_KEY_MIN)
        return err_set(JVDB_EINVAL,
                       "the repository key file %s holds %zu bytes; at least %u are needed (make one with "
                       "`openssl rand -base64 48 > FILE`)",
                       c->key_file, n, CRYPT_KEY_MIN);
    c->ikm_len = n;
    return JVDB_OK;
}

/* Derives the encryption and MAC keys for `salt`, and the key check the marker records: an HMAC (MAC key)
 * of the parameters and salt, so a wrong key is told apart without decrypting anything. */
static int crypt_derive(struct repo_crypt *c, const unsigned char salt[16], char check_hex[65])
{
    int rc = crypt_hkdf(c->ikm, c->ikm_len, salt, 16, "jvdb backup encryption v1", c->enc);
    if (!rc) rc = crypt_hkdf(c->ikm, c->ikm_len, salt, 16, "jvdb backup mac v1", c->mac);
    if (rc) return rc;
    char salt_hex[33];
    crypt_hex(salt, 16, salt_hex);
    char msg[128];
    int ml = snprintf(msg, sizeof msg, "jvdb-repo-key-check v1 aes-256-gcm hkdf-sha256 %u %s", CRYPT_CHUNK, salt_hex);
    const void *parts[] = { msg };
    size_t lens[] = { (size_t)ml };
    unsigned char d[32];
    if ((rc = crypt_hmac(c->mac, parts, lens, 1, d))) return rc;
    crypt_hex(d, 32, check_hex);
    return JVDB_OK;
}

/* Spells the marker jvdb-repo.json, byte for byte, that crypt_init writes and crypt_marker_load compares. */
static int crypt_marker_text(const char *check, const char *salt_hex, char *doc, size_t cap)
{
    return snprintf(doc, cap,
                    "{\"chunk_size\":%u,\"cipher\":\"aes-256-gcm\",\"format\":1,\"kdf\":\"hkdf-sha256\","
                    "\"key_check\":\"%s\",\"mac\":\"hmac-sha256\",\"salt\":\"%s\"}\n",
                    CRYPT_CHUNK, check, salt_hex);
}

/* Checks the marker read from the repository: known parameters, a key given, the key's check matching,
 * and the bytes exactly what crypt_marker_text writes; on success the derived keys are in c. */
static int crypt_marker_load(struct repo_crypt *c, const char *buf, size_t len)
{
    json_error_t je;
    json_t *doc = json_loadb(buf, len, 0, &je);
    const char *cipher = json_string_value(json_object_get(doc, "cipher"));
    const char *kdf = json_string_value(json_object_get(doc, "kdf"));
    const char *salt_hex = json_string_value(json_object_get(doc, "salt"));
    const char *check = json_string_value(json_object_get(doc, "key_check"));
    json_t *chunk = json_object_get(doc, "chunk_size"), *fmt = json_object_get(doc, "format");
    unsigned char salt[16];
    int rc = JVDB_OK;
    if (!json_is_object(doc) || !cipher || !kdf || !check || !json_is_integer(chunk) || !json_is_integer(fmt) ||
        crypt_unhex(salt_hex, salt, 16))
        rc = err_set(JVDB_ECORRUPT, "repository %s: %s is damaged (not the marker of an encrypted repository)",
                     c->base.spec, CRYPT_MARKER);
    else if (json_integer_value(fmt) != 1 || strcmp(cipher, "aes-256-gcm") || strcmp(kdf, "hkdf-sha256") ||
             json_integer_value(chunk) != CRYPT_CHUNK)
        rc =
            err_set(JVDB_EINVAL, "repository %s is encrypted in a way this version does not know (format %lld, %s, %s)",
                    c->base.spec, (long long)json_integer_value(fmt), cipher, kdf);
    else if (!c->key_file)
        rc = err_set(JVDB_EINVAL,
                     "repository %s is encrypted: give its key file with --repo-key-file FILE "
                     "(or JVDB_REPO_KEY_FILE)",
                     c->base.spec);
    else {
        char want[65];
        char doc[512];
        /* The marker must be exactly what crypt_init wrote: no field can be changed unnoticed. */
        /* key_check is untrusted: its length is checked before 65 bytes of it are compared. */
        if (!(rc = crypt_derive(c, salt, want)) && (strlen(check) != 64 || CRYPTO_memcmp(want, check, 65)))
            rc = err_set(JVDB_EINVAL, "the key in %s does not open repository %s (another key, or a damaged %s)",
                         c->key_file, c->base.spec, CRYPT_MARKER);
        else if (!rc && ((size_t)crypt_marker_text(check, salt_hex, doc, sizeof doc) != len || memcmp(doc, buf, len)))
            rc = err_set(JVDB_ECORRUPT, "repository %s: %s has been altered", c->base.spec, CRYPT_MARKER);
    }
    json_decref(doc);
    return rc;
}

/* Decides, once, what the repository is; see the state machine in the header comment. */
static int crypt_ready(struct repo_crypt *c)
{
    int rc = JVDB_OK;
    if (c->state != CRYPT_UNKNOWN) goto out;
    char *buf = NULL;
    size_t len = 0;
    rc = c->inner->ops->read_object(c->inner, CRYPT_MARKER, &buf, &len);
    if (!rc) {
        rc = crypt_marker_load(c, buf, len);
        free(buf);
        if (!rc) c->state = CRYPT_ON;
        goto out;
    }
    if (rc != JVDB_ENOTFOUND) goto out;
    err_clear();
    rc = JVDB_OK;
    if (!c->key_file) {
        c->state = CRYPT_PLAIN;
        goto out;
    }
    /* A key on a repository without a marker: fine for an empty (or missing) one, which the first
     * backup makes encrypted; refused on one that already holds plain backups. */
    char **names = NULL;
    size_t n = 0;
    rc = c->inner->ops->list_databases(c->inner, &names, &n);
    jvdb_free_names(names, n);
    if (rc == JVDB_ENOTFOUND) {
        err_clear();
        rc = JVDB_OK;
    } else if (rc) {
        goto out;
    } else if (n) {
        rc = err_set(JVDB_EINVAL,
                     "repository %s is not encrypted (it holds backups made without a key); drop "
                     "--repo-key-file / JVDB_REPO_KEY_FILE for it, or use a new repository",
                     c->base.spec);
        goto out;
    }
    c->state = CRYPT_PENDING;
out:
    return rc;
}

/* ------------------------------------------------------------------ AEAD chunks */

struct crypt_aead {
    unsigned char hdr[CRYPT_HDR];
    /* "<database>/<id>", "<database>/<id>/<name>" of an extra object, or "<database>/<name>" of a log object */
    char bind[JVDB_MAX_NAME_LEN + 600];
    EVP_CIPHER_CTX *ctx;
    uint64_t idx;
};

/* Prepares a cipher context bound to "<database>/<id>", starting at chunk 0. */
static int crypt_aead_init(struct crypt_aead *a, const char *db, const char *id)
{
    snprintf(a->bind, sizeof a->bind, "%s/%s", db, id);
    a->ctx = EVP_CIPHER_CTX_new();
    a->idx = 0;
    return a->ctx ? JVDB_OK : err_set(JVDB_ENOMEM, "out of memory");
}

/* Seals (enc) or opens one chunk in place-free fashion; returns 0, or -1 when the tag is wrong. */
static int crypt_chunk(struct crypt_aead *a, const unsigned char key[32], int enc, int final, const unsigned char *in,
                       size_t n, unsigned char *out, unsigned char tag[CRYPT_TAG])
{
    unsigned char nonce[12];
    memcpy(nonce, a->hdr + 16, 12);
    for (int i = 0; i < 8; i++) nonce[4 + i] ^= (unsigned char)(a->idx >> (56 - 8 * i));
    unsigned char ctr[9];
    for (int i = 0; i < 8; i++) ctr[i] = (unsigned char)(a->idx >> (8 * i));
    ctr[8] = (unsigned char)(final ? 1 : 0);
    int l = 0, ok;
    if (enc) {
        ok = EVP_EncryptInit_ex(a->ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
             EVP_EncryptUpdate(a->ctx, NULL, &l, a->hdr, CRYPT_HDR) == 1 &&
             EVP_EncryptUpdate(a->ctx, NULL, &l, ctr, 9) == 1 &&
             EVP_EncryptUpdate(a->ctx, NULL, &l, (const unsigned char *)a->bind, (int)strlen(a->bind)) == 1 &&
             (n == 0 || EVP_EncryptUpdate(a->ctx, out, &l, in, (int)n) == 1) &&
             EVP_EncryptFinal_ex(a->ctx, out + n, &l) == 1 &&
             EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_GCM_GET_TAG, CRYPT_TAG, tag) == 1;
    } else {
        ok = EVP_DecryptInit_ex(a->ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
             EVP_DecryptUpdate(a->ctx, NULL, &l, a->hdr, CRYPT_HDR) == 1 &&
             EVP_DecryptUpdate(a->ctx, NULL, &l, ctr, 9) == 1 &&
             EVP_DecryptUpdate(a->ctx, NULL, &l, (const unsigned char *)a->bind, (int)strlen(a->bind)) == 1 &&
             (n == 0 || EVP_DecryptUpdate(a->ctx, out, &l, in, (int)n) == 1) &&
             EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_GCM_SET_TAG, CRYPT_TAG, tag) == 1 &&
             EVP_DecryptFinal_ex(a->ctx, out + n, &l) == 1;
    }
    a->idx++;
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------ writing */

struct crypt_stage {
    struct repo_stage base;
    struct repo_stage *inner;
    struct repo_crypt *c;
    char db[JVDB_MAX_NAME_LEN + 1], id[BACKUP_ID_MAX];
    struct crypt_aead a;
    int hdr_written;
    unsigned char *pt, *ct;
    size_t pt_len;
};

/* Encrypts the buffered plaintext as the next chunk (the last one when `final`) and writes it and its tag
 * on, preceded the first time by the object header. */
static int crypt_stage_seal(struct crypt_stage *s, int final)
{
    if (!s->hdr_written) {
        int rc = s->inner->write(s->inner, s->a.hdr, CRYPT_HDR);
        if (rc) return rc;
        s->hdr_written = 1;
    }
    if (crypt_chunk(&s->a, s->c->enc, 1, final, s->pt, s->pt_len, s->ct, s->ct + s->pt_len))
        return err_set(JVDB_EIO, "backup %s of '%s': encryption failed in OpenSSL", s->id, s->db);
    int rc = s->inner->write(s->inner, s->ct, s->pt_len + CRYPT_TAG);
    s->pt_len = 0;
    return rc;
}

/* repo_stage write: buffers plaintext and seals every full 1 MiB chunk. */
static int crypt_stage_write(struct repo_stage *rs, const void *buf, size_t len)
{
    struct crypt_stage *s = (struct crypt_stage *)rs;
    const unsigned char *p = buf;
    while (len) {
        size_t take = CRYPT_CHUNK - s->pt_len < len ? CRYPT_CHUNK - s->pt_len : len;
        memcpy(s->pt + s->pt_len, p, take);
        s->pt_len += take;
        p += take;
        len -= take;
        /* A full chunk is never the last: the final one is always shorter (possibly empty). */
        if (s->pt_len == CRYPT_CHUNK) {
            int rc = crypt_stage_seal(s, 0);
            if (rc) return rc;
        }
    }
    return JVDB_OK;
}

/* Fills a fresh object header: magic, version, chunk size, random base nonce. */
static int crypt_new_header(unsigned char hdr[CRYPT_HDR])
{
    uint32_t ver = CRYPT_VERSION, chunk = CRYPT_CHUNK;
    memset(hdr, 0, CRYPT_HDR);
    memcpy(hdr, CRYPT_MAGIC, 8);
    memcpy(hdr + 8, &ver, 4);
    memcpy(hdr + 12, &chunk, 4);
    return RAND_bytes(hdr + 16, 12) == 1 ? JVDB_OK : err_set(JVDB_EIO, "no random bytes from OpenSSL");
}

/* Seals a whole buffer in memory as one object (header, 1 MiB chunks, the last one shorter, possibly
 * empty) under a's binding; frees a's context either way.  `what` names the object in messages. */
static int crypt_seal_buffer(struct crypt_aead *a, const unsigned char key[32], const void *buf, size_t len,
                             const char *what, unsigned char **out, size_t *out_len)
{
    size_t chunks = len / CRYPT_CHUNK + 1, total = CRYPT_HDR + len + chunks * CRYPT_TAG;
    unsigned char *o = malloc(total);
    int rc = o ? crypt_new_header(a->hdr) : err_set(JVDB_ENOMEM, "out of memory");
    if (!rc) memcpy(o, a->hdr, CRYPT_HDR);
    const unsigned char *in = buf;
    unsigned char *w = o + CRYPT_HDR;
    for (size_t k = 0; !rc && k < chunks; k++) {
        size_t n = k + 1 < chunks ? CRYPT_CHUNK : len - k * CRYPT_CHUNK;
        if (crypt_chunk(a, key, 1, k + 1 == chunks, in, n, w, w + n))
            rc = err_set(JVDB_EIO, "%s: encryption failed in OpenSSL", what);
        in += n;
        w += n + CRYPT_TAG;
    }
    EVP_CIPHER_CTX_free(a->ctx);
    a->ctx = NULL;
    if (rc) {
        free(o);
        return rc;
    }
    *out = o;
    *out_len = total;
    return JVDB_OK;
}

/* An extra object (the HNSW graph, which holds what the vectors hold) is sealed like an archive:
 * header, 1 MiB chunks, the last one shorter (possibly empty), and an AAD that also binds its name,
 * so neither the archive nor another extra can stand in for it. */
static int crypt_stage_put_extra(struct repo_stage *rs, const char *name, const void *buf, size_t len)
{
    struct crypt_stage *s = (struct crypt_stage *)rs;
    struct crypt_aead a;
    if (crypt_aead_init(&a, s->db, s->id)) return JVDB_ENOMEM;
    snprintf(a.bind + strlen(a.bind), sizeof a.bind - strlen(a.bind), "/%s", name);
    char what[JVDB_MAX_NAME_LEN + BACKUP_ID_MAX + 32];
    snprintf(what, sizeof what, "backup %s of '%s'", s->id, s->db);
    unsigned char *out = NULL;
    size_t out_len = 0;
    int rc = crypt_seal_buffer(&a, s->c->enc, buf, len, what, &out, &out_len);
    if (!rc) rc = s->inner->put_extra(s->inner, name, out, out_len);
    free(out);
    return rc;
}

/* Opens an extra object sealed by crypt_stage_put_extra; JVDB_ECORRUPT saying why when any byte of
 * it was not sealed by this key for this database, backup and name (or it was cut short). */
static int crypt_open_extra(struct repo_crypt *c, const char *db, const char *id, const char *name,
                            const unsigned char *in, size_t len, char **buf, size_t *out_len)
{
    struct crypt_aead a;
    char why[160] = "";
    uint32_t ver = 0, chunk = 0;
    if (len >= CRYPT_HDR) {
        memcpy(&ver, in + 8, 4);
        memcpy(&chunk, in + 12, 4);
    }
    size_t body = len >= CRYPT_HDR ? len - CRYPT_HDR : 0, full = body / (CRYPT_CHUNK + CRYPT_TAG);
    size_t last = body - full * (CRYPT_CHUNK + CRYPT_TAG);
    if (len < CRYPT_HDR || memcmp(in, CRYPT_MAGIC, 8)) snprintf(why, sizeof why, "it is not sealed (no header)");
    else if (ver != CRYPT_VERSION || chunk != CRYPT_CHUNK)
        snprintf(why, sizeof why, "unknown encryption version or chunk size");
    else if (last < CRYPT_TAG) snprintf(why, sizeof why, "it ends inside a chunk (truncated)");
    if (why[0]) return err_set(JVDB_ECORRUPT, "backup %s of '%s': %s cannot be decrypted: %s", id, db, name, why);
    size_t plain = body - (full + 1) * CRYPT_TAG;
    unsigned char *out = malloc(plain ? plain : 1);
    if (!out || crypt_aead_init(&a, db, id)) {
        free(out);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    snprintf(a.bind + strlen(a.bind), sizeof a.bind - strlen(a.bind), "/%s", name);
    memcpy(a.hdr, in, CRYPT_HDR);
    const unsigned char *p = in + CRYPT_HDR;
    int rc = JVDB_OK;
    for (size_t k = 0; k <= full; k++) {
        size_t n = k < full ? CRYPT_CHUNK : last - CRYPT_TAG;
        if (crypt_chunk(&a, c->enc, 0, k == full, p, n, out + k * CRYPT_CHUNK, (unsigned char *)(uintptr_t)(p + n))) {
            rc = err_set(JVDB_ECORRUPT,
                         "backup %s of '%s': %s cannot be decrypted: chunk %zu fails authentication (altered, "
                         "truncated, moved from another backup, or sealed with another key)",
                         id, db, name, k);
            break;
        }
        p += n + CRYPT_TAG;
    }
    EVP_CIPHER_CTX_free(a.ctx);
    if (rc) {
        OPENSSL_cleanse(out, plain);
        free(out);
        return rc;
    }
    *buf = (char *)out;
    *out_len = plain;
    return JVDB_OK;
}

/* The signed envelope of backup.json (see the header comment). */
static int crypt_sign_meta(struct repo_crypt *c, const char *db, const char *id, const char *meta, size_t len,
                           char **out, size_t *out_len)
{
    const void *parts[] = { "jvdb-backup-meta v1\n", db, "\n", id, "\n", meta };
    size_t lens[] = { 20, strlen(db), 1, strlen(id), 1, len };
    unsigned char d[32];
    int rc = crypt_hmac(c->mac, parts, lens, 6, d);
    if (rc) return rc;
    size_t body = len && meta[len - 1] == '\n' ? len - 1 : len;
    size_t n = strlen(CRYPT_ENV_PREFIX) + 64 + strlen(CRYPT_ENV_MID) + body + 2;
    char *e = malloc(n + 1);
    if (!e) return err_set(JVDB_ENOMEM, "out of memory");
    char hex[65];
    crypt_hex(d, 32, hex);
    int k = snprintf(e, n + 1, "%s%s%s", CRYPT_ENV_PREFIX, hex, CRYPT_ENV_MID);
    memcpy(e + k, meta, body);
    memcpy(e + k + body, "}\n", 2);
    *out = e;
    *out_len = n;
    return JVDB_OK;
}

/* repo_stage commit: seals the final (short, possibly empty) chunk, then commits the inner stage with
 * backup.json in its signed envelope. */
static int crypt_stage_commit(struct repo_stage *rs, const char *meta, size_t len)
{
    struct crypt_stage *s = (struct crypt_stage *)rs;
    int rc = crypt_stage_seal(s, 1);
    char *env = NULL;
    size_t env_len = 0;
    if (!rc) rc = crypt_sign_meta(s->c, s->db, s->id, meta, len, &env, &env_len);
    if (!rc) rc = s->inner->commit(s->inner, env, env_len);
    free(env);
    return rc;
}

/* repo_stage abort: aborts the inner stage and frees the layer's stage. */
static void crypt_stage_abort(struct repo_stage *rs)
{
    struct crypt_stage *s = (struct crypt_stage *)rs;
    if (s->inner) s->inner->abort(s->inner);
    EVP_CIPHER_CTX_free(s->a.ctx);
    free(s->pt);
    free(s->ct);
    free(s);
}

/* ------------------------------------------------------------------ reading */

struct crypt_reader {
    struct repo_reader base;
    struct repo_reader *inner;
    struct repo_crypt *c;
    char what[JVDB_MAX_NAME_LEN + 200];
    struct crypt_aead a;
    int object;                /* a log object: messages name it, not data.jvb.zst */
    int started, done, failed; /* failed: sticky, so a retry cannot skip a bad chunk */
    unsigned char *ct, *pt;
    size_t pt_len, pt_pos;
};

/* Reads until cap bytes or the end of the object. */
static int crypt_fill(struct repo_reader *in, unsigned char *buf, size_t cap, size_t *got)
{
    *got = 0;
    while (*got < cap) {
        size_t n = 0;
        int rc = in->read(in, buf + *got, cap - *got, &n);
        if (rc) return rc;
        if (n == 0) break;
        *got += n;
    }
    return JVDB_OK;
}

/* Fails the read as ECORRUPT with the reason, and marks the reader failed for good. */
static int crypt_bad(struct crypt_reader *r, const char *why)
{
    r->failed = 1;
    if (r->object) return err_set(JVDB_ECORRUPT, "%s cannot be decrypted: %s", r->what, why);
    return err_set(JVDB_ECORRUPT, "%s: %s cannot be decrypted: %s", r->what, BACKUP_DATA_NAME, why);
}

/* Reads and authenticates the next chunk (the header first, on the first call); a short chunk is the
 * final one, and anything after it is refused, so truncation and appended bytes are both caught. */
static int crypt_next_chunk(struct crypt_reader *r)
{
    size_t got;
    int rc;
    if (!r->started) {
        if ((rc = crypt_fill(r->inner, r->a.hdr, CRYPT_HDR, &got))) return rc;
        uint32_t ver, chunk;
        memcpy(&ver, r->a.hdr + 8, 4);
        memcpy(&chunk, r->a.hdr + 12, 4);
        if (got < CRYPT_HDR || memcmp(r->a.hdr, CRYPT_MAGIC, 8))
            return crypt_bad(r, "it is not an encrypted archive (no JVDBENC1 header)");
        if (ver != CRYPT_VERSION || chunk != CRYPT_CHUNK)
            return crypt_bad(r, "unknown encryption version or chunk size");
        r->started = 1;
    }
    if ((rc = crypt_fill(r->inner, r->ct, CRYPT_CHUNK + CRYPT_TAG, &got))) return rc;
    char why[160];
    int final = got < CRYPT_CHUNK + CRYPT_TAG;
    if (got < CRYPT_TAG) {
        snprintf(why, sizeof why, "it ends inside chunk %llu (truncated)", (unsigned long long)r->a.idx);
        return crypt_bad(r, why);
    }
    uint64_t idx = r->a.idx;
    size_t n = got - CRYPT_TAG;
    /* pt_len grows only once the tag checks: a caller that reads again after an error must get
     * nothing of a chunk that failed authentication. */
    r->pt_len = r->pt_pos = 0;
    if (crypt_chunk(&r->a, r->c->enc, 0, final, r->ct, n, r->pt, r->ct + n)) {
        snprintf(why, sizeof why,
                 "chunk %llu fails authentication (altered, truncated, reordered, moved from another "
                 "backup, or sealed with another key)",
                 (unsigned long long)idx);
        return crypt_bad(r, why);
    }
    if (final) {
        unsigned char extra;
        if ((rc = crypt_fill(r->inner, &extra, 1, &got))) return rc;
        if (got) return crypt_bad(r, "bytes after the final chunk");
        r->done = 1;
    }
    r->pt_len = n;
    return JVDB_OK;
}

/* repo_reader read: hands out authenticated plaintext, opening chunks as needed; 0 bytes at the end. */
static int crypt_read(struct repo_reader *rr, void *buf, size_t cap, size_t *got)
{
    struct crypt_reader *r = (struct crypt_reader *)rr;
    *got = 0;
    if (r->failed)
        return err_set(JVDB_ECORRUPT, "%s: %s cannot be decrypted (failed earlier)", r->what, BACKUP_DATA_NAME);
    while (r->pt_pos == r->pt_len) {
        if (r->done) return JVDB_OK;
        int rc = crypt_next_chunk(r);
        if (rc) return rc;
    }
    size_t n = r->pt_len - r->pt_pos < cap ? r->pt_len - r->pt_pos : cap;
    memcpy(buf, r->pt + r->pt_pos, n);
    r->pt_pos += n;
    *got = n;
    return JVDB_OK;
}

/* repo_reader close: closes the inner reader and frees the layer's reader. */
static void crypt_reader_close(struct repo_reader *rr)
{
    struct crypt_reader *r = (struct crypt_reader *)rr;
    if (r->inner) r->inner->close(r->inner);
    EVP_CIPHER_CTX_free(r->a.ctx);
    free(r->ct);
    free(r->pt);
    free(r);
}

/* ------------------------------------------------------------------ repo_ops */

/* repo_ops init: creates the inner repository; with a key on an empty one, makes it encrypted by
 * writing a marker with a fresh random salt. */
static int crypt_init(jvdb_repo *rp)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = c->inner->ops->init(c->inner);
    if (!rc) rc = crypt_ready(c);
    if (rc) return rc;
    if (c->state == CRYPT_PENDING) {
        /* The first backup into an empty repository with a key makes it encrypted. */
        unsigned char salt[16];
        char check[65], salt_hex[33];
        if (RAND_bytes(salt, sizeof salt) != 1) rc = err_set(JVDB_EIO, "no random bytes from OpenSSL");
        if (!rc) rc = crypt_derive(c, salt, check);
        if (!rc) {
            crypt_hex(salt, 16, salt_hex);
            char doc[512];
            int n = crypt_marker_text(check, salt_hex, doc, sizeof doc);
            rc = c->inner->ops->write_object(c->inner, CRYPT_MARKER, doc, (size_t)n);
        }
        if (!rc) c->state = CRYPT_ON;
    }
    return rc;
}

/* repo_ops list_databases: the inner listing, once the repository's encryption state is settled. */
static int crypt_list_databases(jvdb_repo *rp, char ***names, size_t *n)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    *names = NULL;
    *n = 0;
    int rc = crypt_ready(c);
    return rc ? rc : c->inner->ops->list_databases(c->inner, names, n);
}

/* Size of the plaintext an encrypted object of `e` bytes holds, or `e` itself when no plaintext
 * size gives that (so the size check of backup.c reports the object as damaged). */
static int64_t crypt_plain_size(int64_t e)
{
    if (e < (int64_t)(CRYPT_HDR + CRYPT_TAG)) return e;
    int64_t x = e - CRYPT_HDR, k = x / (CRYPT_CHUNK + CRYPT_TAG), rem = x % (CRYPT_CHUNK + CRYPT_TAG);
    if (rem < (int64_t)CRYPT_TAG) return e;
    return k * CRYPT_CHUNK + rem - CRYPT_TAG;
}

/* repo_ops list_backups: the inner listing, with each encrypted object's size given as the plaintext size
 * backup.json records, so backup.c's size check works unchanged. */
static int crypt_list_backups(jvdb_repo *rp, const char *db, struct repo_entry **out, size_t *n)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    *out = NULL;
    *n = 0;
    int rc = crypt_ready(c);
    if (!rc) rc = c->inner->ops->list_backups(c->inner, db, out, n);
    if (!rc && c->state == CRYPT_ON)
        for (size_t i = 0; i < *n; i++)
            if ((*out)[i].data_size >= 0) (*out)[i].data_size = crypt_plain_size((*out)[i].data_size);
    return rc;
}

/* repo_ops read_meta: in an encrypted repository, checks backup.json's envelope and HMAC (bound to database
 * and id) and returns the canonical bytes; a plain one refuses a signed backup.json whose marker is gone. */
static int crypt_read_meta(jvdb_repo *rp, const char *db, const char *id, char **buf, size_t *len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    if (rc) return rc;
    char *b = NULL;
    size_t l = 0;
    if ((rc = c->inner->ops->read_meta(c->inner, db, id, &b, &l))) return rc;
    size_t pl = strlen(CRYPT_ENV_PREFIX), ml = strlen(CRYPT_ENV_MID);
    int signed_env = l >= pl && !memcmp(b, CRYPT_ENV_PREFIX, pl);
    if (c->state != CRYPT_ON) {
        if (signed_env) {
            free(b);
            return err_set(JVDB_EINVAL,
                           "backup %s of '%s' is from an encrypted repository whose marker %s is missing; "
                           "give its key file with --repo-key-file",
                           id, db, CRYPT_MARKER);
        }
        *buf = b;
        *len = l;
        return JVDB_OK;
    }
    unsigned char want[32], got[32];
    char hex[65];
    if (!signed_env || l < pl + 64 + ml + 3 || memcmp(b + pl + 64, CRYPT_ENV_MID, ml) || memcmp(b + l - 2, "}\n", 2) ||
        (memcpy(hex, b + pl, 64), hex[64] = '\0', crypt_unhex(hex, got, 32))) {
        free(b);
        return err_set(JVDB_ECORRUPT, "backup %s of '%s': %s is not signed (an encrypted repository signs every one)",
                       id, db, BACKUP_META_NAME);
    }
    /* The canonical bytes are the envelope's "signed" value plus the newline it ends with. */
    size_t start = pl + 64 + ml, body = l - 2 - start;
    memmove(b, b + start, body);
    b[body] = '\n';
    b[body + 1] = '\0';
    const void *parts[] = { "jvdb-backup-meta v1\n", db, "\n", id, "\n", b };
    size_t lens[] = { 20, strlen(db), 1, strlen(id), 1, body + 1 };
    if ((rc = crypt_hmac(c->mac, parts, lens, 6, want))) {
        free(b);
        return rc;
    }
    if (CRYPTO_memcmp(want, got, 32)) {
        free(b);
        return err_set(JVDB_ECORRUPT,
                       "backup %s of '%s': %s fails its HMAC (altered, moved from another backup, or "
                       "signed with another key)",
                       id, db, BACKUP_META_NAME);
    }
    *buf = b;
    *len = body + 1;
    return JVDB_OK;
}

/* repo_ops open_data: the inner reader, wrapped in a decrypting one when the repository is encrypted. */
static int crypt_open_data(jvdb_repo *rp, const char *db, const char *id, struct repo_reader **out)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    *out = NULL;
    int rc = crypt_ready(c);
    if (rc) return rc;
    struct repo_reader *in = NULL;
    if ((rc = c->inner->ops->open_data(c->inner, db, id, &in))) return rc;
    if (c->state != CRYPT_ON) {
        *out = in;
        return JVDB_OK;
    }
    struct crypt_reader *r = calloc(1, sizeof *r);
    if (r) {
        r->pt = malloc(CRYPT_CHUNK);
        r->ct = malloc(CRYPT_CHUNK + CRYPT_TAG);
    }
    if (!r || !r->pt || !r->ct || crypt_aead_init(&r->a, db, id)) {
        if (r) {
            EVP_CIPHER_CTX_free(r->a.ctx);
            free(r->pt);
            free(r->ct);
        }
        free(r);
        in->close(in);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    r->base.read = crypt_read;
    r->base.close = crypt_reader_close;
    r->inner = in;
    r->c = c;
    snprintf(r->what, sizeof r->what, "backup %s of '%s'", id, db);
    *out = &r->base;
    return JVDB_OK;
}

/* repo_ops stage_begin: the inner stage, wrapped in an encrypting one (with a fresh random base nonce) when
 * the repository is encrypted. */
static int crypt_stage_begin(jvdb_repo *rp, const char *db, const char *id, struct repo_stage **out)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    *out = NULL;
    int rc = crypt_ready(c);
    if (rc) return rc;
    if (c->state == CRYPT_PENDING) return err_set(JVDB_EINVAL, "repository %s: encryption is not set up", c->base.spec);
    struct repo_stage *in = NULL;
    if ((rc = c->inner->ops->stage_begin(c->inner, db, id, &in))) return rc;
    if (c->state != CRYPT_ON) {
        *out = in;
        return JVDB_OK;
    }
    struct crypt_stage *s = calloc(1, sizeof *s);
    if (s) {
        s->pt = malloc(CRYPT_CHUNK);
        s->ct = malloc(CRYPT_CHUNK + CRYPT_TAG);
    }
    if (!s || !s->pt || !s->ct || crypt_aead_init(&s->a, db, id)) {
        if (s) {
            EVP_CIPHER_CTX_free(s->a.ctx);
            free(s->pt);
            free(s->ct);
        }
        free(s);
        in->abort(in);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    s->base.write = crypt_stage_write;
    s->base.commit = crypt_stage_commit;
    s->base.abort = crypt_stage_abort;
    s->base.put_extra = in->put_extra ? crypt_stage_put_extra : NULL;
    s->inner = in;
    s->c = c;
    snprintf(s->db, sizeof s->db, "%s", db);
    snprintf(s->id, sizeof s->id, "%s", id);
    /* A fresh random 96-bit base nonce per object; chunk nonces are it XOR the chunk number. */
    if ((rc = crypt_new_header(s->a.hdr))) {
        crypt_stage_abort(&s->base);
        return rc;
    }
    *out = &s->base;
    return JVDB_OK;
}

/* repo_ops remove: passes through once the repository's encryption state is settled. */
static int crypt_remove(jvdb_repo *rp, const char *db, const char *id)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    return rc ? rc : c->inner->ops->remove(c->inner, db, id);
}

/* repo_ops cleanup: passes through (leftovers are removed whatever they hold). */
static void crypt_cleanup(jvdb_repo *rp, const char *db, int64_t max_age_s)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    c->inner->ops->cleanup(c->inner, db, max_age_s);
}

/* repo_ops close: closes the inner repository and wipes the key material from memory. */
static void crypt_close(jvdb_repo *rp)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    c->inner->ops->close(c->inner);
    OPENSSL_cleanse(c->ikm, sizeof c->ikm);
    OPENSSL_cleanse(c->enc, sizeof c->enc);
    OPENSSL_cleanse(c->mac, sizeof c->mac);
    free(c->key_file);
    free(c);
}

/* repo_ops read_object: passes through (repository-wide objects such as the marker are not encrypted). */
static int crypt_read_object(jvdb_repo *rp, const char *name, char **buf, size_t *len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    return c->inner->ops->read_object(c->inner, name, buf, len);
}

/* repo_ops write_object: passes through, as read_object does. */
static int crypt_write_object(jvdb_repo *rp, const char *name, const void *buf, size_t len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    return c->inner->ops->write_object(c->inner, name, buf, len);
}

/* Extra objects (the HNSW graph) pass through in a plain repository and are opened here in an
 * encrypted one (sealed by crypt_stage_put_extra: never in the clear). */
static int crypt_read_extra(jvdb_repo *rp, const char *db, const char *id, const char *name, char **buf, size_t *len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    if (rc) return rc;
    if (!c->inner->ops->read_extra) return err_set(JVDB_ENOTFOUND, "backup %s/%s carries no %s", db, id, name);
    if (c->state != CRYPT_ON) return c->inner->ops->read_extra(c->inner, db, id, name, buf, len);
    char *sealed = NULL;
    size_t sealed_len = 0;
    if ((rc = c->inner->ops->read_extra(c->inner, db, id, name, &sealed, &sealed_len))) return rc;
    rc = crypt_open_extra(c, db, id, name, (const unsigned char *)sealed, sealed_len, buf, len);
    free(sealed);
    return rc;
}

/* ------------------------------------------------------------------ objects of a database (wal.c) */

/* Whether an object is sealed in an encrypted repository: the log objects (*.jvl), which hold
 * records; the lease (JSON naming a process) stays readable, as forging it can only fence. */
static int crypt_obj_sealed(const struct repo_crypt *c, const char *name)
{
    size_t n = strlen(name);
    return c->state == CRYPT_ON && n > 4 && !strcmp(name + n - 4, ".jvl");
}

/* Lists a database's objects (names are not secret). */
static int crypt_obj_list(jvdb_repo *rp, const char *db, const char *prefix, repo_obj_fn fn, void *arg)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    return rc ? rc : c->inner->ops->obj_list(c->inner, db, prefix, fn, arg);
}

/* Lists a database's objects after a name (the inner repository's, or a filtered full listing). */
static int crypt_obj_list_after(jvdb_repo *rp, const char *db, const char *prefix, const char *after, repo_obj_fn fn,
                                void *arg)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    return rc ? rc : repo_obj_list_after(c->inner, db, prefix, after, fn, arg);
}

/* Seals a whole object as an archive is sealed (1 MiB chunks, the last one shorter, possibly empty),
 * bound to "<database>/<name>". */
static int crypt_obj_seal(struct repo_crypt *c, const char *db, const char *name, const void *buf, size_t len,
                          unsigned char **out, size_t *out_len)
{
    struct crypt_aead a;
    if (crypt_aead_init(&a, db, name)) return JVDB_ENOMEM;
    char what[JVDB_MAX_NAME_LEN + 600];
    snprintf(what, sizeof what, "%.500s of '%s'", name, db);
    return crypt_seal_buffer(&a, c->enc, buf, len, what, out, out_len);
}

/* Writes an object, sealed when it is a log object. */
static int crypt_obj_put(jvdb_repo *rp, const char *db, const char *name, const void *buf, size_t len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    if (rc) return rc;
    if (c->state == CRYPT_PENDING) return err_set(JVDB_EINVAL, "repository %s: encryption is not set up", c->base.spec);
    if (!crypt_obj_sealed(c, name)) return c->inner->ops->obj_put(c->inner, db, name, buf, len);
    unsigned char *sealed = NULL;
    size_t sl = 0;
    if ((rc = crypt_obj_seal(c, db, name, buf, len, &sealed, &sl))) return rc;
    rc = c->inner->ops->obj_put(c->inner, db, name, sealed, sl);
    free(sealed);
    return rc;
}

/* Reads an object, opening (and authenticating) a sealed log object. */
static int crypt_obj_get(jvdb_repo *rp, const char *db, const char *name, char **buf, size_t *len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    *buf = NULL;
    *len = 0;
    int rc = crypt_ready(c);
    if (rc) return rc;
    char *raw = NULL;
    size_t rl = 0;
    if ((rc = c->inner->ops->obj_get(c->inner, db, name, &raw, &rl))) return rc;
    if (!crypt_obj_sealed(c, name)) {
        *buf = raw;
        *len = rl;
        return JVDB_OK;
    }
    /* The archive reader's chunk logic, over the bytes in memory. */
    struct repo_reader *in = repo_mem_reader(raw, rl);
    struct crypt_reader *r = calloc(1, sizeof *r);
    char *plain = malloc(rl + 1);
    if (r) {
        r->pt = malloc(CRYPT_CHUNK);
        r->ct = malloc(CRYPT_CHUNK + CRYPT_TAG);
    }
    if (!in || !r || !r->pt || !r->ct || !plain || crypt_aead_init(&r->a, db, name)) {
        rc = err_set(JVDB_ENOMEM, "out of memory");
    } else {
        r->inner = in;
        r->c = c;
        r->object = 1;
        in = NULL;
        snprintf(r->what, sizeof r->what, "%.*s of '%s'", 120, name, db);
        size_t got = 0, n = 0;
        while (!(rc = crypt_read(&r->base, plain + got, rl + 1 - got, &n)) && n) got += n;
        if (!rc) {
            *buf = plain;
            *len = got;
            plain = NULL;
        }
    }
    if (in) in->close(in);
    if (r) crypt_reader_close(&r->base);
    free(plain);
    free(raw);
    return rc;
}

/* Deletes an object. */
static int crypt_obj_delete(jvdb_repo *rp, const char *db, const char *name)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    return rc ? rc : c->inner->ops->obj_delete(c->inner, db, name);
}

/* Creates an object only if absent (the fencing claims, which are never sealed, like the lease). */
static int crypt_obj_create(jvdb_repo *rp, const char *db, const char *name, const void *buf, size_t len)
{
    struct repo_crypt *c = (struct repo_crypt *)rp;
    int rc = crypt_ready(c);
    if (rc) return rc;
    if (c->state == CRYPT_PENDING) return err_set(JVDB_EINVAL, "repository %s: encryption is not set up", c->base.spec);
    return c->inner->ops->obj_create(c->inner, db, name, buf, len);
}

jvdb_repo *repo_crypt_inner(jvdb_repo *r) { return ((struct repo_crypt *)r)->inner; }

int repo_crypt_wrap(jvdb_repo *inner, const char *key_file, jvdb_repo **out)
{
    *out = NULL;
    struct repo_crypt *c = calloc(1, sizeof *c);
    if (!c || (key_file && !(c->key_file = strdup(key_file)))) {
        free(c);
        inner->ops->close(inner);
        return err_set(JVDB_ENOMEM, "out of memory");
    }
    const struct repo_ops ops = {
        inner->ops->kind,     crypt_init,        crypt_list_databases,
        crypt_list_backups,   crypt_read_meta,   crypt_open_data,
        crypt_stage_begin,    crypt_remove,      crypt_cleanup,
        crypt_close,          crypt_read_object, crypt_write_object,
        crypt_read_extra,     crypt_obj_list,    crypt_obj_put,
        crypt_obj_get,        crypt_obj_delete,  NULL,
        crypt_obj_list_after,
    };
    c->inner = inner;
    c->base.spec = inner->spec;
    int rc = key_file ? crypt_read_key(c) : JVDB_OK;
    if (rc) {
        c->inner = NULL;
        free(c->key_file);
        free(c);
        inner->ops->close(inner);
        return rc;
    }
    c->ops = ops;
    c->ops.obj_create = inner->ops->obj_create ? crypt_obj_create : NULL;
    c->base.ops = &c->ops;
    *out = &c->base;
    return JVDB_OK;
}
