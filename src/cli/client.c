/* API client subcommands: submit, status, list, logs, cancel, download.
 *
 * They talk to a `kiln serve` (docs/api.md) with libcurl: --server URL (or
 * $KILN_SERVER, default http://127.0.0.1:8080) and a token from --token-file
 * FILE ("-": stdin), $KILN_TOKEN or --token T (which warns: argv is world
 * readable). Server errors are printed as the server's message with the
 * HTTP status; the exit status is 0 on success, 1 on failure (and for
 * submit --wait / logs --follow, 1 unless the build completed), 2 on usage. */
#include <curl/curl.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/alloc.h"
#include "util/buf.h"
#include "util/fs.h"
#include "util/parse.h"
#include "util/sha256.h"

struct client {
	const char *server;
	const char *token;
	bool verbose;
};

/* Into a buffer with a ceiling (KILN_BUF_MAX_RESPONSE): a server that
 * sends more is cut off (curl fails the transfer) instead of filling the
 * client's memory. */
static size_t to_buf(char *p, size_t sz, size_t n, void *ud)
{
	struct kiln_buf *b = ud;
	kiln_buf_append(b, p, sz * n);
	return b->truncated ? 0 : sz * n;
}

static CURL *client_handle(const struct client *c, const char *path, struct curl_slist **hdrs)
{
	CURL *h = curl_easy_init();
	if (!h) {
		cli_errorf("cannot initialize libcurl");
		return NULL;
	}
	_cleanup_free_ char *url = xasprintf("%s%s", c->server, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	/* Only the server's own scheme: never follow a redirect to file:// etc. */
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (c->token) {
		_cleanup_free_ char *auth = xasprintf("Authorization: Bearer %s", c->token);
		*hdrs = curl_slist_append(*hdrs, auth);
	}
	if (getenv("KILN_CA_FILE"))
		curl_easy_setopt(h, CURLOPT_CAINFO, getenv("KILN_CA_FILE"));
	return h;
}

/* Prints the server's {"error":{...}} message (or the raw body). */
static void print_http_error(const char *what, long status, const struct kiln_buf *body)
{
	json_error_t je;
	json_t *j = body->data ? json_loadb(body->data, body->len, 0, &je) : NULL;
	const char *msg =
	    j ? json_string_value(json_object_get(json_object_get(j, "error"), "message")) : NULL;
	cli_errorf("%s: HTTP %ld: %s", what, status,
	           msg ? msg : (body->data && body->len < 500 ? body->data : "(no message)"));
	if (j)
		json_decref(j);
}

/* A request with a JSON (or empty) body; returns the HTTP status or -1. */
static long client_call(const struct client *c, const char *method, const char *path,
                        const char *body, curl_mime *mime, struct kiln_buf *resp)
{
	struct curl_slist *hdrs = NULL;
	CURL *h = client_handle(c, path, &hdrs);
	if (!h)
		return -1;
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	} else if (mime) {
		curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, to_buf);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, resp);
	CURLcode rc = curl_easy_perform(h);
	long status = -1;
	if (rc == CURLE_WRITE_ERROR && resp->truncated)
		cli_errorf("%s %s%s: the response is over the limit of %zu bytes", method,
		           c->server, path, resp->max);
	else if (rc != CURLE_OK)
		cli_errorf("%s %s%s: %s", method, c->server, path, curl_easy_strerror(rc));
	else
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return status;
}

static bool valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f') ||
		      id[i] == '-'))
			return false;
	return true;
}

/* ---- option parsing shared by every client command ------------------------ */

enum {
	OPT_SERVER = 1000,
	OPT_TOKEN,
	OPT_TOKEN_FILE,
	OPT_CONTEXT,
	OPT_WAIT,
	OPT_FOLLOW,
	OPT_STATUS,
	OPT_LIMIT,
	OPT_CURSOR,
	OPT_OUTPUT,
	OPT_JSON,
	OPT_RECIPE,
	OPT_CANCEL_ON_INTERRUPT,
	OPT_PROTECT,
};

struct client_opts {
	struct client c;
	const char *context, *status, *cursor, *output;
	bool wait, follow, json, recipe, cancel_on_interrupt, protect;
	unsigned limit;
};

/* A token goes into an Authorization header: printable ASCII without
 * spaces, or a CR/LF in a file would add headers of its own. */
