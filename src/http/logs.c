/* http/logs.c — build logs: plain text, or a live Server-Sent Events stream.
 *
 * A live stream must not hold an event-loop thread while it waits for the
 * next line, so its content reader suspends the MHD connection when it has
 * nothing to send. Three things resume it: the service's notify (new lines
 * or the build ended, from a worker thread), the heartbeat (a comment line
 * every sse_heartbeat_s, which is also how a vanished client is noticed —
 * MHD cannot see a disconnect while suspended), and shutdown. `suspended`
 * is only changed under the stream's lock, so a resume always meets a
 * connection that really is suspended.
 *
 * Memory: a stream never queues lines for its reader. It reads the log
 * from disk when MHD asks for more to send, which MHD does only once the
 * socket took what it had — so a reader that stops reading costs one
 * batch (at most STREAM_BYTES of log, plus one line) until the idle
 * timeout closes its connection, and it resumes with Last-Event-ID. A
 * batch of 512 lines of up to 64 KiB each was 32 MiB per stalled reader.
 * One client address holds at most STREAMS_PER_CLIENT live streams. */
#include <string.h>

#include "http/internal.h"
#include "http/json.h"
#include "util/alloc.h"

#define BATCH 512
#define STREAM_BYTES (256u << 10)
#define OUT_KEEP (64u << 10) /* a drained buffer bigger than this is freed */
#define STREAMS_PER_CLIENT 16

struct log_stream {
	struct kiln_http_server *srv;
	struct MHD_Connection *conn;
	char id[KILN_BUILD_ID_LEN + 1];
	char *owner;
	bool sse;
	uint64_t last_seq;
	struct kiln_log_sub *sub;
	uint8_t client[HTTP_CLIENT_KEY_LEN];

	pthread_mutex_t lock;
	bool suspended, dirty, heartbeat;
	bool finished; /* after `out` drains, the stream ends */
	struct kiln_buf out;
	size_t out_off;

	struct log_stream *prev, *next; /* srv->streams, under srv->streams_lock */
};

static void stream_notify(void *ud)
{
	struct log_stream *st = ud;
	pthread_mutex_lock(&st->lock);
	st->dirty = true;
	if (st->suspended) {
		st->suspended = false;
		MHD_resume_connection(st->conn);
	}
	pthread_mutex_unlock(&st->lock);
}

void http_streams_wake_all(struct kiln_http_server *s, bool heartbeat)
{
	pthread_mutex_lock(&s->streams_lock);
	for (struct log_stream *st = s->streams; st; st = st->next) {
		pthread_mutex_lock(&st->lock);
		if (heartbeat)
			st->heartbeat = true;
		if (st->suspended) {
			st->suspended = false;
			MHD_resume_connection(st->conn);
		}
		pthread_mutex_unlock(&st->lock);
	}
	pthread_mutex_unlock(&s->streams_lock);
}

static void stream_final_status(struct log_stream *st)
{
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	if (kiln_service_get(st->srv->svc, st->id, st->owner, &b, NULL) == 0) {
		_cleanup_buf_ struct kiln_buf json = KILN_BUF_INIT;
		kiln_http_json_build(&json, b);
		kiln_http_sse_event(&st->out, "status", 0, json.data, json.len);
	}
}

/* Appends what the log has after last_seq; returns true when more is there. */
static bool stream_fill(struct log_stream *st)
{
	struct kiln_log_line *lines = NULL;
	size_t n = 0;
	bool done = false;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_service_log_read_bounded(st->srv->svc, st->id, st->owner, st->last_seq, BATCH,
	                                  STREAM_BYTES, &lines, &n, &done, &err) < 0) {
		if (st->sse) {
			const char *m = err ? err->msg : "log unavailable";
			kiln_http_sse_event(&st->out, "error", 0, m, strlen(m));
		}
		st->finished = true;
		return false;
	}
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(lines[i].text);
		bytes += len;
		if (st->sse) {
			kiln_http_sse_event(&st->out, "log", lines[i].seq, lines[i].text, len);
		} else {
			kiln_buf_append(&st->out, lines[i].text, len);
			kiln_buf_putc(&st->out, '\n');
		}
		st->last_seq = lines[i].seq;
	}
	kiln_log_lines_free(lines, n);
	if (n == BATCH || bytes >= STREAM_BYTES)
		return true;
	if (!st->sse) {
		/* Plain text is a snapshot: what is there now. */
		if (n == 0)
			st->finished = true;
		return n > 0;
	}
	if (done) {
		stream_final_status(st);
		st->finished = true;
	}
	return false;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct log_stream *st = cls;
	(void)pos;
	for (;;) {
		if (st->out_off < st->out.len) {
			size_t n = st->out.len - st->out_off;
			if (n > max)
				n = max;
			memcpy(buf, st->out.data + st->out_off, n);
			st->out_off += n;
			return (ssize_t)n;
		}
		if (st->out.cap > OUT_KEEP)
			kiln_buf_free(&st->out);
		else
			kiln_buf_reset(&st->out);
		st->out_off = 0;
		if (st->finished)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (__atomic_load_n(&st->srv->stopping, __ATOMIC_SEQ_CST)) {
			st->finished = true;
			continue;
		}
		pthread_mutex_lock(&st->lock);
		bool dirty = st->dirty || !st->sse, hb = st->heartbeat;
		st->dirty = st->heartbeat = false;
		if (!dirty && !hb) {
			st->suspended = true;
			MHD_suspend_connection(st->conn);
			pthread_mutex_unlock(&st->lock);
			return 0;
		}
		pthread_mutex_unlock(&st->lock);
		if (dirty && stream_fill(st)) {
			pthread_mutex_lock(&st->lock);
			st->dirty = true;
			pthread_mutex_unlock(&st->lock);
		}
		if (hb && st->out.len == 0)
			kiln_buf_puts(&st->out, ": keep-alive\n\n");
	}
}

