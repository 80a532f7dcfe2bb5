/* service/session.c — browser sessions and their CSRF tokens.
 *
 * A session id is 32 random bytes (base64url, 43 characters): like a
 * token, only its SHA-256 is stored, so a copy of the database opens no
 * session. The CSRF token is HMAC-SHA256(key, "kiln-csrf-v1\0" + id): it
 * binds the double-submit cookie to one session, so a token an attacker
 * obtained for their own session is worthless with the victim's cookie,
 * and the server keeps no per-session CSRF state. The key is 32 random
 * bytes kept in the database (server_secrets), created by the first
 * opener; ON CONFLICT DO NOTHING makes two concurrent first openers agree
 * on one key. */
#include <errno.h>
#include <nettle/hmac.h>
#include <string.h>
#include <sys/random.h>

#include "service/internal.h"
#include "util/alloc.h"

#define DEFAULT_TTL_S (12u * 3600u)
#define CSRF_CONTEXT "kiln-csrf-v1"

static int hex_decode(const char *hex, uint8_t *out, size_t n)
{
	if (!hex || strlen(hex) != 2 * n)
		return -EINVAL;
	for (size_t i = 0; i < 2 * n; i++) {
		char c = hex[i];
		int v = c >= '0' && c <= '9'   ? c - '0'
		        : c >= 'a' && c <= 'f' ? c - 'a' + 10
		        : c >= 'A' && c <= 'F' ? c - 'A' + 10
		                               : -1;
		if (v < 0)
			return -EINVAL;
		if (i % 2 == 0)
			out[i / 2] = (uint8_t)(v << 4);
		else
			out[i / 2] |= (uint8_t)v;
	}
	return 0;
}

int svc_session_secret_load(struct kiln_service *s, struct kiln_error **err)
{
	uint8_t fresh[sizeof(s->csrf_key)];
	if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh))
		return kiln_error_set_errno(err, errno ? errno : EIO, "getrandom");
	char hex[2 * sizeof(fresh) + 1];
	kiln_hex_encode(fresh, sizeof(fresh), hex);
	explicit_bzero(fresh, sizeof(fresh));

	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "INSERT INTO server_secrets (name, value) VALUES ('csrf', $1)"
	                        " ON CONFLICT (name) DO NOTHING",
	                        &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, hex);
		r = kiln_db_step(st, err);
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	if (r == 0)
		r = kiln_db_prepare(s->db, "SELECT value FROM server_secrets WHERE name = 'csrf'",
		                    &st, err);
	if (r == 0)
		r = kiln_db_step(st, err);
	if (r == 1)
		r = hex_decode(kiln_db_column_text(st, 0), s->csrf_key, sizeof(s->csrf_key)) == 0
		        ? 0
		        : kiln_error_set(err, EPROTO, "server_secrets: the csrf key is malformed");
	else if (r == 0)
		r = kiln_error_set(err, EIO, "server_secrets: the csrf key vanished");
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	explicit_bzero(hex, sizeof(hex));
	return r;
}

void kiln_session_info_clear(struct kiln_session_info *i)
{
	if (!i)
		return;
	free(i->owner);
	i->owner = NULL;
}

void kiln_service_session_csrf(struct kiln_service *s, const char *id,
                               char ret[KILN_CSRF_TOKEN_LEN + 1])
{
	struct hmac_sha256_ctx c;
	uint8_t mac[SHA256_DIGEST_SIZE];
	hmac_sha256_set_key(&c, sizeof(s->csrf_key), s->csrf_key);
	hmac_sha256_update(&c, sizeof(CSRF_CONTEXT), (const uint8_t *)CSRF_CONTEXT);
	hmac_sha256_update(&c, strlen(id), (const uint8_t *)id);
	hmac_sha256_digest(&c, sizeof(mac), mac);
	svc_base64url(mac, sizeof(mac), ret);
	explicit_bzero(&c, sizeof(c));
}

bool kiln_service_session_csrf_ok(struct kiln_service *s, const char *id, const char *token)
{
	if (!id || !token || strlen(token) != KILN_CSRF_TOKEN_LEN)
		return false;
	char want[KILN_CSRF_TOKEN_LEN + 1];
	kiln_service_session_csrf(s, id, want);
	unsigned char diff = 0;
	for (size_t i = 0; i < KILN_CSRF_TOKEN_LEN; i++)
		diff |= (unsigned char)(want[i] ^ token[i]);
	return diff == 0;
}

