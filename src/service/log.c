/* service/log.c — build logs: state_dir/logs/<id>.log, append-only, one
 * line per log line, the sequence number of a line is its line number.
 *
 * Why files and not a table: a build can write megabytes of compiler output
 * in bursts; appending to a file costs no database lock (the connection is
 * shared by every request and worker), the log of a finished build can be
 * streamed as it is, and a crash loses at most the unfinished last line.
 * Lines are written whole (one write(2) per batch, O_APPEND), NUL bytes
 * become '?' and a line over 64 KiB is split, so the line count is the
 * sequence. A reader counts only lines that end with '\n'.
 *
 * Reading "after seq N" must not rescan a long log for every live update:
 * an in-memory index per recently read log remembers the byte offset of
 * every 256th line and how far the file has been scanned, so each byte is
 * scanned once and a read seeks to within 256 lines of its start. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "service/internal.h"
#include "util/alloc.h"
#include "util/buf.h"

#define IDX_EVERY 256
#define IDX_CACHE 32
#define CHUNK (64u << 10)

struct log_index {
	char id[KILN_BUILD_ID_LEN + 1];
	uint64_t lines; /* complete lines scanned */
	uint64_t end;   /* offset just after the last complete line scanned */
	uint64_t *cp;   /* cp[k]: offset of line k * IDX_EVERY + 1 */
	size_t n_cp;
	uint64_t used; /* LRU clock */
};

struct kiln_log_sub {
	struct kiln_log_sub *next;
	char id[KILN_BUILD_ID_LEN + 1];
	void (*notify)(void *ud);
	void *ud;
};

char *svc_log_path(struct kiln_service *s, const char *id)
{
	return xasprintf("%s/logs/%s.log", s->state_dir, id);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return; /* a full disk loses log lines, never the build */
		p += w;
		n -= (size_t)w;
	}
}

/* Appends the complete lines of cur (+ data) to out; what is left after the
 * last newline stays in cur. */
static void split_lines(struct kiln_buf *cur, const char *data, size_t len, struct kiln_buf *out)
{
	for (size_t i = 0; i < len; i++) {
		char c = data[i];
		if (c == '\n') {
			if (cur->len)
				kiln_buf_append(out, cur->data, cur->len);
			kiln_buf_putc(out, '\n');
			kiln_buf_reset(cur);
			continue;
		}
		kiln_buf_putc(cur, c == '\0' ? '?' : c);
		if (cur->len >= KILN_LOG_LINE_MAX) {
			kiln_buf_append(out, cur->data, cur->len);
			kiln_buf_putc(out, '\n');
			kiln_buf_reset(cur);
		}
	}
}

static int open_log(struct kiln_service *s, const char *id)
{
	_cleanup_free_ char *p = svc_log_path(s, id);
	return open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
}

void svc_log_append(struct kiln_service *s, const char *id, const char *text, size_t len)
{
	_cleanup_buf_ struct kiln_buf cur = KILN_BUF_INIT;
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;
	split_lines(&cur, text, len, &out);
	if (cur.len) {
		kiln_buf_append(&out, cur.data, cur.len);
		kiln_buf_putc(&out, '\n');
	}
	_cleanup_close_ int fd = open_log(s, id);
	if (fd >= 0 && out.len)
		write_all(fd, out.data, out.len);
}

int svc_log_writer_open(struct log_writer *w, struct kiln_service *s, const char *id)
{
	*w = (struct log_writer){.s = s, .budget = {.max = s->max_log_bytes}};
	snprintf(w->id, sizeof(w->id), "%s", id);
	pthread_mutex_init(&w->mu, NULL);
	w->fd = open_log(s, id);
	if (w->fd < 0)
		return -errno;
	/* A build queued again after a stop appends to its log: what the
	 * earlier runs wrote counts against the same budget. */
	struct stat st;
	if (fstat(w->fd, &st) == 0 && st.st_size > 0)
		w->budget.passed =
		    (uint64_t)st.st_size < w->budget.max ? (uint64_t)st.st_size : w->budget.max;
	return 0;
}

