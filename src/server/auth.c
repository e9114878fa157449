/*
 * auth.c — the API key check: when a key is configured every route but /health needs
 * `X-API-Key: KEY` or `Authorization: Bearer KEY`.
 *
 * The comparison must not leak how much of a guess was right through its timing.  Both strings
 * are hashed with SHA-256 and the digests compared with CRYPTO_memcmp: the time then depends on
 * neither the common prefix nor the key's length.
 */
#include "server/srv.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>

static int auth_digest(const char *s, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static int auth_equal(const char *given, const char *key)
{
    unsigned char a[32], b[32];
    if (auth_digest(given, a) || auth_digest(key, b)) return 0;
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

/* The key the request offers, or NULL: X-API-Key first, then a Bearer authorization. */
static const char *auth_offered(const http_req *rq)
{
    const char *k = http_header(rq, "X-API-Key");
    if (k) return k;
    const char *a = http_header(rq, "Authorization");
    if (!a || strncasecmp(a, "Bearer ", 7) != 0) return NULL;
    a += 7;
    while (*a == ' ') a++;
    return a;
}

int auth_ok(const server *s, const http_req *rq)
{
    if (!s->cfg.api_key) return 1;
    const char *k = auth_offered(rq);
    return k && auth_equal(k, s->cfg.api_key);
}

void auth_reject(const server *s, const http_req *rq, http_resp *rs)
{
    (void)s;
    rs->auth_challenge = 1;
    if (auth_offered(rq))
        http_error(rs, 401, "UNAUTHORIZED", "the API key is not valid");
    else if (http_header(rq, "Authorization"))
        http_error(rs, 401, "UNAUTHORIZED", "the Authorization header must be 'Bearer KEY'");
    else
        http_error(rs, 401, "UNAUTHORIZED", "an API key is required: send 'X-API-Key: KEY' or 'Authorization: Bearer KEY'");
}
