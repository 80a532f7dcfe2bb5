/* util/sha256.h — SHA-256 (nettle, the one hash implementation kiln uses).
 *
 * Digests are shown as 64 lowercase hex characters everywhere: config_hash,
 * build_key, CAS names, ETags. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <nettle/sha2.h>

#define KILN_SHA256_LEN 32
#define KILN_SHA256_HEX_LEN 64

struct kiln_sha256 {
	struct sha256_ctx ctx;
};

void kiln_sha256_init(struct kiln_sha256 *s);
void kiln_sha256_update(struct kiln_sha256 *s, const void *p, size_t n);
/* Writes 65 bytes (64 hex digits + NUL) into hex. */
void kiln_sha256_final_hex(struct kiln_sha256 *s, char hex[KILN_SHA256_HEX_LEN + 1]);
void kiln_sha256_hex(const void *p, size_t n, char hex[KILN_SHA256_HEX_LEN + 1]);
/* Hashes a whole file; returns 0 or -errno. */
int kiln_sha256_file(const char *path, char hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size);
/* Hashes what is left to read of fd (not closed). */
int kiln_sha256_fd(int fd, char hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size);
/* Hex-encodes n bytes into out (2n+1 bytes). */
void kiln_hex_encode(const uint8_t *p, size_t n, char *out);