static void writer_put(struct log_writer *w, const char *data, size_t len, bool budgeted)
{
	pthread_mutex_lock(&w->mu);
	/* The per-run output cap of the sandbox (64 MiB a stream) bounds one
	 * step, not a build of a thousand steps: this budget bounds the disk a
	 * build's log takes. A cut mid-line leaves the line unfinished; the
	 * end line terminates it. */
	if (budgeted)
		len = kiln_budget_take(&w->budget, len);
	_cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;
	if (!budgeted && w->partial.len)
		split_lines(&w->partial, "\n", 1, &out);
	split_lines(&w->partial, data, len, &out);
	if (w->fd >= 0 && out.len)
		write_all(w->fd, out.data, out.len);
	pthread_mutex_unlock(&w->mu);
	bool any = out.len > 0;
	if (any)
		svc_log_notify(w->s, w->id);
}

void svc_log_writer_write(struct log_writer *w, const char *data, size_t len)
{
	writer_put(w, data, len, true);
}

void svc_log_writer_end(struct log_writer *w, const char *line)
{
	pthread_mutex_lock(&w->mu);
	_cleanup_free_ char *note = kiln_budget_note(&w->budget);
	pthread_mutex_unlock(&w->mu);
	_cleanup_free_ char *text = xasprintf("%s%s", note ? note : "", line);
	writer_put(w, text, strlen(text), false);
}

void svc_log_writer_close(struct log_writer *w)
{
	if (w->partial.len)
		writer_put(w, "", 0, false);
	kiln_buf_free(&w->partial);
	safe_close(w->fd);
	pthread_mutex_destroy(&w->mu);
}

/* ---- reading ------------------------------------------------------------------- */

/* Scans fd from idx->end to EOF, indexing complete lines. */
static void index_extend(struct log_index *idx, int fd)
{
	char *buf = xmalloc(CHUNK);
	uint64_t off = idx->end;
	for (;;) {
		ssize_t n = pread(fd, buf, CHUNK, (off_t)off);
		if (n <= 0)
			break;
		for (char *p = buf, *e = buf + n; (p = memchr(p, '\n', (size_t)(e - p))); p++) {
			idx->lines++;
			idx->end = off + (uint64_t)(p - buf) + 1;
			if (idx->lines % IDX_EVERY == 0) {
				idx->cp = xreallocarray(idx->cp, idx->n_cp + 1, sizeof(*idx->cp));
				idx->cp[idx->n_cp++] = idx->end;
			}
		}
		off += (uint64_t)n;
	}
	free(buf);
}

static struct log_index *index_get_locked(struct kiln_service *s, const char *id)
{
	static uint64_t lru_clock;
	if (!s->idx)
		s->idx = xcalloc(IDX_CACHE, sizeof(*s->idx));
	struct log_index *victim = &s->idx[0];
	for (size_t i = 0; i < IDX_CACHE; i++) {
		struct log_index *x = &s->idx[i];
		if (strcmp(x->id, id) == 0) {
			x->used = ++lru_clock;
			return x;
		}
		if (x->used < victim->used)
			victim = x;
	}
	free(victim->cp);
	*victim = (struct log_index){.used = ++lru_clock};
	snprintf(victim->id, sizeof(victim->id), "%s", id);
	victim->cp = xmalloc(sizeof(*victim->cp));
	victim->cp[0] = 0;
	victim->n_cp = 1;
	return victim;
}

static bool finished(enum kiln_build_status st)
{
	return st == KILN_BUILD_COMPLETED || st == KILN_BUILD_FAILED || st == KILN_BUILD_CANCELLED;
}

int kiln_service_log_read(struct kiln_service *s, const char *id, const char *owner,
                          uint64_t after_seq, size_t max_lines, struct kiln_log_line **ret,
                          size_t *ret_n, bool *ret_done, struct kiln_error **err)
{
	return kiln_service_log_read_bounded(s, id, owner, after_seq, max_lines, 0, ret, ret_n,
	                                     ret_done, err);
}

int kiln_service_log_read_bounded(struct kiln_service *s, const char *id, const char *owner,
                                  uint64_t after_seq, size_t max_lines, size_t max_bytes,
                                  struct kiln_log_line **ret, size_t *ret_n, bool *ret_done,
                                  struct kiln_error **err)
{
	/* The status first: a build that is finished now has all its lines
	 * on disk already (the last line is written before the record). */
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	int r = kiln_service_get(s, id, owner, &b, err);
	if (r < 0)
		return r;
	bool done = finished(b->status);

