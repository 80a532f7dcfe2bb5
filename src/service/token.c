/* service/token.c — API tokens: "kiln_" + 43 characters of base64url (32
 * random bytes, 256 bits). Only the SHA-256 of the whole secret is stored:
 * a leaked database (or backup) does not let anyone act as a user, and a
 * fast unsalted hash is enough for a uniformly random 256-bit secret (no
 * dictionary to attack). Lookup is by the digest, so no comparison of
 * secret bytes happens in a time that depends on them. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "service/internal.h"
#include "util/alloc.h"

#define SECRET_PREFIX "kiln_"
#define SECRET_B64_LEN 43
#define SECRET_LEN (sizeof(SECRET_PREFIX) - 1 + SECRET_B64_LEN)
/* last_used is written at most this often per token: a check on every
 * request must not turn every read into a database write. */
#define LAST_USED_GRANULARITY_US 1000000

void svc_base64url(const uint8_t *p, size_t n, char *out)
{
	static const char tab[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		acc = (acc << 8) | p[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = tab[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[o++] = tab[(acc << (6 - bits)) & 63];
	out[o] = 0;
}

void kiln_token_info_clear(struct kiln_token_info *t)
{
	if (!t)
		return;
	free(t->owner);
	free(t->name);
	t->owner = t->name = NULL;
}

int kiln_service_token_create(struct kiln_service *s, const char *owner, const char *name,
                              char **ret_secret, struct kiln_token_info *ret_info,
                              struct kiln_error **err)
{
	if (!owner || !*owner)
		return kiln_error_set(err, EINVAL, "owner: must not be empty");
	uint8_t raw[32];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return kiln_error_set_errno(err, errno ? errno : EIO, "getrandom");
	char b64[SECRET_B64_LEN + 1];
	svc_base64url(raw, sizeof(raw), b64);
	explicit_bzero(raw, sizeof(raw));
	_cleanup_free_ char *secret = xasprintf(SECRET_PREFIX "%s", b64);
	explicit_bzero(b64, sizeof(b64));
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex(secret, strlen(secret), digest);

	struct kiln_token_info t = {.created_us = kiln_now_us()};
	kiln_uuid4(t.id);
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "INSERT INTO tokens (id, owner, name, secret_sha256, created_us)"
	                        " VALUES ($1, $2, $3, $4, $5)",
	                        &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, t.id);
		kiln_db_bind_text(st, 2, owner);
		kiln_db_bind_text(st, 3, name ? name : "");
		kiln_db_bind_text(st, 4, digest);
		kiln_db_bind_int64(st, 5, t.created_us);
		r = kiln_db_step(st, err);
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	if (ret_info) {
		t.owner = xstrdup(owner);
		t.name = xstrdup(name ? name : "");
		*ret_info = t;
	}
	*ret_secret = TAKE_PTR(secret);
	return 0;
}

int kiln_service_token_list(struct kiln_service *s, struct kiln_token_info **ret, size_t *ret_n,
                            struct kiln_error **err)
{
	struct kiln_token_info *v = NULL;
	size_t n = 0;
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r =
	    kiln_db_prepare(s->db,
	                    "SELECT id, owner, name, created_us, last_used_us, revoked FROM tokens"
	                    " ORDER BY created_us, id",
	                    &st, err);
	while (r == 0 && (r = kiln_db_step(st, err)) == 1) {
		v = xreallocarray(v, n + 1, sizeof(*v));
		struct kiln_token_info *t = &v[n++];
		snprintf(t->id, sizeof(t->id), "%s", kiln_db_column_text(st, 0));
		t->owner = xstrdup(kiln_db_column_text(st, 1));
		t->name = xstrdup(kiln_db_column_text(st, 2));
		t->created_us = kiln_db_column_int64(st, 3);
		t->last_used_us = kiln_db_column_int64(st, 4);
		t->revoked = kiln_db_column_int64(st, 5) != 0;
		r = 0;
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			kiln_token_info_clear(&v[i]);
		free(v);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int kiln_service_token_revoke(struct kiln_service *s, const char *id, struct kiln_error **err)
{
	if (!kiln_is_uuid(id))
		return kiln_error_set(err, ENOENT, "token %s: not found", id ? id : "(null)");
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db, "UPDATE tokens SET revoked = 1 WHERE id = $1", &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, id);
		r = kiln_db_step(st, err);
	}
	if (r == 0 && kiln_db_changes(s->db) == 0)
		r = kiln_error_set(err, ENOENT, "token %s: not found", id);
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	return r;
}

static bool secret_well_formed(const char *s)
{
	if (!s || strlen(s) != SECRET_LEN || strncmp(s, SECRET_PREFIX, 5) != 0)
		return false;
	for (const char *p = s + 5; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	return true;
}

int svc_token_check(struct kiln_service *s, const char *secret, char ret_id[KILN_BUILD_ID_LEN + 1],
                    char **ret_owner, struct kiln_error **err)
{
	if (!secret_well_formed(secret))
		return kiln_error_set(err, EACCES, "invalid token");
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_hex(secret, strlen(secret), digest);
	_cleanup_free_ char *owner = NULL;
	char id[KILN_BUILD_ID_LEN + 1] = "";
	int64_t last = 0, now = kiln_now_us();
	bool revoked = false;
	pthread_mutex_lock(&s->lock);
	_cleanup_stmt_ struct kiln_db_stmt *st = NULL;
	int r = kiln_db_prepare(s->db,
	                        "SELECT id, owner, revoked, last_used_us FROM tokens"
	                        " WHERE secret_sha256 = $1",
	                        &st, err);
	if (r == 0) {
		kiln_db_bind_text(st, 1, digest);
		r = kiln_db_step(st, err);
	}
	if (r == 1) {
		snprintf(id, sizeof(id), "%s", kiln_db_column_text(st, 0));
		owner = xstrdup(kiln_db_column_text(st, 1));
		revoked = kiln_db_column_int64(st, 2) != 0;
		last = kiln_db_column_int64(st, 3);
		r = 0;
	} else if (r == 0) {
		r = kiln_error_set(err, EACCES, "invalid token");
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	if (r == 0 && revoked)
		r = kiln_error_set(err, EACCES, "token revoked");
	if (r == 0 && now - last >= LAST_USED_GRANULARITY_US) {
		r = kiln_db_prepare(s->db, "UPDATE tokens SET last_used_us = $2 WHERE id = $1", &st,
		                    err);
		if (r == 0) {
			kiln_db_bind_text(st, 1, id);
			kiln_db_bind_int64(st, 2, now);
			r = kiln_db_step(st, err);
		}
	}
	kiln_db_stmt_done(TAKE_PTR(st));
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	if (ret_id)
		memcpy(ret_id, id, sizeof(id));
	*ret_owner = TAKE_PTR(owner);
	return 0;
}

int kiln_service_token_check(struct kiln_service *s, const char *secret, char **ret_owner,
                             struct kiln_error **err)
{
	return svc_token_check(s, secret, NULL, ret_owner, err);
}