static bool token_ok(const char *t)
{
	if (!*t)
		return false;
	for (const unsigned char *p = (const unsigned char *)t; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return false;
	return true;
}

/* --token-file: the first line of FILE (or stdin), trailing white space
 * dropped. The token lives for the whole process, like the server URL. */
static int read_token_file(const struct kiln_command *cmd, const char *path, const char **ret)
{
	static char token[4096];
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	_cleanup_error_ struct kiln_error *err = NULL;
	if (kiln_read_file(path, sizeof(token) - 1, &text, &len, &err) < 0) {
		cli_errorf("--token-file %s: %s", path, err->msg);
		return KILN_EXIT_FAILURE;
	}
	size_t n = strcspn(text, "\n");
	while (n > 0 && (text[n - 1] == '\r' || text[n - 1] == ' ' || text[n - 1] == '\t'))
		n--;
	memcpy(token, text, n);
	token[n] = '\0';
	if (!token_ok(token))
		return cli_usage_error(cmd, "--token-file %s: no token on its first line", path);
	*ret = token;
	return 0;
}

static int parse_opts(const struct kiln_command *cmd, int argc, char **argv, struct client_opts *o)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"server", required_argument, NULL, OPT_SERVER},
	    {"token", required_argument, NULL, OPT_TOKEN},
	    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
	    {"context", required_argument, NULL, OPT_CONTEXT},
	    {"wait", no_argument, NULL, OPT_WAIT},
	    {"follow", no_argument, NULL, OPT_FOLLOW},
	    {"status", required_argument, NULL, OPT_STATUS},
	    {"limit", required_argument, NULL, OPT_LIMIT},
	    {"cursor", required_argument, NULL, OPT_CURSOR},
	    {"output", required_argument, NULL, OPT_OUTPUT},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"recipe", no_argument, NULL, OPT_RECIPE},
	    {"cancel-on-interrupt", no_argument, NULL, OPT_CANCEL_ON_INTERRUPT},
	    {"protect", no_argument, NULL, OPT_PROTECT},
	    {},
	};
	memset(o, 0, sizeof(*o));
	o->c.server = getenv("KILN_SERVER") ? getenv("KILN_SERVER") : "http://127.0.0.1:8080";
	o->c.token = getenv("KILN_TOKEN");
	o->limit = 20;
	const char *token_arg = NULL, *token_file = NULL;
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "hfo:c:", opts, NULL)) != -1) {
		switch (ch) {
		case 'h': cli_print_help(cmd); return -1;
		case OPT_SERVER: o->c.server = optarg; break;
		case OPT_TOKEN: token_arg = optarg; break;
		case OPT_TOKEN_FILE: token_file = optarg; break;
		case 'c':
		case OPT_CONTEXT: o->context = optarg; break;
		case OPT_WAIT: o->wait = true; break;
		case 'f':
		case OPT_FOLLOW: o->follow = true; break;
		case OPT_STATUS: o->status = optarg; break;
		case OPT_CURSOR: o->cursor = optarg; break;
		case 'o':
		case OPT_OUTPUT: o->output = optarg; break;
		case OPT_JSON: o->json = true; break;
		case OPT_RECIPE: o->recipe = true; break;
		case OPT_CANCEL_ON_INTERRUPT: o->cancel_on_interrupt = true; break;
		case OPT_PROTECT: o->protect = true; break;
		case OPT_LIMIT: {
			int v = 0;
			if (kiln_parse_int(optarg, 1, 100, &v) < 0)
				return cli_usage_error(cmd, "--limit must be 1..100");
			o->limit = (unsigned)v;
			break;
		}
		default: return cli_option_error(cmd, "hfo:c:", argv);
		}
	}
	if (token_arg && token_file)
		return cli_usage_error(cmd, "--token and --token-file exclude each other");
	if (token_file) {
		int r = read_token_file(cmd, token_file, &o->c.token);
		if (r)
			return r;
	} else if (token_arg) {
		/* Every local user reads every process's argv (ps, /proc/PID/cmdline). */
		fprintf(stderr, "kiln: warning: --token shows the token to every user of this "
		                "machine (ps); use --token-file FILE or $KILN_TOKEN\n");
		o->c.token = token_arg;
	}
	if (o->c.token && !token_ok(o->c.token))
		return cli_usage_error(cmd, "the token has characters a token never has (space, "
		                            "control characters or non-ASCII)");
	size_t sl = strlen(o->c.server);
	if (strncmp(o->c.server, "http://", 7) != 0 && strncmp(o->c.server, "https://", 8) != 0)
		return cli_usage_error(cmd, "--server must be an http:// or https:// URL");
	while (sl > 8 && o->c.server[sl - 1] == '/')
		sl--;
	/* One server per process: the trimmed URL lives in static storage. */
	static char server[2048];
	if (sl >= sizeof(server))
		return cli_usage_error(cmd, "--server URL is too long");
	memcpy(server, o->c.server, sl);
	server[sl] = '\0';
	o->c.server = server;
	return 0;
}

/* ---- logs: plain or followed over SSE -------------------------------------- */

struct sse {
	struct kiln_buf line;
	char *event;
	struct kiln_buf data;
	char *final_status;
};

static void sse_dispatch(struct sse *s)
{
	const char *ev = s->event ? s->event : "message";
	if (strcmp(ev, "log") == 0) {
		fwrite(s->data.data ? s->data.data : "", 1, s->data.len, stdout);
		fputc('\n', stdout);
		fflush(stdout);
	} else if (strcmp(ev, "status") == 0) {
		json_error_t je;
		json_t *j = json_loadb(s->data.data ? s->data.data : "", s->data.len, 0, &je);
		const char *st = j ? json_string_value(json_object_get(j, "status")) : NULL;
		free(s->final_status);
		s->final_status = xstrdup(st ? st : "unknown");
		if (j) {
			const char *e = json_string_value(json_object_get(j, "error"));
			if (e)
				fprintf(stderr, "kiln: build %s: %s\n", s->final_status, e);
			json_decref(j);
		}
	}
	free(s->event);
	s->event = NULL;
	kiln_buf_reset(&s->data);
	s->data.len = 0;
}

static size_t sse_write(char *p, size_t sz, size_t n, void *ud)
{
	struct sse *s = ud;
	for (size_t i = 0; i < sz * n; i++) {
		if (p[i] != '\n') {
			kiln_buf_putc(&s->line, p[i]);
			continue;
		}
		const char *l = s->line.data ? s->line.data : "";
		size_t ll = s->line.len;
		if (ll && l[ll - 1] == '\r')
			ll--;
		if (ll == 0) {
			sse_dispatch(s);
		} else if (ll >= 5 && strncmp(l, "data:", 5) == 0) {
			size_t off = (ll > 5 && l[5] == ' ') ? 6 : 5;
			if (s->data.len)
				kiln_buf_putc(&s->data, '\n');
			kiln_buf_append(&s->data, l + off, ll - off);
		} else if (ll >= 6 && strncmp(l, "event:", 6) == 0) {
			size_t off = (ll > 6 && l[6] == ' ') ? 7 : 6;
			free(s->event);
			s->event = xstrndup(l + off, ll - off);
		}
		kiln_buf_reset(&s->line);
		s->line.len = 0;
	}
	/* A line or an event over its ceiling ends the stream (reported). */
	return s->line.truncated || s->data.truncated ? 0 : sz * n;
}