static void stream_free(void *cls)
{
	struct log_stream *st = cls;
	/* After unsubscribe no notify can be running or start: only then may
	 * the stream go away. */
	if (st->sub)
		kiln_service_log_unsubscribe(st->srv->svc, st->sub);
	struct kiln_http_server *s = st->srv;
	pthread_mutex_lock(&s->streams_lock);
	if (st->sse) {
		if (st->prev)
			st->prev->next = st->next;
		else if (s->streams == st)
			s->streams = st->next;
		if (st->next)
			st->next->prev = st->prev;
	}
	pthread_mutex_unlock(&s->streams_lock);
	pthread_mutex_destroy(&st->lock);
	kiln_buf_free(&st->out);
	free(st->owner);
	free(st);
}

enum MHD_Result http_logs_respond(struct kiln_http_request *r, const char *id, bool sse)
{
	struct kiln_http_server *s = r->srv;
	_cleanup_(kiln_build_info_freep) struct kiln_build_info *b = NULL;
	_cleanup_error_ struct kiln_error *err = NULL;
	int rc = kiln_service_get(s->svc, id, r->owner, &b, &err);
	if (rc < 0)
		return http_respond_service_error(r, rc, err);
	uint64_t last = 0;
	const char *lei = sse ? http_header(r, "Last-Event-ID") : NULL;
	if (lei && *lei && kiln_http_last_event_id_parse(lei, &last) < 0)
		return http_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
		                          "Last-Event-ID: must be an event id this server sent");

	struct log_stream *st = xcalloc(1, sizeof(*st));
	http_client_key(r, st->client);
	st->srv = s;
	st->conn = r->conn;
	snprintf(st->id, sizeof(st->id), "%s", b->id);
	st->owner = r->owner ? xstrdup(r->owner) : NULL;
	st->sse = sse;
	st->last_seq = last;
	st->dirty = true;
	pthread_mutex_init(&st->lock, NULL);
	if (sse) {
		/* Subscribe before the first read, so no line falls in between. */
		rc = kiln_service_log_subscribe(s->svc, st->id, st->owner, stream_notify, st,
		                                &st->sub, &err);
		if (rc < 0) {
			st->sub = NULL;
			st->sse = false; /* not in the registry */
			stream_free(st);
			return http_respond_service_error(r, rc, err);
		}
		pthread_mutex_lock(&s->streams_lock);
		size_t mine = 0;
		for (struct log_stream *o = s->streams; o; o = o->next)
			mine += memcmp(o->client, st->client, sizeof(st->client)) == 0;
		if (mine >= STREAMS_PER_CLIENT) {
			pthread_mutex_unlock(&s->streams_lock);
			st->sse = false; /* not in the registry */
			stream_free(st);
			return http_respond_error(r, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited",
			                          "too many live log streams from this address "
			                          "(at most %u): close one",
			                          STREAMS_PER_CLIENT);
		}
		st->next = s->streams;
		if (s->streams)
			s->streams->prev = st;
		s->streams = st;
		pthread_mutex_unlock(&s->streams_lock);
	}
	struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024,
	                                                              stream_read, st, stream_free);
	if (!resp) {
		stream_free(st);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type",
	                        sse ? "text/event-stream; charset=utf-8"
	                            : "text/plain; charset=utf-8");
	/* proxies (nginx) must pass events through as they come */
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	return http_respond(r, MHD_HTTP_OK, resp);
}