static bool id_well_formed(const char *id)
{
	if (!id || strlen(id) != KILN_SESSION_ID_LEN)
		return false;
	for (const char *p = id; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	return true;
}

int kiln_service_session_create(struct kiln_service *s, const char *token, unsigned ttl_s,
                                char **ret_id, struct kiln_session_info *ret,
                                struct kiln_error **err)
{
	char token_id[KILN_BUILD_ID_LEN + 1];
	_cleanup_free_ char *owner = NULL;
	int r = svc_token_check(s, token, token_id, &owner, err);
	if (r < 0)
		return r;

	uint8_t raw[32];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return kiln_error_set_errno(err, errno ? errno : EIO, "getrandom");
	char id[KILN_SESSION_ID_LEN + 1];
	svc_base64url(raw, sizeof(raw), id);
	explicit_bzero(raw, sizeof(raw));
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex(id, strlen(id), digest);

	int64_t now = kiln_now_us();
	int64_t expires = now + (int64_t)(ttl_s ? ttl_s : DEFAULT_TTL_S) * 1000000;
	pthread_mutex_lock(&s->lock);
	/* Expired rows are useless (a check refuses them): the table holds
	 * only sessions that could still be live. */
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	r = kiln_db_prepare(s->db, "DELETE FROM sessions WHERE expires_us <= $1", &st, err);
	if (r == 0) {
		kiln_db_bind_int64(st, 1, now);
		r = kiln_db_step(st, err);
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	if (r == 0)
		r = kiln_db_prepare(s->db,
		                    "INSERT INTO sessions (id_sha256, token_id, owner, created_us,"
		                    " expires_us) VALUES ($1, $2, $3, $4, $5)",
		                    &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, digest);
		kiln_db_bind_text(st, 2, token_id);
		kiln_db_bind_text(st, 3, owner);
		kiln_db_bind_int64(st, 4, now);
		kiln_db_bind_int64(st, 5, expires);
		r = kiln_db_step(st, err);
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		explicit_bzero(id, sizeof(id));
		return r;
	}
	struct kiln_session_info info = {
	    .owner = TAKE_PTR(owner), .created_us = now, .expires_us = expires};
	kiln_service_session_csrf(s, id, info.csrf_token);
	*ret_id = xstrdup(id);
	explicit_bzero(id, sizeof(id));
	*ret = info;
	return 0;
}

int kiln_service_session_check(struct kiln_service *s, const char *id,
                               struct kiln_session_info *ret, struct kiln_error **err)
{
	if (!id_well_formed(id))
		return kiln_error_set(err, EACCES, "no such session");
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex(id, strlen(id), digest);
	struct kiln_session_info info = {0};
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "SELECT s.owner, s.created_us, s.expires_us FROM sessions s"
	                        " JOIN tokens t ON t.id = s.token_id"
	                        " WHERE s.id_sha256 = $1 AND s.revoked = 0 AND t.revoked = 0"
	                        " AND s.expires_us > $2",
	                        &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, digest);
		kiln_db_bind_int64(st, 2, kiln_now_us());
		r = kiln_db_step(st, err);
	}
	if (r == 1) {
		info.owner = xstrdup(kiln_db_column_text(st, 0));
		info.created_us = kiln_db_column_int64(st, 1);
		info.expires_us = kiln_db_column_int64(st, 2);
		r = 0;
	} else if (r == 0) {
		r = kiln_error_set(err, EACCES, "session expired or signed out");
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	kiln_service_session_csrf(s, id, info.csrf_token);
	*ret = info;
	return 0;
}

int kiln_service_session_revoke(struct kiln_service *s, const char *id, struct kiln_error **err)
{
	if (!id_well_formed(id))
		return kiln_error_set(err, EACCES, "no such session");
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex(id, strlen(id), digest);
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "UPDATE sessions SET revoked = 1"
	                        " WHERE id_sha256 = $1 AND revoked = 0 AND expires_us > $2",
	                        &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, digest);
		kiln_db_bind_int64(st, 2, kiln_now_us());
		r = kiln_db_step(st, err);
	}
	if (r == 0 && kiln_db_changes(s->db) == 0)
		r = kiln_error_set(err, EACCES, "session expired or signed out");
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	return r;
}