/* Ctrl-C while a log is followed: the stream stops (the progress callback
 * aborts the transfer) and the caller says what became of the build. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	interrupted = sig;
}

static int abort_on_interrupt(void *ud, curl_off_t a, curl_off_t b, curl_off_t c2, curl_off_t d)
{
	(void)ud, (void)a, (void)b, (void)c2, (void)d;
	return interrupted != 0;
}

/* Streams the log until the build ends; returns the exit status. */
static int follow_logs(const struct client *c, const char *id)
{
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s/logs", id);
	struct curl_slist *hdrs = NULL;
	CURL *h = client_handle(c, path, &hdrs);
	if (!h)
		return KILN_EXIT_FAILURE;
	hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	struct sse s = {KILN_BUF_INIT_MAX(KILN_BUF_MAX_SSE_EVENT), NULL,
	                KILN_BUF_INIT_MAX(KILN_BUF_MAX_SSE_EVENT), NULL};
	_cleanup_buf_ struct kiln_buf errbody = KILN_BUF_INIT;
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sse_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, abort_on_interrupt);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	struct sigaction sa = {.sa_handler = on_interrupt};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	CURLcode rc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	int ret = KILN_EXIT_FAILURE;
	if (interrupted)
		ret = 128 + interrupted; /* the caller says what became of the build */
	else if (rc == CURLE_WRITE_ERROR && (s.line.truncated || s.data.truncated))
		cli_errorf("logs: an event of the stream is over the limit of %d bytes",
		           KILN_BUF_MAX_SSE_EVENT);
	else if (rc != CURLE_OK)
		cli_errorf("logs: %s", curl_easy_strerror(rc));
	else if (status != 200) {
		kiln_buf_append(&errbody, s.line.data ? s.line.data : "", s.line.len);
		print_http_error("logs", status, &errbody);
	} else if (s.final_status && strcmp(s.final_status, "completed") == 0)
		ret = KILN_EXIT_OK;
	else if (!s.final_status)
		cli_errorf("logs: the stream ended before the build finished");
	kiln_buf_free(&s.line);
	kiln_buf_free(&s.data);
	free(s.event);
	free(s.final_status);
	return ret;
}

static void print_build_summary(const char *json_text)
{
	json_error_t je;
	json_t *j = json_loads(json_text, 0, &je);
	if (!j) {
		fputs(json_text, stdout);
		return;
	}
	json_t *b = json_object_get(j, "build") ? json_object_get(j, "build") : j;
	const char *id = json_string_value(json_object_get(b, "id"));
	const char *st = json_string_value(json_object_get(b, "status"));
	const char *err = json_string_value(json_object_get(b, "error"));
	json_t *prog = json_object_get(b, "progress");
	printf("%s  %s", id ? id : "?", st ? st : "?");
	if (json_is_true(json_object_get(j, "cached")) ||
	    json_is_true(json_object_get(b, "cached")))
		printf("  (cached)");
	if (json_is_true(json_object_get(j, "coalesced")))
		printf("  (joined an identical build)");
	if (prog && json_integer_value(json_object_get(prog, "total_steps")))
		printf("  step %lld/%lld",
		       (long long)json_integer_value(json_object_get(prog, "current_step")),
		       (long long)json_integer_value(json_object_get(prog, "total_steps")));
	const char *host = json_string_value(json_object_get(b, "host"));
	if (host)
		printf("  host %s", host);
	if (err)
		printf("  error: %s", err);
	putchar('\n');
	json_t *arts = json_object_get(b, "artifacts");
	size_t i;
	json_t *a;
	json_array_foreach (arts, i, a) {
		printf("  %-18s sha256:%s  %lld bytes\n",
		       json_string_value(json_object_get(a, "name")),
		       json_string_value(json_object_get(a, "sha256")),
		       (long long)json_integer_value(json_object_get(a, "size")));
	}
	json_decref(j);
}

/* ---- build ids: any unique prefix, as git does ---------------------------- */

#define ID_LEN 36
/* How far a prefix is looked for: pages of 100 of the caller's builds,
 * newest first; a prefix of an older build than that needs more digits. */
#define ID_PAGES 50

/* A full id as given; a shorter one is completed from the caller's builds
 * (GET /api/v1/builds, page by page). NULL, after saying why (no such
 * build, ambiguous, server unreachable), on failure. */
static const char *resolve_id(const struct client *c, const char *cmd, const char *arg)
{
	static char full[ID_LEN + 1];
	size_t n = strlen(arg);
	if (n >= ID_LEN)
		return arg;
	size_t found = 0;
	_cleanup_free_ char *cursor = NULL;
	for (unsigned page = 0; page < ID_PAGES; page++) {
		_cleanup_free_ char *q =
		    cursor ? xasprintf("/api/v1/builds?limit=100&cursor=%s", cursor)
		           : xstrdup("/api/v1/builds?limit=100");
		_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
		long st = client_call(c, "GET", q, NULL, NULL, &resp);
		if (st != 200) {
			if (st > 0)
				print_http_error(cmd, st, &resp);
			return NULL;
		}
		json_error_t je;
		json_t *j = json_loadb(resp.data, resp.len, 0, &je);
		size_t i;
		json_t *b;
		json_array_foreach (json_object_get(j, "builds"), i, b) {
			const char *id = json_string_value(json_object_get(b, "id"));
			if (id && strlen(id) == ID_LEN && strncmp(id, arg, n) == 0) {
				if (found++ == 0)
					memcpy(full, id, ID_LEN + 1);
				else if (found == 2)
					cli_errorf("%s: build ID '%s' is ambiguous: %s, %s, ...",
					           cmd, arg, full, id);
			}
		}
		const char *next = j ? json_string_value(json_object_get(j, "next_cursor")) : NULL;
		free(cursor);
		cursor = NULL;
		if (next) {
			CURL *e = curl_easy_init();
			char *v = e ? curl_easy_escape(e, next, 0) : NULL;
			cursor = v ? xstrdup(v) : NULL;
			curl_free(v);
			if (e)
				curl_easy_cleanup(e);
		}
		if (j)
			json_decref(j);
		if (found > 1)
			return NULL;
		if (!cursor)
			break;
	}
	if (!found) {
		cli_errorf("%s: no build of yours has an ID starting with '%s'", cmd, arg);
		return NULL;
	}
	return full;
}

