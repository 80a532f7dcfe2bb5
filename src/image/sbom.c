#include "image/sbom.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/sha256.h"

static int cmp_pkg(const void *a, const void *b)
{
	const struct kiln_sbom_package *x = *(const struct kiln_sbom_package *const *)a;
	const struct kiln_sbom_package *y = *(const struct kiln_sbom_package *const *)b;
	int c = strcmp(x->name, y->name);
	if (!c)
		c = strcmp(x->arch, y->arch);
	if (!c)
		c = strcmp(x->version, y->version);
	return c;
}

static bool is_hex64(const char *s)
{
	size_t i = 0;
	for (; s[i]; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return i == KILN_SHA256_HEX_LEN;
}

/* purl component encoding: everything but unreserved characters as %XX
 * (a Debian epoch's ':' and a version's '+' included). */
static void put_purl_part(struct kiln_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-' || c == '_' || c == '~') {
			kiln_buf_putc(b, (char)c);
		} else {
			kiln_buf_putc(b, '%');
			kiln_buf_putc(b, hex[c >> 4]);
			kiln_buf_putc(b, hex[c & 15]);
		}
	}
}

/* SPDXIDs allow [A-Za-z0-9.-] only. */
static void put_spdxid_part(struct kiln_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '-';
		kiln_buf_putc(b, ok ? (char)c : '-');
	}
}

int kiln_sbom_spdx_json(const char *doc_name, int64_t source_date_epoch,
                        const struct kiln_sbom_package *pkgs, size_t n, char **ret, size_t *ret_len,
                        struct kiln_error **err)
{
	if (!doc_name || !*doc_name)
		return kiln_error_set(err, EINVAL, "sbom: empty document name");
	time_t t = (time_t)source_date_epoch;
	struct tm tm;
	char created[32];
	if (source_date_epoch < 0 || !gmtime_r(&t, &tm) ||
	    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		return kiln_error_set(err, EINVAL, "sbom: SOURCE_DATE_EPOCH %lld out of range",
		                      (long long)source_date_epoch);

	_cleanup_free_ const struct kiln_sbom_package **sorted =
	    xcalloc(n ? n : 1, sizeof(*sorted));
	for (size_t i = 0; i < n; i++) {
		const struct kiln_sbom_package *p = &pkgs[i];
		if (!p->name || !*p->name || !p->version || !*p->version || !p->arch || !*p->arch ||
		    !p->sha256)
			return kiln_error_set(err, EINVAL, "sbom: package %zu (%s): empty field", i,
			                      p->name && *p->name ? p->name : "?");
		if (!is_hex64(p->sha256))
			return kiln_error_set(
			    err, EINVAL, "sbom: package %s: sha256 must be 64 lowercase hex digits",
			    p->name);
		sorted[i] = p;
	}
	if (n)
		qsort(sorted, n, sizeof(*sorted), cmp_pkg);
	for (size_t i = 1; i < n; i++)
		if (strcmp(sorted[i]->name, sorted[i - 1]->name) == 0 &&
		    strcmp(sorted[i]->arch, sorted[i - 1]->arch) == 0)
			return kiln_error_set(err, EINVAL, "sbom: package %s:%s listed twice",
			                      sorted[i]->name, sorted[i]->arch);

	/* The namespace must be unique per distinct document: a digest of
	 * everything the document says, so equal inputs give equal bytes. */
	struct kiln_sha256 h;
	kiln_sha256_init(&h);
	kiln_sha256_update(&h, doc_name, strlen(doc_name) + 1);
	kiln_sha256_update(&h, created, strlen(created) + 1);
	for (size_t i = 0; i < n; i++) {
		const struct kiln_sbom_package *p = sorted[i];
		const char *f[] = {p->name, p->version, p->arch, p->sha256};
		for (size_t k = 0; k < ELEMENTSOF(f); k++)
			kiln_sha256_update(&h, f[k], strlen(f[k]) + 1);
	}
	char digest[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_final_hex(&h, digest);

	struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "{\"spdxVersion\":\"SPDX-2.3\",\"dataLicense\":\"CC0-1.0\","
	                  "\"SPDXID\":\"SPDXRef-DOCUMENT\",\"name\":");
	kiln_json_put_cstr(&b, doc_name);
	kiln_buf_printf(&b, ",\"documentNamespace\":\"https://kiln.invalid/spdx/%s\"", digest);
	kiln_buf_printf(&b,
	                ",\"creationInfo\":{\"created\":\"%s\",\"creators\":[\"Tool: kiln-%s\"]}",
	                created, KILN_VERSION);
	kiln_buf_puts(&b, ",\"packages\":[");
	for (size_t i = 0; i < n; i++) {
		const struct kiln_sbom_package *p = sorted[i];
		kiln_buf_puts(&b, i ? ",{" : "{");
		kiln_buf_puts(&b, "\"SPDXID\":\"SPDXRef-Package-");
		kiln_buf_printf(&b, "%zu-", i + 1);
		put_spdxid_part(&b, p->name);
		kiln_buf_puts(&b, "\",\"name\":");
		kiln_json_put_cstr(&b, p->name);
		kiln_buf_puts(&b, ",\"versionInfo\":");
		kiln_json_put_cstr(&b, p->version);
		kiln_buf_puts(&b, ",\"downloadLocation\":\"NOASSERTION\",\"filesAnalyzed\":false,"
		                  "\"licenseConcluded\":\"NOASSERTION\","
		                  "\"licenseDeclared\":\"NOASSERTION\","
		                  "\"copyrightText\":\"NOASSERTION\",");
		kiln_buf_printf(
		    &b, "\"checksums\":[{\"algorithm\":\"SHA256\",\"checksumValue\":\"%s\"}],",
		    p->sha256);
		_cleanup_buf_ struct kiln_buf purl = KILN_BUF_INIT;
		kiln_buf_puts(&purl, p->purl_prefix ? p->purl_prefix : "pkg:deb/debian/");
		put_purl_part(&purl, p->name);
		kiln_buf_putc(&purl, '@');
		put_purl_part(&purl, p->version);
		kiln_buf_puts(&purl, "?arch=");
		put_purl_part(&purl, p->arch);
		kiln_buf_puts(&b, "\"externalRefs\":[{\"referenceCategory\":\"PACKAGE-MANAGER\","
		                  "\"referenceType\":\"purl\",\"referenceLocator\":");
		kiln_json_put_string(&b, purl.data, purl.len, true);
		kiln_buf_puts(&b, "}]}");
	}
	kiln_buf_puts(&b, "],\"relationships\":[");
	for (size_t i = 0; i < n; i++) {
		kiln_buf_puts(&b, i ? "," : "");
		kiln_buf_puts(&b, "{\"spdxElementId\":\"SPDXRef-DOCUMENT\","
		                  "\"relationshipType\":\"DESCRIBES\","
		                  "\"relatedSpdxElement\":\"SPDXRef-Package-");
		kiln_buf_printf(&b, "%zu-", i + 1);
		put_spdxid_part(&b, sorted[i]->name);
		kiln_buf_puts(&b, "\"}");
	}
	kiln_buf_puts(&b, "]}\n");
	*ret = kiln_buf_steal(&b, ret_len);
	return 0;
}
