/* kiln serve — the build service over HTTP. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "cli/cli.h"
#include "http/http.h"
#include "http/parse.h"
#include "recipe/recipe.h"
#include "service/service.h"
#include "store/cas.h"
#include "util/alloc.h"
#include "util/parse.h"

#define MAX_LIST 32
/* Each connection costs a descriptor and a 32 KiB pool; past this the
 * process's fd limit is the real bound anyway. */
#define MAX_CONNECTIONS 65536

static int add(const char **v, size_t *n, const char *s)
{
	if (*n >= MAX_LIST)
		return -1;
	v[(*n)++] = s;
	return 0;
}

static int parse_uint(const char *opt, const char *s, unsigned min, unsigned max, unsigned *ret)
{
	uint64_t v;
	if (kiln_parse_u64(s, 10, min, max, &v) < 0)
		return cli_usage_error(&kiln_cmd_serve, "%s: expected an integer from %u to %u",
		                       opt, min, max);
	*ret = (unsigned)v;
	return 0;
}

/* First run: nobody could sign in without a token, and `kiln token create`
 * is one more thing a newcomer has to find. The secret is shown once, on
 * stderr (not stdout, which scripts parse for the URL); only its hash is
 * kept. Any token at all — even a revoked one — means this is not a first
 * run, so the message never repeats. */