/* ---- the commands ----------------------------------------------------------- */

/* GET the build and print it as `kiln status` does. */
static void show_build(const struct client *c, const char *id)
{
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s", id);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	if (client_call(c, "GET", path, NULL, NULL, &resp) == 200)
		print_build_summary(resp.data);
}

/* Ctrl-C while following: the build goes on on the server unless asked
 * (--cancel-on-interrupt); either way the user learns which, and how to
 * stop it. */
static int interrupted_exit(const struct client_opts *o, const char *id, int code)
{
	fflush(stdout);
	if (!o->cancel_on_interrupt) {
		fprintf(stderr, "\nkiln: still running: kiln cancel %s\n", id);
		return code;
	}
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s/cancel", id);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long st = client_call(&o->c, "POST", path, NULL, NULL, &resp);
	if (st == 200) {
		fprintf(stderr, "\nkiln: cancelled build %s\n", id);
		show_build(&o->c, id);
	} else if (st > 0) {
		print_http_error("cancel", st, &resp);
	}
	return code;
}

static int cmd_submit(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_submit, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc - optind != 1)
		return cli_usage_error(&kiln_cmd_submit, "expected exactly one RECIPE");
	/* Read once ("-" is stdin, which cannot be read twice) and validated
	 * locally first: the same rules as the server, a clearer error. */
	_cleanup_recipe_ struct kiln_recipe *r = NULL;
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	rc = cli_read_recipe(argv[optind], &text, &len, &r);
	if (rc)
		return rc;
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status;
	CURL *mh = NULL;
	/* From here on a Ctrl-C is the follow's (it ends the wait, never the
	 * submission half-way, and the user learns the build's id). */
	if (o.follow || o.wait) {
		struct sigaction sa = {.sa_handler = on_interrupt};
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
	}
	curl_mime *mime = NULL;
	if (o.context) {
		if (access(o.context, R_OK) != 0) {
			cli_errorf("%s: cannot read context archive", o.context);
			return KILN_EXIT_FAILURE;
		}
		mh = curl_easy_init();
		mime = curl_mime_init(mh);
		curl_mimepart *p = curl_mime_addpart(mime);
		curl_mime_name(p, "recipe");
		curl_mime_data(p, text, len);
		curl_mime_type(p, "application/json");
		p = curl_mime_addpart(mime);
		curl_mime_name(p, "context");
		curl_mime_filedata(p, o.context);
		status = client_call(&o.c, "POST", "/api/v1/builds", NULL, mime, &resp);
	} else {
		status = client_call(&o.c, "POST", "/api/v1/builds", text, NULL, &resp);
	}
	if (mime)
		curl_mime_free(mime);
	if (mh)
		curl_easy_cleanup(mh);
	if (status < 0) {
		return KILN_EXIT_FAILURE;
	}
	if (status != 200 && status != 201 && status != 202) {
		print_http_error("submit", status, &resp);
		return KILN_EXIT_FAILURE;
	}
	json_error_t je;
	json_t *j = json_loadb(resp.data, resp.len, 0, &je);
	json_t *b = j && json_object_get(j, "build") ? json_object_get(j, "build") : j;
	const char *id = b ? json_string_value(json_object_get(b, "id")) : NULL;
	_cleanup_free_ char *idc = id ? xstrdup(id) : NULL;
	const char *st = b ? json_string_value(json_object_get(b, "status")) : NULL;
	bool done = st && strcmp(st, "completed") == 0;
	if (o.json)
		fwrite(resp.data, 1, resp.len, stdout), putchar('\n');
	else
		print_build_summary(resp.data);
	if (j)
		json_decref(j);
	if (!idc || !valid_id(idc)) {
		cli_errorf("submit: the server's answer has no build id");
		return KILN_EXIT_FAILURE;
	}
	if ((o.follow || o.wait) && !done) {
		int r2;
		fflush(stdout); /* the summary (the build's id) before the wait */
		if (o.follow) {
			r2 = follow_logs(&o.c, idc);
		} else {
			/* --wait without the log: follow quietly into /dev/null. */
			fflush(stdout);
			FILE *saved = stdout;
			stdout = fopen("/dev/null", "w");
			r2 = follow_logs(&o.c, idc);
			fclose(stdout);
			stdout = saved;
		}
		if (interrupted)
			return interrupted_exit(&o, idc, r2);
		/* The end as `kiln status` shows it: final state and artifacts. */
		if (!o.json)
			show_build(&o.c, idc);
		return r2;
	}
	return KILN_EXIT_OK;
}