	_cleanup_free_ char *path = svc_log_path(s, b->id);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct kiln_log_line *v = NULL;
	size_t n = 0;
	uint64_t total = 0, start = 0, end = 0, skip = 0;
	if (fd >= 0) {
		pthread_mutex_lock(&s->idx_lock);
		struct log_index *idx = index_get_locked(s, b->id);
		index_extend(idx, fd);
		total = idx->lines;
		end = idx->end;
		if (after_seq < total) {
			size_t k = (size_t)(after_seq / IDX_EVERY);
			start = idx->cp[k];
			skip = after_seq - (uint64_t)k * IDX_EVERY;
		}
		pthread_mutex_unlock(&s->idx_lock);
	} else if (errno == ENOENT && b->cached) {
		/* A submit answered from the cache writes no file (a hit costs
		 * a row, not a file): its one line comes from the row. */
		_cleanup_free_ char *line = NULL;
		pthread_mutex_lock(&s->lock);
		r = svc_cached_log_locked(s, b->id, &line, err);
		pthread_mutex_unlock(&s->lock);
		if (r < 0)
			return r;
		if (line) {
			total = 1;
			if (after_seq == 0) {
				line[strcspn(line, "\n")] = 0;
				v = xmalloc(sizeof(*v));
				v[0] = (struct kiln_log_line){.seq = 1, .text = TAKE_PTR(line)};
				n = 1;
			}
		}
	}
	if (after_seq < total && fd >= 0) {
		char *buf = xmalloc(CHUNK);
		_cleanup_buf_ struct kiln_buf cur = KILN_BUF_INIT;
		uint64_t off = start, seq = after_seq - skip;
		size_t bytes = 0;
#define MORE() ((max_lines == 0 || n < max_lines) && (max_bytes == 0 || bytes < max_bytes))
		while (off < end && MORE()) {
			size_t want = end - off < CHUNK ? (size_t)(end - off) : CHUNK;
			ssize_t got = pread(fd, buf, want, (off_t)off);
			if (got <= 0)
				break;
			for (ssize_t i = 0; i < got && MORE(); i++) {
				if (buf[i] != '\n') {
					if (seq >= after_seq)
						kiln_buf_putc(&cur, buf[i]);
					continue;
				}
				seq++;
				if (seq <= after_seq)
					continue;
				v = xreallocarray(v, n + 1, sizeof(*v));
				v[n].seq = seq;
				size_t len;
				v[n].text = kiln_buf_steal(&cur, &len);
				bytes += len;
				n++;
			}
			off += (uint64_t)got;
		}
#undef MORE
		free(buf);
	}
	*ret = v;
	*ret_n = n;
	if (ret_done)
		*ret_done = done && after_seq + n >= total;
	return 0;
}

void kiln_log_lines_free(struct kiln_log_line *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i].text);
	free(v);
}

/* ---- live subscribers ---------------------------------------------------------- */

int kiln_service_log_subscribe(struct kiln_service *s, const char *id, const char *owner,
                               void (*notify)(void *ud), void *ud, struct kiln_log_sub **ret,
                               struct kiln_error **err)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	int r = kiln_service_get(s, id, owner, &b, err);
	if (r < 0)
		return r;
	struct kiln_log_sub *sub = xcalloc(1, sizeof(*sub));
	memcpy(sub->id, b->id, sizeof(sub->id));
	sub->notify = notify;
	sub->ud = ud;
	pthread_mutex_lock(&s->subs_lock);
	sub->next = s->subs;
	s->subs = sub;
	pthread_mutex_unlock(&s->subs_lock);
	*ret = sub;
	return 0;
}

void kiln_service_log_unsubscribe(struct kiln_service *s, struct kiln_log_sub *sub)
{
	if (!sub)
		return;
	pthread_mutex_lock(&s->subs_lock);
	for (struct kiln_log_sub **p = &s->subs; *p; p = &(*p)->next) {
		if (*p == sub) {
			*p = sub->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->subs_lock);
	free(sub);
}

void svc_log_notify(struct kiln_service *s, const char *id)
{
	pthread_mutex_lock(&s->subs_lock);
	for (struct kiln_log_sub *sub = s->subs; sub; sub = sub->next)
		if (strcmp(sub->id, id) == 0)
			sub->notify(sub->ud);
	pthread_mutex_unlock(&s->subs_lock);
}

void svc_log_free_all(struct kiln_service *s)
{
	pthread_mutex_lock(&s->subs_lock);
	while (s->subs) {
		struct kiln_log_sub *n = s->subs->next;
		free(s->subs);
		s->subs = n;
	}
	pthread_mutex_unlock(&s->subs_lock);
	for (size_t i = 0; s->idx && i < IDX_CACHE; i++)
		free(s->idx[i].cp);
	free(s->idx);
	s->idx = NULL;
}