static int bootstrap_admin(struct kiln_service *svc, const char *url)
{
	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_token_info *v = NULL;
	size_t n = 0;
	if (kiln_service_token_list(svc, &v, &n, &err) < 0) {
		cli_errorf("serve: listing tokens: %s", err->msg);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		kiln_token_info_clear(&v[i]);
	free(v);
	if (n > 0)
		return 0;
	_cleanup_free_ char *secret = NULL;
	if (kiln_service_token_create(svc, "admin", "first-run admin", &secret, NULL, &err) < 0) {
		cli_errorf("serve: creating the first-run admin token: %s", err->msg);
		return -1;
	}
	fprintf(stderr,
	        "kiln: first run: admin token %s\n"
	        "kiln: sign in with it at %s/ (shown only this once; more tokens: kiln token "
	        "create)\n",
	        secret, url);
	fflush(stderr);
	explicit_bzero(secret, strlen(secret));
	return 0;
}

/* --access-log FILE|-|off. A file is opened O_APPEND (each line is one
 * write, so lines from several threads, or a logrotate copytruncate, never
 * tear) and 0640: the log names clients and owners. */
/* The default --max-disk-mb: a build's layer is a tmpfs, i.e. RAM that
 * cannot be swapped out here, so KILN_DISK_MB_OPERATOR_DEFAULT (16 GB) per
 * build let two builds take a 24 GB host's memory (issue 11 review, item
 * 3). At most half the RAM goes to the layers of all workers at once.
 * Said on stderr when it is lower than the fixed default. */
static void default_max_disk_mb(struct kiln_service_config *sc)
{
	if (sc->max_disk_mb > 0)
		return;
	struct sysinfo si;
	if (sysinfo(&si) < 0)
		return;
	/* service.c's default: one worker per two cores, at least 1. */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned workers = sc->workers ? sc->workers : cores >= 4 ? (unsigned)(cores / 2) : 1;
	uint64_t mem_mb = ((uint64_t)si.totalram * si.mem_unit) >> 20;
	int64_t mb = (int64_t)(mem_mb / 2 / workers);
	if (mb >= KILN_DISK_MB_OPERATOR_DEFAULT)
		return;
	sc->max_disk_mb = mb < 16 ? 16 : mb;
	fprintf(stderr,
	        "kiln: --max-disk-mb defaults to %" PRId64 " MB here (half of %" PRIu64
	        " MB of RAM over %u workers; build layers are tmpfs)\n",
	        sc->max_disk_mb, mem_mb, workers);
}

static int open_access_log(const char *arg, FILE **ret)
{
	if (strcmp(arg, "off") == 0) {
		*ret = NULL;
		return 0;
	}
	if (strcmp(arg, "-") == 0) {
		*ret = stderr;
		return 0;
	}
	int fd = open(arg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
	FILE *f = fd >= 0 ? fdopen(fd, "a") : NULL;
	if (!f) {
		cli_errorf("serve: --access-log %s: %s", arg, strerror(errno));
		if (fd >= 0)
			close(fd);
		return KILN_EXIT_FAILURE;
	}
	*ret = f;
	return 0;
}

static int run(int argc, char **argv)
{
	enum {
		OPT_NO_AUTH = 256,
		OPT_TLS_CERT,
		OPT_TLS_KEY,
		OPT_REDIRECT,
		OPT_ALLOWED_HOST,
		OPT_CORS,
		OPT_RATE,
		OPT_STATE,
		OPT_WORKERS,
		OPT_OFFLINE,
		OPT_NO_WORKERS,
		OPT_TLS_SELF_SIGNED,
		OPT_SESSION_TTL,
		OPT_IDLE_TIMEOUT,
		OPT_MAX_CONN,
		OPT_MAX_CONN_CLIENT,
		OPT_SHARED_CACHE,
		OPT_DATABASE,
		OPT_MAX_LOG,
		OPT_GC_EVERY,
		OPT_KEEP_DAYS,
		OPT_MAX_SIZE,
		OPT_ACCESS_LOG,
		OPT_MAX_DISK,
		OPT_BACKUP_DIR,
		OPT_BACKUP_AT,
		OPT_BACKUP_KEEP,
		OPT_RESTORE_EVERY,
		OPT_METRICS_LISTEN,
		OPT_DRAIN_TIMEOUT,
		OPT_HOST_ID,
		OPT_LEASE,
		OPT_RETRIES,
		OPT_STORE,
	};
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {"listen", required_argument, NULL, 'l'},
	    {"state-dir", required_argument, NULL, OPT_STATE},
	    {"database", required_argument, NULL, OPT_DATABASE},
	    {"access-log", required_argument, NULL, OPT_ACCESS_LOG},
	    {"host-id", required_argument, NULL, OPT_HOST_ID},
	    {"lease", required_argument, NULL, OPT_LEASE},
	    {"retries", required_argument, NULL, OPT_RETRIES},
	    {"store", required_argument, NULL, OPT_STORE},
	    {"workers", required_argument, NULL, OPT_WORKERS},
	    {"no-auth", no_argument, NULL, OPT_NO_AUTH},
	    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
	    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
	    {"redirect-http", required_argument, NULL, OPT_REDIRECT},
	    {"allowed-host", required_argument, NULL, OPT_ALLOWED_HOST},
	    {"cors-origin", required_argument, NULL, OPT_CORS},
	    {"rate-limit", required_argument, NULL, OPT_RATE},
	    {"offline", no_argument, NULL, OPT_OFFLINE},
	    {"no-workers", no_argument, NULL, OPT_NO_WORKERS},
	    {"tls-self-signed", no_argument, NULL, OPT_TLS_SELF_SIGNED},
	    {"session-ttl", required_argument, NULL, OPT_SESSION_TTL},
	    {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
	    {"max-connections", required_argument, NULL, OPT_MAX_CONN},
	    {"max-connections-per-client", required_argument, NULL, OPT_MAX_CONN_CLIENT},
	    {"shared-cache", no_argument, NULL, OPT_SHARED_CACHE},
	    {"max-log-size", required_argument, NULL, OPT_MAX_LOG},
	    {"gc-every", required_argument, NULL, OPT_GC_EVERY},
	    {"keep-days", required_argument, NULL, OPT_KEEP_DAYS},
	    {"max-size", required_argument, NULL, OPT_MAX_SIZE},
	    {"max-disk-mb", required_argument, NULL, OPT_MAX_DISK},
	    {"backup-dir", required_argument, NULL, OPT_BACKUP_DIR},
	    {"backup-at", required_argument, NULL, OPT_BACKUP_AT},
	    {"backup-keep-days", required_argument, NULL, OPT_BACKUP_KEEP},
	    {"restore-test-every", required_argument, NULL, OPT_RESTORE_EVERY},
	    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
	    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
	    {},
	};
	const char *listen[MAX_LIST], *hosts[MAX_LIST], *origins[MAX_LIST];
	struct kiln_http_config hc = {.access_log = stderr};
	const char *access_log = "-";
	struct kiln_service_config sc = {.database = getenv("KILN_DATABASE")};
	int c, r;
	bool self_signed = false;
	unsigned gc_every = 0;
	struct kiln_store_gc_policy gc = {.keep_us = -1, .grace_us = KILN_STORE_GC_GRACE_US};
	bool gc_policy = false;
	struct cli_backup_schedule bk = {
	    .at_min = 2 * 60, .keep_days = 30, .restore_every_s = 7 * 86400};
	bool bk_opts = false;
	const char *metrics_listen = NULL;
	unsigned drain_s = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "+hl:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': cli_print_help(&kiln_cmd_serve); return KILN_EXIT_OK;
		case 'l': {
			/* Checked here, so that a typo is a usage error (2), not a
			 * failure to start (1) after the state is opened. */
			struct sockaddr_storage ss;
			socklen_t sl;
			_cleanup_error_ struct kiln_error *le = NULL;
			if (kiln_http_listen_parse(optarg, &ss, &sl, &le) < 0)
				return cli_usage_error(&kiln_cmd_serve, "--listen %s: %s", optarg,
				                       le ? le->msg : "not ADDR:PORT");
			if (add(listen, &hc.n_listen, optarg) < 0)
				return cli_usage_error(&kiln_cmd_serve, "too many --listen");
			break;
		}
		case OPT_STATE: sc.state_dir = optarg; break;
		case OPT_DATABASE: sc.database = optarg; break;
		case OPT_ACCESS_LOG: access_log = optarg; break;
		case OPT_HOST_ID:
			if (!*optarg || strlen(optarg) > 64 || strpbrk(optarg, "/ \t\n"))
				return cli_usage_error(
				    &kiln_cmd_serve,
				    "--host-id: 1 to 64 characters, no '/' or space");
			sc.host_id = optarg;
			break;
		case OPT_LEASE:
			if ((r = parse_uint("--lease", optarg, 3, 3600, &sc.lease_s)) != 0)
				return r;
			break;
		case OPT_STORE: sc.store = optarg; break;
		case OPT_RETRIES:
			if ((r = parse_uint("--retries", optarg, 0, 100, &sc.retries)) != 0)
				return r;
			break;
		case OPT_WORKERS:
			if ((r = parse_uint("--workers", optarg, 1, 256, &sc.workers)) != 0)
				return r;
			break;
		case OPT_NO_AUTH: hc.no_auth = true; break;
		case OPT_TLS_CERT: hc.tls_cert = optarg; break;
		case OPT_TLS_KEY: hc.tls_key = optarg; break;
		case OPT_REDIRECT:
			if ((r = parse_uint("--redirect-http", optarg, 1, 65535,
			                    &hc.redirect_port)) != 0)
				return r;
			break;
		case OPT_ALLOWED_HOST:
			if (add(hosts, &hc.n_allowed_hosts, optarg) < 0)
				return cli_usage_error(&kiln_cmd_serve, "too many --allowed-host");
			break;
		case OPT_CORS:
			if (add(origins, &hc.n_cors_origins, optarg) < 0)
				return cli_usage_error(&kiln_cmd_serve, "too many --cors-origin");
			break;
		case OPT_RATE:
			if ((r = parse_uint("--rate-limit", optarg, 1, 1000000, &hc.rate_limit)) !=
			    0)
				return r;
			break;
		case OPT_OFFLINE: sc.offline = true; break;
		case OPT_NO_WORKERS: sc.no_workers = true; break;
		case OPT_SHARED_CACHE: sc.shared_cache = true; break;
		case OPT_MAX_DISK: {
			unsigned mb = 0;
			if ((r = parse_uint("--max-disk-mb", optarg, 16, KILN_DISK_MB_MAX, &mb)) !=
			    0)
				return r;
			sc.max_disk_mb = mb;
			break;
		}
		case OPT_MAX_LOG:
			if (kiln_parse_size(optarg, 4096, KILN_LOG_MAX_LIMIT, &sc.max_log_bytes) <
			    0)
				return cli_usage_error(&kiln_cmd_serve,
				                       "--max-log-size: expected bytes (K, M, G "
				                       "suffixes allowed) from 4K to 16G, not '%s'",
				                       optarg);
			break;
		case OPT_TLS_SELF_SIGNED: self_signed = true; break;
		case OPT_SESSION_TTL:
			if ((r = parse_uint("--session-ttl", optarg, 1, 30 * 24 * 3600,
			                    &hc.session_ttl_s)) != 0)
				return r;
			break;
		case OPT_IDLE_TIMEOUT:
			if ((r = parse_uint("--idle-timeout", optarg, 1, 24 * 3600,
			                    &hc.connection_timeout_s)) != 0)
				return r;
			break;
		case OPT_MAX_CONN:
			if ((r = parse_uint("--max-connections", optarg, 1, MAX_CONNECTIONS,
			                    &hc.connection_limit)) != 0)
				return r;
			break;
		case OPT_MAX_CONN_CLIENT:
			if ((r = parse_uint("--max-connections-per-client", optarg, 1,
			                    MAX_CONNECTIONS, &hc.per_ip_connection_limit)) != 0)
				return r;
			break;
		case OPT_GC_EVERY:
			if (cli_parse_duration(optarg, &gc_every) < 0 || gc_every == 0)
				return cli_usage_error(
				    &kiln_cmd_serve,
				    "--gc-every: expected a duration such as 6h or "
				    "1d, got '%s'",
				    optarg);
			break;
		case OPT_KEEP_DAYS: {
			unsigned days = 0;
			if ((r = parse_uint("--keep-days", optarg, 0, 100000, &days)) != 0)
				return r;
			gc.keep_us = (int64_t)days * 86400 * 1000000;
			gc_policy = true;
			break;
		}
		case OPT_MAX_SIZE:
			if (kiln_parse_size(optarg, 1, UINT64_MAX, &gc.max_size) < 0)
				return cli_usage_error(
				    &kiln_cmd_serve,
				    "--max-size: expected a size such as 500M or 20G, "
				    "got '%s'",
				    optarg);
			gc_policy = true;
			break;
		case OPT_BACKUP_DIR: bk.dir = optarg; break;
		case OPT_DRAIN_TIMEOUT:
			if (cli_parse_duration(optarg, &drain_s) < 0)
				return cli_usage_error(
				    &kiln_cmd_serve,
				    "--drain-timeout: expected a duration such as 10m, "
				    "or 0, not '%s'",
				    optarg);
			break;
		case OPT_METRICS_LISTEN: {
			struct sockaddr_storage ms;
			socklen_t ml;
			_cleanup_error_ struct kiln_error *me = NULL;
			if (kiln_http_listen_parse(optarg, &ms, &ml, &me) < 0)
				return cli_usage_error(&kiln_cmd_serve, "--metrics-listen %s: %s",
				                       optarg, me ? me->msg : "not ADDR:PORT");
			metrics_listen = optarg;
			break;
		}
		case OPT_BACKUP_AT: {
			int h, m;
			char hh[3] = {0}, mm[3] = {0};
			if (strlen(optarg) == 5 && optarg[2] == ':') {
				memcpy(hh, optarg, 2);
				memcpy(mm, optarg + 3, 2);
			}
			if (kiln_parse_int(hh, 0, 23, &h) < 0 || kiln_parse_int(mm, 0, 59, &m) < 0)
				return cli_usage_error(
				    &kiln_cmd_serve, "--backup-at: expected HH:MM (UTC), not '%s'",
				    optarg);
			bk.at_min = h * 60 + m;
			bk_opts = true;
			break;
		}
		case OPT_BACKUP_KEEP:
			if (parse_uint("--backup-keep-days", optarg, 0, 36500, &bk.keep_days))
				return KILN_EXIT_USAGE;
			bk_opts = true;
			break;
		case OPT_RESTORE_EVERY:
			if (cli_parse_duration(optarg, &bk.restore_every_s) < 0)
				return cli_usage_error(
				    &kiln_cmd_serve,
				    "--restore-test-every: expected a duration such as "
				    "7d, or 0 for never, not '%s'",
				    optarg);
			bk_opts = true;
			break;
		default: return cli_option_error(&kiln_cmd_serve, "+hl:", argv);
		}
	}
	if (bk_opts && !bk.dir)
		return cli_usage_error(&kiln_cmd_serve,
		                       "--backup-at, --backup-keep-days and --restore-test-every "
		                       "need --backup-dir");
	if (gc_policy && !gc_every)
		return cli_usage_error(&kiln_cmd_serve,
		                       "--keep-days and --max-size need --gc-every");
	if (optind != argc)
		return cli_usage_error(&kiln_cmd_serve, "unexpected argument '%s'", argv[optind]);
	if (self_signed && (hc.tls_cert || hc.tls_key))
		return cli_usage_error(
		    &kiln_cmd_serve,
		    "--tls-self-signed and --tls-cert/--tls-key exclude each other");
	/* Only when both are given: the defaults (128 of 1024) are not a
	 * choice the operator made, and a lower --max-connections alone is
	 * simply the tighter of the two. */
	if (hc.connection_limit && hc.per_ip_connection_limit &&
	    hc.per_ip_connection_limit > hc.connection_limit)
		return cli_usage_error(
		    &kiln_cmd_serve,
		    "--max-connections-per-client (%u) is over --max-connections (%u)",
		    hc.per_ip_connection_limit, hc.connection_limit);
	if (!sc.state_dir)
		sc.state_dir = kiln_state_dir_default();
	if ((r = open_access_log(access_log, &hc.access_log)) != 0)
		return r;
	/* A recipe is the largest JSON body the API takes: one limit for
	 * kiln validate and the server (recipe.h). */
	hc.body_limit = KILN_RECIPE_MAX_BYTES;
	hc.listen = listen;
	hc.allowed_hosts = hosts;
	hc.cors_origins = origins;
	hc.state_dir = sc.state_dir;
	if ((r = cli_state_secure("serve", sc.state_dir)) != 0)
		return r;
	cli_warn_subid("serve");

	/* Every thread started from here on inherits the blocked set; the
	 * main thread takes SIGINT/SIGTERM with sigwait. A client vanishing
	 * mid-response must not kill the server. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	_cleanup_error_ struct kiln_error *err = NULL;
	struct kiln_service *svc = NULL;
	default_max_disk_mb(&sc);
	if (kiln_service_open(&sc, &svc, &err) < 0) {
		cli_errorf("serve: %s", err->msg);
		return KILN_EXIT_FAILURE;
	}
	_cleanup_free_ char *ss_cert = NULL, *ss_key = NULL;
	if (self_signed) {
		bool created = false;
		if (kiln_http_tls_self_signed(sc.state_dir, &ss_cert, &ss_key, &created, &err) <
		    0) {
			cli_errorf("serve: %s", err->msg);
			kiln_service_free(svc);
			return KILN_EXIT_FAILURE;
		}
		fprintf(stderr, "kiln: %s self-signed certificate %s (browsers will warn once)\n",
		        created ? "created the" : "using the", ss_cert);
		hc.tls_cert = ss_cert;
		hc.tls_key = ss_key;
	}
	struct kiln_http_server *srv = NULL;
	if (kiln_http_start(&hc, svc, &srv, &err) < 0) {
		cli_errorf("serve: %s", err->msg);
		kiln_service_free(svc);
		return KILN_EXIT_FAILURE;
	}
	const char *const *urls;
	size_t n = kiln_http_urls(srv, &urls);
	for (size_t i = 0; i < n; i++)
		printf("kiln: serving on %s (state %s, %u workers%s)\n", urls[i], sc.state_dir,
		       kiln_service_workers(svc), hc.no_auth ? ", no authentication" : "");
	fflush(stdout);
	if (!hc.no_auth && n > 0 && bootstrap_admin(svc, urls[0]) < 0) {
		kiln_http_stop(srv);
		kiln_service_free(svc);
		return KILN_EXIT_FAILURE;
	}

	if (gc_every && cli_gc_schedule_start(svc, gc_every, &gc) != 0) {
		kiln_http_stop(srv);
		kiln_service_free(svc);
		return KILN_EXIT_FAILURE;
	}

	struct kiln_http_metrics *metrics = NULL;
	if (metrics_listen) {
		if (kiln_http_metrics_start(metrics_listen, svc, &metrics, &err) < 0) {
			cli_errorf("serve: %s", err->msg);
			cli_gc_schedule_stop();
			kiln_http_stop(srv);
			kiln_service_free(svc);
			return KILN_EXIT_FAILURE;
		}
		printf("kiln: metrics on %s\n", kiln_http_metrics_url(metrics));
		fflush(stdout);
	}
	if (bk.dir && cli_backup_schedule_start(svc, &bk) != 0) {
		cli_gc_schedule_stop();
		kiln_http_metrics_stop(metrics);
		kiln_http_stop(srv);
		kiln_service_free(svc);
		return KILN_EXIT_FAILURE;
	}

	/* Type=notify (dist/kiln.service): ready once every listener is bound
	 * and the workers run, so units ordered after kiln find it serving.
	 * A no-op without $NOTIFY_SOCKET. */
	(void)sd_notify(0, "READY=1\nSTATUS=serving");

	int sig = 0;
	sigwait(&set, &sig);
	(void)sd_notify(0, "STOPPING=1\nSTATUS=stopping");
	fprintf(stderr, "kiln: %s: shutting down\n", strsignal(sig));
	/* Drain: claim nothing more, let running builds finish up to
	 * --drain-timeout while the API still answers; what still runs then
	 * goes back to `pending` in kiln_service_free (docs/service.md). */
	if (drain_s) {
		fprintf(stderr, "kiln: draining: running builds may finish for up to %u s\n",
		        drain_s);
		unsigned left = kiln_service_drain(svc, drain_s);
		if (left)
			fprintf(stderr, "kiln: drain timeout: %u builds go back to pending\n",
			        left);
	}
	cli_backup_schedule_stop();
	cli_gc_schedule_stop();
	kiln_http_metrics_stop(metrics);
	kiln_http_stop(srv);
	kiln_service_free(svc);
	if (hc.access_log && hc.access_log != stderr)
		fclose(hc.access_log);
	return KILN_EXIT_OK;
}