static int simple_get(const struct kiln_command *cmd, int argc, char **argv, const char *method,
                      const char *suffix)
{
	struct client_opts o;
	int rc = parse_opts(cmd, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc - optind != 1)
		return cli_usage_error(cmd, "expected exactly one build ID");
	if (!valid_id(argv[optind]))
		return cli_usage_error(cmd, "'%s' is not a build ID", argv[optind]);
	const char *full = resolve_id(&o.c, cmd->name, argv[optind]);
	if (!full)
		return KILN_EXIT_FAILURE;
	argv[optind] = (char *)full;
	if (o.recipe && cmd == &kiln_cmd_status) {
		/* The recipe as submitted, byte for byte (a file to edit and
		 * submit again). */
		_cleanup_free_ char *rp = xasprintf("/api/v1/builds/%s/recipe", argv[optind]);
		_cleanup_buf_ struct kiln_buf rb = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
		long st = client_call(&o.c, "GET", rp, NULL, NULL, &rb);
		if (st == 200) {
			fwrite(rb.data ? rb.data : "", 1, rb.len, stdout);
			if (!rb.len || rb.data[rb.len - 1] != '\n')
				putchar('\n');
			return KILN_EXIT_OK;
		}
		if (st > 0)
			print_http_error(cmd->name, st, &rb);
		return KILN_EXIT_FAILURE;
	}
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s%s", argv[optind], suffix);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status = client_call(&o.c, method, path, NULL, NULL, &resp);
	int ret = KILN_EXIT_FAILURE;
	if (status == 200) {
		if (o.json)
			fwrite(resp.data, 1, resp.len, stdout), putchar('\n');
		else
			print_build_summary(resp.data);
		ret = KILN_EXIT_OK;
	} else if (status > 0) {
		print_http_error(cmd->name, status, &resp);
	}
	return ret;
}

static int cmd_status(int argc, char **argv)
{
	return simple_get(&kiln_cmd_status, argc, argv, "GET", "");
}

static int cmd_cancel(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_cancel, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc - optind != 1)
		return cli_usage_error(&kiln_cmd_cancel, "expected exactly one build ID");
	const char *id = argv[optind];
	if (!valid_id(id))
		return cli_usage_error(&kiln_cmd_cancel, "'%s' is not a build ID", id);
	if (!(id = resolve_id(&o.c, "cancel", id)))
		return KILN_EXIT_FAILURE;
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s/cancel", id);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status = client_call(&o.c, "POST", path, NULL, NULL, &resp);
	if (status != 200) {
		if (status > 0)
			print_http_error("cancel", status, &resp);
		return KILN_EXIT_FAILURE;
	}
	json_error_t je;
	json_t *j = json_loadb(resp.data, resp.len, 0, &je);
	const char *st = j ? json_string_value(json_object_get(j, "status")) : NULL;
	bool running = st && strcmp(st, "building") == 0;
	if (j)
		json_decref(j);
	if (running) {
		/* A running build stops when its worker sees the request: wait
		 * for the end of its log stream, so that what is printed is the
		 * state after the cancel, not before. */
		fflush(stdout);
		FILE *saved = stdout;
		stdout = fopen("/dev/null", "w");
		(void)follow_logs(&o.c, id);
		fclose(stdout);
		stdout = saved;
		_cleanup_free_ char *gp = xasprintf("/api/v1/builds/%s", id);
		kiln_buf_reset(&resp);
		resp.len = 0;
		if (client_call(&o.c, "GET", gp, NULL, NULL, &resp) != 200)
			return KILN_EXIT_FAILURE;
	}
	if (o.json)
		fwrite(resp.data, 1, resp.len, stdout), putchar('\n');
	else
		print_build_summary(resp.data);
	return KILN_EXIT_OK;
}

/* kiln tag BUILD NAME:TAG — POST /api/v1/templates/NAME/tags/TAG. */
static int cmd_tag(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_tag, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc - optind != 2)
		return cli_usage_error(&kiln_cmd_tag, "expected a build ID and NAME:TAG");
	const char *id = argv[optind], *ref = argv[optind + 1];
	if (!valid_id(id))
		return cli_usage_error(&kiln_cmd_tag, "'%s' is not a build ID", id);
	const char *colon = strchr(ref, ':');
	/* The server checks the alphabet; here only what would change the URL. */
	if (!colon || colon == ref || !colon[1] || strpbrk(ref, "/?#%") || strchr(colon + 1, ':'))
		return cli_usage_error(&kiln_cmd_tag, "'%s' is not NAME:TAG", ref);
	_cleanup_free_ char *name = strndup(ref, (size_t)(colon - ref));
	_cleanup_free_ char *path = xasprintf("/api/v1/templates/%s/tags/%s", name, colon + 1);
	_cleanup_free_ char *body =
	    xasprintf("{\"build\":\"%s\",\"protected\":%s}", id, o.protect ? "true" : "false");
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status = client_call(&o.c, "POST", path, body, NULL, &resp);
	if (status != 200) {
		if (status > 0)
			print_http_error("tag", status, &resp);
		return KILN_EXIT_FAILURE;
	}
	if (o.json) {
		fwrite(resp.data, 1, resp.len, stdout);
		return KILN_EXIT_OK;
	}
	printf("%s -> %s%s\n", ref, id, o.protect ? " (protected)" : "");
	return KILN_EXIT_OK;
}

/* kiln templates — GET /api/v1/templates, one line per tag. */
static int cmd_templates(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_templates, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc != optind)
		return cli_usage_error(&kiln_cmd_templates, "expected no arguments");
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status = client_call(&o.c, "GET", "/api/v1/templates", NULL, NULL, &resp);
	if (status != 200) {
		if (status > 0)
			print_http_error("templates", status, &resp);
		return KILN_EXIT_FAILURE;
	}
	if (o.json) {
		fwrite(resp.data, 1, resp.len, stdout);
		return KILN_EXIT_OK;
	}
	json_error_t je;
	json_t *j = json_loadb(resp.data, resp.len, 0, &je);
	json_t *v = j ? json_object_get(j, "templates") : NULL;
	if (!json_is_array(v)) {
		json_decref(j);
		cli_errorf("templates: the server's answer is not a template list");
		return KILN_EXIT_FAILURE;
	}
	printf("%-30s %-36s %-9s %s\n", "TEMPLATE", "BUILD", "PROTECTED", "MOVES");
	size_t i;
	json_t *t;
	json_array_foreach (v, i, t) {
		const char *n = json_string_value(json_object_get(t, "name"));
		const char *g = json_string_value(json_object_get(t, "tag"));
		const char *b = json_string_value(json_object_get(t, "build_id"));
		_cleanup_free_ char *ref = xasprintf("%s:%s", n ? n : "?", g ? g : "?");
		printf("%-30s %-36s %-9s %zu\n", ref, b ? b : "?",
		       json_is_true(json_object_get(t, "protected")) ? "yes" : "no",
		       json_array_size(json_object_get(t, "history")));
	}
	json_decref(j);
	return KILN_EXIT_OK;
}

