/* Build identity: the canonical JSON forms and their hashes.
 *
 * config_hash must match the reference implementation byte for byte
 * (docs/recipe.md#identity); the escaping lives in util/json.c. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "recipe/recipe.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/json.h"

char *kiln_recipe_config_canonical(const struct kiln_recipe *r, size_t *ret_len)
{
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "{\"locale\":");
	kiln_json_put_cstr(&b, r->locale);
	kiln_buf_puts(&b, ",\"overlays\":[");
	for (size_t i = 0; i < r->n_overlays; i++) {
		const struct kiln_overlay *o = &r->overlays[i];
		kiln_buf_puts(&b, i ? ",{\"files\":[" : "{\"files\":[");
		for (size_t k = 0; k < o->n_files; k++) {
			const struct kiln_file *f = &o->files[k];
			kiln_buf_puts(&b, k ? ",{\"content_hash\":\"" : "{\"content_hash\":\"");
			kiln_buf_puts(&b, f->content_sha256);
			kiln_buf_puts(&b, "\",\"mode\":");
			kiln_json_put_cstr(&b, f->mode_str);
			kiln_buf_puts(&b, ",\"path\":");
			kiln_json_put_string(&b, f->path, f->path_len, true);
			kiln_buf_putc(&b, '}');
		}
		kiln_buf_puts(&b, "],\"name\":");
		kiln_json_put_string(&b, o->name, o->name_len, true);
		kiln_buf_putc(&b, '}');
	}
	kiln_buf_puts(&b, "],\"packages\":[");
	for (size_t i = 0; i < r->n_packages; i++) {
		if (i)
			kiln_buf_putc(&b, ',');
		kiln_json_put_cstr(&b, r->packages[i]);
	}
	kiln_buf_puts(&b, "],\"timezone\":");
	kiln_json_put_cstr(&b, r->timezone);
	kiln_buf_putc(&b, '}');
	return kiln_buf_steal(&b, ret_len);
}

int64_t kiln_recipe_derive_epoch(const char config_hash[KILN_SHA256_HEX_LEN + 1])
{
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = config_hash[i];
		unsigned d =
		    (c >= '0' && c <= '9') ? (unsigned)(c - '0') : (unsigned)(c - 'a' + 10);
		v = (v << 4) | (d & 0xf);
	}
	return INT64_C(1577836800) + (int64_t)(v % UINT64_C(347155199));
}

static void put_opt_string(struct kiln_buf *b, const char *s)
{
	if (s)
		kiln_json_put_cstr(b, s);
	else
		kiln_buf_puts(b, "null");
}

void kiln_recipe_put_healthcheck(struct kiln_buf *b, const struct kiln_healthcheck *h)
{
	if (!h) {
		kiln_buf_puts(b, "null");
		return;
	}
	kiln_buf_puts(b, "{\"cmd\":");
	kiln_json_put_cstr(b, h->cmd);
	kiln_buf_printf(b,
	                ",\"interval_s\":%" PRId64 ",\"retries\":%" PRId64
	                ",\"start_period_s\":%" PRId64 ",\"timeout_s\":%" PRId64 "}",
	                h->interval_s, h->retries, h->start_period_s, h->timeout_s);
}

/* Everything that can change the bytes of an artifact. Deliberately absent:
 * `name` (a label, never written into an image), memory_mb and cpus (limits,
 * not inputs) and timeout_s/warning_s (a build that ends in time produces the
 * same bytes whatever its limit). Keys sorted, no whitespace. */
char *kiln_recipe_build_canonical(const struct kiln_recipe *r, const struct kiln_build_inputs *in,
                                  size_t *ret_len)
{
	static const struct kiln_build_inputs none = {NULL, NULL};
	if (!in)
		in = &none;
	struct kiln_buf b = KILN_BUF_INIT;
	kiln_buf_puts(&b, "{\"base\":");
	kiln_json_put_cstr(&b, r->base);
	kiln_buf_printf(&b, ",\"config_hash\":\"%s\",\"context_sha256\":", r->config_hash);
	put_opt_string(&b, in->context_sha256);
	kiln_buf_puts(&b, ",\"format\":1,\"healthcheck\":");
	kiln_recipe_put_healthcheck(&b, r->healthcheck);
	kiln_buf_puts(&b, ",\"kiln_version\":");
	kiln_json_put_cstr(&b, KILN_VERSION);
	kiln_buf_puts(&b, ",\"outputs\":[");
	bool first = true;
	for (unsigned bit = 1; bit <= KILN_OUTPUT_LAST; bit <<= 1) {
		if (!(r->outputs & bit))
			continue;
		kiln_buf_printf(&b, "%s\"%s\"", first ? "" : ",", kiln_output_name(bit));
		first = false;
	}
	kiln_buf_printf(&b, "],\"source_date_epoch\":%" PRId64 ",\"steps\":[",
	                r->source_date_epoch);
	for (size_t i = 0; i < r->n_steps; i++) {
		if (i)
			kiln_buf_putc(&b, ',');
		kiln_json_put_cstr(&b, r->steps[i].text);
	}
	kiln_buf_puts(&b, "],\"tools\":");
	put_opt_string(&b, in->tools);
	kiln_buf_putc(&b, '}');
	return kiln_buf_steal(&b, ret_len);
}

void kiln_recipe_build_key(const struct kiln_recipe *r, const struct kiln_build_inputs *in,
                           char ret[KILN_SHA256_HEX_LEN + 1])
{
	size_t n;
	_cleanup_free_ char *c = kiln_recipe_build_canonical(r, in, &n);
	kiln_sha256_hex(c, n, ret);
}