const struct kiln_command kiln_cmd_serve = {
    .name = "serve",
    .summary = "run the build service (HTTP API)",
    .usage = "Usage: kiln serve [--listen ADDR:PORT]... [--state-dir DIR] [--database URL]\n"
             "                  [--workers N] [--host-id NAME] [--lease SECONDS] [--retries N]\n"
             "                  [--store DIR]\n"
             "                  [--no-auth] [--tls-cert FILE --tls-key FILE]\n"
             "                  [--redirect-http PORT] [--allowed-host HOST]...\n"
             "                  [--cors-origin ORIGIN]... [--rate-limit N] [--offline]\n"
             "                  [--no-workers] [--tls-self-signed] [--session-ttl SECONDS]\n"
             "                  [--idle-timeout SECONDS] [--max-connections N]\n"
             "                  [--max-connections-per-client N] [--shared-cache]\n"
             "                  [--max-log-size SIZE] [--max-disk-mb N]\n"
             "                  [--gc-every DURATION [--keep-days N] [--max-size SIZE]]\n"
             "                  [--access-log FILE|-|off]\n"
             "\n"
             "Serves the build API (docs/api.md) until SIGINT or SIGTERM, then stops\n"
             "gracefully: live log streams end, running builds go back to pending.\n"
             "\n"
             "  -l, --listen ADDR:PORT   listen here (repeatable; default 127.0.0.1:8080;\n"
             "                           IPv6 as [::1]:8080; port 0 picks a free one)\n"
             "      --state-dir DIR      default $KILN_STATE_DIR or /var/lib/kiln\n"
             "      --database URL       postgresql://USER@HOST/DB (several hosts share one\n"
             "                           queue), sqlite:PATH or PATH (default\n"
             "                           $KILN_DATABASE, else STATE/kiln.db)\n"
             "      --workers N          concurrent builds (default one per two cores)\n"
             "      --host-id NAME       this host among several on one database (default\n"
             "                           the host name; unique per host)\n"
             "      --lease SECONDS      a running build's lease, renewed every third of it;\n"
             "                           a host silent for longer has its builds reaped by\n"
             "                           the others (default 30)\n"
             "      --retries N          queue a build whose host died again up to N times\n"
             "                           (default 0: it ends failed, \"interrupted\")\n"
             "      --store DIR          keep artifacts, contexts and fetched packages in\n"
             "                           DIR (a mount every host sees) instead of\n"
             "                           STATE/cas: any host serves any build's artifacts\n"
             "                           and cache hits\n"
             "      --no-auth            no tokens: everyone is \"anonymous\" (loopback only)\n"
             "      --tls-cert FILE      PEM certificate: serve HTTPS\n"
             "      --tls-key FILE       PEM private key for --tls-cert\n"
             "      --tls-self-signed    serve HTTPS with a certificate for localhost made on\n"
             "                           first use and kept in STATE/tls/\n"
             "      --redirect-http PORT also answer plain HTTP on PORT with 301 to https\n"
             "      --allowed-host HOST  accept this Host header (repeatable; NAME or NAME:PORT)\n"
             "      --cors-origin ORIGIN allow cross-origin calls from ORIGIN (repeatable)\n"
             "      --rate-limit N       mutating requests per minute per client (default 100)\n"
             "      --offline            builds never fetch (warm store only)\n"
             "      --no-workers         queue builds but run none here (tests; API-only\n"
             "                           front ends); no crash recovery at start-up\n"
             "      --shared-cache       a completed build answers identical recipes of every\n"
             "                           owner (default: only its owner's); for users who\n"
             "                           trust each other — a hit confirms a guessed recipe\n"
             "      --max-log-size SIZE  a build's stored log keeps this much, the rest is\n"
             "                           dropped with a line saying how much (default 64M;\n"
             "                           K, M, G suffixes; 4K to 16G)\n"
             "      --max-disk-mb N      refuse recipes whose resources.disk_mb is over N\n"
             "                           (default 16384; the build's upper layer is a tmpfs\n"
             "                           of that size)\n"
             "\n"
             "      --gc-every DURATION  run `kiln store gc` at start and then every\n"
             "                           DURATION (90s, 10m, 6h, 1d); with its policy:\n"
             "      --keep-days N        blobs not used for N days go\n"
             "      --max-size SIZE      then least recently used first down to SIZE\n"
             "                           (see kiln help store; a summary goes to stderr)\n"
             "\n"
             "      --drain-timeout DURATION\n"
             "                           at SIGTERM, claim nothing more and let running\n"
             "                           builds finish for up to DURATION (10m); what still\n"
             "                           runs then goes back to pending (default 0: at once)\n"
             "      --metrics-listen ADDR:PORT\n"
             "                           serve GET /metrics (Prometheus text format) on a\n"
             "                           listener of its own, without authentication: bind\n"
             "                           it to loopback or a monitoring network (off by\n"
             "                           default; docs/operations.md lists the series)\n"
             "      --backup-dir DIR     back the database up into DIR every day (kiln help\n"
             "                           backup; docs/operations.md), at once when the last\n"
             "                           day's backup is missing; one host of a fleet does\n"
             "                           it (a lease in the database); the outcome shows in\n"
             "                           /api/v1/health \"details\"; with:\n"
             "      --backup-at HH:MM    the time of day, UTC (default 02:00)\n"
             "      --backup-keep-days N prune backups older than N days (default 30)\n"
             "      --restore-test-every DURATION\n"
             "                           kiln backup verify the newest backup this often\n"
             "                           (default 7d; 0: never)\n"
             "\n"
             "      --session-ttl SECONDS web page sign-ins last this long (default 43200)\n"
             "      --access-log FILE|-|off\n"
             "                           one JSON line per request (docs/api.md): appended to\n"
             "                           FILE, '-' stderr (the default), 'off' none\n"
             "\n"
             "Slow and greedy clients (slowloris):\n"
             "      --idle-timeout SECONDS\n"
             "                           close a connection that sends or reads nothing for\n"
             "                           this long, or whose request headers take longer to\n"
             "                           arrive (default 30)\n"
             "      --max-connections N  open connections in all; more wait (default 1024)\n"
             "      --max-connections-per-client N\n"
             "                           open connections from one address; more are closed\n"
             "                           (default 128)\n"
             "\n"
             "Prints one line per URL served on stdout, then one line per request to the\n"
             "access log (stderr unless --access-log says otherwise). The\n"
             "web page is at the URL's /. On the first start (no token exists yet, and\n"
             "not --no-auth) an admin token is created and printed once on stderr.\n"
             "\n"
             "Exit status: 0 after a clean shutdown, 1 failure, 2 usage error.\n",
    .run = run,
};