/* Seconds since the epoch of an API time ("2026-12-01T22:00:00.123Z"), or
 * -1. strptime: a fixed format the server writes (http/json.c put_time). */
static double api_time(const char *t)
{
	if (!t)
		return -1;
	struct tm tm = {0};
	const char *rest = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return -1;
	double frac = 0;
	if (rest[0] == '.' && rest[1] >= '0' && rest[1] <= '9')
		frac = (rest[1] - '0') / 10.0;
	return (double)timegm(&tm) + frac;
}

/* "12.3s", "4m05s", "1h02m": started to completed (or to now while it
 * runs); "-" before it starts. */
static void list_duration(const char *started, const char *completed, char *out, size_t n)
{
	double a = api_time(started);
	if (a < 0)
		return;
	double b = completed ? api_time(completed) : (double)time(NULL);
	double d = b >= a ? b - a : 0;
	if (d < 60)
		snprintf(out, n, "%.1fs", d);
	else if (d < 3600)
		snprintf(out, n, "%um%02us", (unsigned)d / 60, (unsigned)d % 60);
	else
		snprintf(out, n, "%uh%02um", (unsigned)d / 3600, (unsigned)d % 3600 / 60);
}

static int cmd_list(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_list, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (optind != argc)
		return cli_usage_error(&kiln_cmd_list, "unexpected argument '%s'", argv[optind]);
	CURL *e = curl_easy_init();
	_cleanup_free_ char *q = xasprintf("/api/v1/builds?limit=%u", o.limit);
	if (o.status) {
		char *v = curl_easy_escape(e, o.status, 0);
		char *nq = xasprintf("%s&status=%s", q, v);
		curl_free(v);
		free(q);
		q = nq;
	}
	if (o.cursor) {
		char *v = curl_easy_escape(e, o.cursor, 0);
		char *nq = xasprintf("%s&cursor=%s", q, v);
		curl_free(v);
		free(q);
		q = nq;
	}
	curl_easy_cleanup(e);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status = client_call(&o.c, "GET", q, NULL, NULL, &resp);
	int ret = KILN_EXIT_FAILURE;
	if (status == 200 && o.json) {
		fwrite(resp.data, 1, resp.len, stdout), putchar('\n');
		ret = KILN_EXIT_OK;
	} else if (status == 200) {
		json_error_t je;
		json_t *j = json_loadb(resp.data, resp.len, 0, &je);
		size_t i;
		json_t *b;
		printf("%-36s  %-9s  %-20s  %8s  %-7s  %s\n", "ID", "STATUS", "CREATED", "DURATION",
		       "STEP", "NAME");
		json_array_foreach (json_object_get(j, "builds"), i, b) {
			const char *name = json_string_value(json_object_get(b, "name"));
			const char *created = json_string_value(json_object_get(b, "created_at"));
			char dur[32] = "-", step[32] = "-";
			list_duration(json_string_value(json_object_get(b, "started_at")),
			              json_string_value(json_object_get(b, "completed_at")), dur,
			              sizeof(dur));
			json_t *prog = json_object_get(b, "progress");
			long long cur =
			    (long long)json_integer_value(json_object_get(prog, "current_step"));
			long long tot =
			    (long long)json_integer_value(json_object_get(prog, "total_steps"));
			if (tot)
				snprintf(step, sizeof(step), "%lld/%lld", cur, tot);
			/* "2026-12-01T22:00:00.123Z" shown to the second, UTC */
			printf("%-36s  %-9s  %-20.19s  %8s  %-7s  %s\n",
			       json_string_value(json_object_get(b, "id")),
			       json_string_value(json_object_get(b, "status")),
			       created ? created : "-", dur, step, name ? name : "");
		}
		const char *next = json_string_value(json_object_get(j, "next_cursor"));
		if (next)
			fprintf(stderr, "more: kiln list --cursor %s\n", next);
		if (j)
			json_decref(j);
		ret = KILN_EXIT_OK;
	} else if (status > 0) {
		print_http_error("list", status, &resp);
	}
	return ret;
}

static int cmd_logs(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_logs, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc - optind != 1)
		return cli_usage_error(&kiln_cmd_logs, "expected exactly one build ID");
	if (!valid_id(argv[optind]))
		return cli_usage_error(&kiln_cmd_logs, "'%s' is not a build ID", argv[optind]);
	const char *full = resolve_id(&o.c, "logs", argv[optind]);
	if (!full)
		return KILN_EXIT_FAILURE;
	argv[optind] = (char *)full;
	if (o.follow)
		return follow_logs(&o.c, argv[optind]);
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s/logs", argv[optind]);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_LOG_RESPONSE);
	long status = client_call(&o.c, "GET", path, NULL, NULL, &resp);
	int ret = KILN_EXIT_FAILURE;
	if (status == 200) {
		fwrite(resp.data ? resp.data : "", 1, resp.len, stdout);
		ret = KILN_EXIT_OK;
	} else if (status > 0) {
		print_http_error("logs", status, &resp);
	}
	return ret;
}

struct dl {
	FILE *f;
	struct kiln_sha256 h;
	uint64_t n;
	struct kiln_buf err;
	long status;
	CURL *curl;
};

static size_t dl_write(char *p, size_t sz, size_t n, void *ud)
{
	struct dl *d = ud;
	if (!d->status)
		curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &d->status);
	if (d->status != 200) {
		kiln_buf_append(&d->err, p, sz * n); /* kept up to its ceiling */
		return sz * n;
	}
	kiln_sha256_update(&d->h, p, sz * n);
	d->n += sz * n;
	return fwrite(p, sz, n, d->f) * sz;
}

