#include "util/sha256.h"

#include <fcntl.h>
#include <unistd.h>

#include "util/macros.h"

void kiln_hex_encode(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * n] = '\0';
}

void kiln_sha256_init(struct kiln_sha256 *s)
{
	sha256_init(&s->ctx);
}

void kiln_sha256_update(struct kiln_sha256 *s, const void *p, size_t n)
{
	sha256_update(&s->ctx, n, p);
}

void kiln_sha256_final_hex(struct kiln_sha256 *s, char hex[KILN_SHA256_HEX_LEN + 1])
{
	uint8_t d[KILN_SHA256_LEN];
	sha256_digest(&s->ctx, sizeof(d), d);
	kiln_hex_encode(d, sizeof(d), hex);
}

void kiln_sha256_hex(const void *p, size_t n, char hex[KILN_SHA256_HEX_LEN + 1])
{
	struct kiln_sha256 s;
	kiln_sha256_init(&s);
	kiln_sha256_update(&s, p, n);
	kiln_sha256_final_hex(&s, hex);
}

int kiln_sha256_file(const char *path, char hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	return kiln_sha256_fd(fd, hex, ret_size);
}

int kiln_sha256_fd(int fd, char hex[KILN_SHA256_HEX_LEN + 1], uint64_t *ret_size)
{
	struct kiln_sha256 s;
	kiln_sha256_init(&s);
	uint64_t total = 0;
	static __thread uint8_t chunk[1 << 16];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		kiln_sha256_update(&s, chunk, (size_t)n);
		total += (uint64_t)n;
	}
	kiln_sha256_final_hex(&s, hex);
	if (ret_size)
		*ret_size = total;
	return 0;
}
