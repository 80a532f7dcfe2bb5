/* http/tls.c — --tls-self-signed: a local certificate for first use.
 *
 * GnuTLS is already here (libmicrohttpd's TLS), so the key and certificate
 * are made in-process rather than by running openssl: no dependency on a
 * tool's command line, and the key never exists outside a 0600 file. The
 * pair is kept in state_dir/tls/ and reused, so a browser's "proceed
 * anyway" exception for it keeps working across restarts. */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"
#include "util/alloc.h"
#include "util/fs.h"

#define VALIDITY_S (825 * 24 * 3600) /* the longest lifetime browsers accepted for TLS certs */
#define RENEW_MARGIN_S (24 * 3600)

static void crt_freep(gnutls_x509_crt_t *c)
{
	if (*c)
		gnutls_x509_crt_deinit(*c);
}
static void key_freep(gnutls_x509_privkey_t *k)
{
	if (*k)
		gnutls_x509_privkey_deinit(*k);
}
static void datum_freep(gnutls_datum_t *d)
{
	gnutls_free(d->data);
	d->data = NULL;
}

static int gt_error(struct kiln_error **err, int gr, const char *what)
{
	return kiln_error_set(err, EIO, "tls: %s: %s", what, gnutls_strerror(gr));
}

/* The kept certificate is usable: it parses and stays valid past the margin. */
static bool cert_usable(const char *cert_path, const char *key_path)
{
	_cleanup_free_ char *pem = NULL;
	size_t len;
	struct stat st;
	if (stat(key_path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
		return false;
	if (kiln_read_file(cert_path, 1 << 20, &pem, &len, NULL) < 0)
		return false;
	_cleanup_(crt_freep) gnutls_x509_crt_t crt = NULL;
	gnutls_datum_t d = {(unsigned char *)pem, (unsigned)len};
	if (gnutls_x509_crt_init(&crt) < 0 ||
	    gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) < 0)
		return false;
	time_t exp = gnutls_x509_crt_get_expiration_time(crt);
	return exp != (time_t)-1 && exp > time(NULL) + RENEW_MARGIN_S;
}

static int generate(int dirfd, struct kiln_error **err)
{
	_cleanup_(key_freep) gnutls_x509_privkey_t key = NULL;
	_cleanup_(crt_freep) gnutls_x509_crt_t crt = NULL;
	int gr;
	if ((gr = gnutls_x509_privkey_init(&key)) < 0)
		return gt_error(err, gr, "key init");
	if ((gr = gnutls_x509_privkey_generate(
	         key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0)) < 0)
		return gt_error(err, gr, "generating the key");
	if ((gr = gnutls_x509_crt_init(&crt)) < 0)
		return gt_error(err, gr, "certificate init");

	unsigned char serial[16];
	if ((gr = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial))) < 0)
		return gt_error(err, gr, "serial");
	serial[0] &= 0x7f; /* a positive INTEGER */
	time_t now = time(NULL);
	static const char cn[] = "kiln self-signed (localhost)";
	static const unsigned char v4[] = {127, 0, 0, 1};
	static const unsigned char v6[16] = {[15] = 1};
	if ((gr = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
	    (gr = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial))) < 0 ||
	    (gr = gnutls_x509_crt_set_activation_time(crt, now - 3600)) < 0 ||
	    (gr = gnutls_x509_crt_set_expiration_time(crt, now + VALIDITY_S)) < 0 ||
	    (gr = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
	                                        sizeof(cn) - 1)) < 0 ||
	    (gr = gnutls_x509_crt_set_key(crt, key)) < 0 ||
	    /* Browsers match names only against subjectAltName. */
	    (gr = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
	                                               GNUTLS_FSAN_APPEND)) < 0 ||
	    (gr = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, v4, sizeof(v4),
	                                               GNUTLS_FSAN_APPEND)) < 0 ||
	    (gr = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, v6, sizeof(v6),
	                                               GNUTLS_FSAN_APPEND)) < 0 ||
	    (gr = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
	    (gr = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0 ||
	    (gr = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0)
		return gt_error(err, gr, "certificate fields");
	if ((gr = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0)
		return gt_error(err, gr, "signing");

	_cleanup_(datum_freep) gnutls_datum_t kpem = {0};
	_cleanup_(datum_freep) gnutls_datum_t cpem = {0};
	if ((gr = gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &kpem)) < 0 ||
	    (gr = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cpem)) < 0)
		return gt_error(err, gr, "export");
	/* Key first: a certificate on disk always has its key beside it. */
	int r = kiln_write_file_atomic_at(dirfd, "key.pem", kpem.data, kpem.size, 0600);
	if (r == 0)
		r = kiln_write_file_atomic_at(dirfd, "cert.pem", cpem.data, cpem.size, 0644);
	explicit_bzero(kpem.data, kpem.size);
	if (r < 0)
		return kiln_error_set_errno(err, -r, "tls: writing the key and certificate");
	return 0;
}

int kiln_http_tls_self_signed(const char *state_dir, char **ret_cert, char **ret_key,
                              bool *ret_created, struct kiln_error **err)
{
	_cleanup_free_ char *dir = xasprintf("%s/tls", state_dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return kiln_error_set_errno(err, errno, "%s: mkdir", dir);
	_cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dirfd < 0)
		return kiln_error_set_errno(err, errno, "%s: open", dir);
	_cleanup_free_ char *cert = xasprintf("%s/cert.pem", dir);
	_cleanup_free_ char *key = xasprintf("%s/key.pem", dir);
	bool created = false;
	if (!cert_usable(cert, key)) {
		int r = generate(dirfd, err);
		if (r < 0)
			return r;
		created = true;
	}
	*ret_cert = TAKE_PTR(cert);
	*ret_key = TAKE_PTR(key);
	if (ret_created)
		*ret_created = created;
	return 0;
}