static size_t dl_header(char *p, size_t sz, size_t n, void *ud)
{
	struct kiln_buf *etag = ud;
	size_t len = sz * n;
	if (len > 6 && strncasecmp(p, "etag:", 5) == 0) {
		kiln_buf_reset(etag);
		etag->len = 0;
		for (size_t i = 5; i < len; i++)
			if (p[i] != '"' && p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
				kiln_buf_putc(etag, p[i]);
	}
	return len;
}

/* The artifact's SHA-256 as the build records it (GET …/artifacts). The
 * download is checked against this, not against the download's own ETag:
 * a response that lost its ETag (a proxy, a cache, a tampered answer)
 * must not skip the check. Returns 0 or the exit status. */
static int artifact_sha256(const struct client *c, const char *id, const char *name,
                           char ret[KILN_SHA256_HEX_LEN + 1])
{
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s/artifacts", id);
	_cleanup_buf_ struct kiln_buf resp = KILN_BUF_INIT_MAX(KILN_BUF_MAX_RESPONSE);
	long status = client_call(c, "GET", path, NULL, NULL, &resp);
	if (status != 200) {
		if (status > 0)
			print_http_error("download", status, &resp);
		return KILN_EXIT_FAILURE;
	}
	json_error_t je;
	json_t *j = json_loadb(resp.data ? resp.data : "", resp.len, 0, &je);
	const char *sha = NULL;
	size_t i;
	json_t *a;
	json_array_foreach (json_object_get(j, "artifacts"), i, a) {
		const char *n = json_string_value(json_object_get(a, "name"));
		if (n && strcmp(n, name) == 0)
			sha = json_string_value(json_object_get(a, "sha256"));
	}
	int rc = KILN_EXIT_OK;
	if (!sha) {
		cli_errorf("download: build %s has no artifact '%s'", id, name);
		rc = KILN_EXIT_FAILURE;
	} else if (strlen(sha) != KILN_SHA256_HEX_LEN) {
		cli_errorf("download: the server's record of '%s' has no SHA-256", name);
		rc = KILN_EXIT_FAILURE;
	} else {
		memcpy(ret, sha, KILN_SHA256_HEX_LEN + 1);
	}
	if (j)
		json_decref(j);
	return rc;
}

static int cmd_download(int argc, char **argv)
{
	struct client_opts o;
	int rc = parse_opts(&kiln_cmd_download, argc, argv, &o);
	if (rc)
		return rc < 0 ? KILN_EXIT_OK : rc;
	if (argc - optind != 2)
		return cli_usage_error(&kiln_cmd_download,
		                       "expected a build ID and an artifact NAME");
	const char *id = argv[optind], *name = argv[optind + 1];
	if (!valid_id(id))
		return cli_usage_error(&kiln_cmd_download, "'%s' is not a build ID", id);
	if (strchr(name, '/') || name[0] == '.' || !*name)
		return cli_usage_error(&kiln_cmd_download, "'%s' is not an artifact name", name);
	if (!(id = resolve_id(&o.c, "download", id)))
		return KILN_EXIT_FAILURE;
	const char *out = o.output ? o.output : name;
	char want[KILN_SHA256_HEX_LEN + 1];
	rc = artifact_sha256(&o.c, id, name, want);
	if (rc)
		return rc;
	/* A fresh name (O_EXCL): never through a planted symlink, never over
	 * another download's file. Renamed onto OUT only once verified. */
	_cleanup_free_ char *tmp = xasprintf("%s.part-XXXXXX", out);
	int tfd = mkostemp(tmp, O_CLOEXEC);
	struct dl d = {.f = tfd >= 0 ? fdopen(tfd, "wb") : NULL, .err = KILN_BUF_INIT_MAX(4096)};
	if (!d.f) {
		cli_errorf("%s: %s", tmp, strerror(errno));
		if (tfd >= 0) {
			close(tfd);
			unlink(tmp);
		}
		return KILN_EXIT_FAILURE;
	}
	kiln_sha256_init(&d.h);
	_cleanup_free_ char *path = xasprintf("/api/v1/builds/%s/artifacts/%s", id, name);
	struct curl_slist *hdrs = NULL;
	CURL *h = client_handle(&o.c, path, &hdrs);
	if (!h) {
		fclose(d.f);
		unlink(tmp);
		return KILN_EXIT_FAILURE;
	}
	_cleanup_buf_ struct kiln_buf etag = KILN_BUF_INIT_MAX(KILN_BUF_MAX_HEADER);
	d.curl = h;
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, dl_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &d);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, dl_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &etag);
	CURLcode cr = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	int ret = KILN_EXIT_FAILURE;
	bool ok_close = fclose(d.f) == 0;
	char hex[KILN_SHA256_HEX_LEN + 1];
	kiln_sha256_final_hex(&d.h, hex);
	if (cr != CURLE_OK) {
		cli_errorf("download: %s", curl_easy_strerror(cr));
	} else if (status != 200) {
		print_http_error("download", status, &d.err);
	} else if (!ok_close) {
		cli_errorf("%s: write failed", tmp);
	} else if (strcmp(want, hex) != 0) {
		cli_errorf("download: SHA-256 mismatch: the build records %s, received %s (%llu "
		           "bytes); nothing written to %s",
		           want, hex, (unsigned long long)d.n, out);
	} else if (etag.len && strcmp(etag.data, want) != 0) {
		/* The ETag is the artifact's SHA-256 too: disagreeing is corruption. */
		cli_errorf("download: the ETag %s is not the recorded SHA-256 %s", etag.data, want);
	} else if (rename(tmp, out) < 0) {
		cli_errorf("%s: %s", out, strerror(errno));
	} else {
		printf("%s  sha256:%s  %llu bytes\n", out, hex, (unsigned long long)d.n);
		ret = KILN_EXIT_OK;
	}
	if (ret != KILN_EXIT_OK)
		unlink(tmp);
	kiln_buf_free(&d.err);
	return ret;
}

#define CLIENT_OPTS                                                                                \
	"  --server URL   the kiln server (default $KILN_SERVER or http://127.0.0.1:8080)\n"       \
	"  --token-file F read the API token from F ('-': stdin; default $KILN_TOKEN;\n"           \
	"                 see kiln token create)\n"                                                \
	"  --token T      the token itself: visible to every local user (ps), so kiln warns\n"     \
	"  --json         print the server's JSON\n"                                               \
	"ID may be any prefix of a build ID that only one of your builds has.\n"

const struct kiln_command kiln_cmd_submit = {
    .name = "submit",
    .summary = "submit a recipe to a kiln server",
    .usage = "Usage: kiln submit [OPTIONS] RECIPE\n"
             "\n"
             "Validates RECIPE locally, submits it, prints the build (id, status,\n"
             "cached/joined notice, artifacts when already complete).\n"
             "\n"
             "Options:\n" CLIENT_OPTS
             "  -c, --context F  context archive for COPY steps (multipart upload)\n"
             "  -f, --follow   stream the live log until the build ends\n"
             "  --wait         wait quietly until the build ends; then print its final\n"
             "                 status and artifacts\n"
             "  --cancel-on-interrupt\n"
             "                 Ctrl-C while following cancels the build (without it,\n"
             "                 the build goes on and kiln prints how to cancel it)\n"
             "\n"
             "RECIPE may be - for stdin.\n"
             "Exit status: 0 submitted (with --follow/--wait: completed), 1 failure, 2 usage,\n"
             "130 interrupted by Ctrl-C while following.\n",
    .run = cmd_submit,
};

const struct kiln_command kiln_cmd_status = {
    .name = "status",
    .summary = "show a build on a kiln server",
    .usage = "Usage: kiln status [OPTIONS] ID\n\nOptions:\n" CLIENT_OPTS
             "  --recipe       print the recipe the build was submitted with instead\n"
             "\nID may be any prefix of a build ID that only one of your builds has.\n"
             "\nExit status: 0 shown, 1 failure (not found, server unreachable), 2 usage.\n",
    .run = cmd_status,
};

const struct kiln_command kiln_cmd_list = {
    .name = "list",
    .summary = "list your builds on a kiln server, newest first",
    .usage = "Usage: kiln list [OPTIONS]\n\nOptions:\n" CLIENT_OPTS
             "  --status S     only builds in this state (pending, building, completed,\n"
             "                 failed, cancelled)\n"
             "  --limit N      page size, 1..100 (default 20)\n"
             "  --cursor C     the next page (printed on stderr when there is one)\n"
             "\nExit status: 0 listed, 1 failure, 2 usage.\n",
    .run = cmd_list,
};

const struct kiln_command kiln_cmd_logs = {
    .name = "logs",
    .summary = "print a build's log (--follow: live)",
    .usage = "Usage: kiln logs [OPTIONS] ID\n\nOptions:\n" CLIENT_OPTS
             "  -f, --follow   stream new lines until the build ends (Server-Sent Events);\n"
             "                 exit 0 only if it completed\n"
             "\nID may be any prefix of a build ID that only one of your builds has.\n"
             "\nExit status: 0 printed (with --follow: completed), 1 failure, 2 usage.\n",
    .run = cmd_logs,
};

const struct kiln_command kiln_cmd_tag = {
    .name = "tag",
    .summary = "point a template tag NAME:TAG at a completed build",
    .usage = "Usage: kiln tag [OPTIONS] BUILD NAME:TAG\n\n"
             "Tags move when given another build (the history is kept); a protected tag\n"
             "does not (docs/templates.md).\n\nOptions:\n" CLIENT_OPTS
             "  --protect      make the tag protected: it never moves again\n"
             "\nExit status: 0 tagged, 1 failure (not found, not completed, protected), 2 usage.\n",
    .run = cmd_tag,
};

const struct kiln_command kiln_cmd_templates = {
    .name = "templates",
    .summary = "list your template tags",
    .usage = "Usage: kiln templates [OPTIONS]\n\nOptions:\n" CLIENT_OPTS
             "\nExit status: 0 listed, 1 failure, 2 usage.\n",
    .run = cmd_templates,
};

const struct kiln_command kiln_cmd_cancel = {
    .name = "cancel",
    .summary = "cancel a pending or running build",
    .usage = "Usage: kiln cancel [OPTIONS] ID\n\nOptions:\n" CLIENT_OPTS
             "\nID may be any unique prefix of a build ID, as for kiln status.\n"
             "Prints the build's state after the cancel. A finished build cannot be\n"
             "cancelled (HTTP 409).\n"
             "Exit status: 0 cancelled, 1 failure (finished, not found), 2 usage.\n",
    .run = cmd_cancel,
};

const struct kiln_command kiln_cmd_download = {
    .name = "download",
    .summary = "download a build artifact, verifying its SHA-256",
    .usage = "Usage: kiln download [OPTIONS] ID NAME\n\nOptions:\n" CLIENT_OPTS
             "  -o, --output F  where to write (default: NAME in the current directory)\n"
             "\nID may be any unique prefix of a build ID, as for kiln status.\n"
             "\nThe file is written to a temporary F.part-XXXXXX and renamed to F only\n"
             "after its SHA-256 matches the artifact's recorded SHA-256 (GET\n"
             "/api/v1/builds/ID/artifacts), whether or not the response had an ETag.\n"
             "Exit status: 0 written, 1 failure (nothing written), 2 usage.\n",
    .run = cmd_download,
};
