/* mktoken — creates an API token through the service, for tests/api until
 * and besides `kiln token create`: mktoken STATE_DIR OWNER prints the
 * secret. Uses only service/service.h, with no workers, next to a running
 * server. */
#include <stdio.h>

#include "service/service.h"

int main(int argc, char **argv)
{
	if (argc != 3) {
		fputs("usage: mktoken STATE_DIR OWNER\n", stderr);
		return 2;
	}
	struct kiln_service_config cfg = {.state_dir = argv[1], .no_workers = true};
	struct kiln_service *s = NULL;
	struct kiln_error *err = NULL;
	if (kiln_service_open(&cfg, &s, &err) < 0) {
		fprintf(stderr, "mktoken: %s\n", err->msg);
		kiln_error_free(err);
		return 1;
	}
	char *secret = NULL;
	struct kiln_token_info info = {0};
	int r = kiln_service_token_create(s, argv[2], "tests/api", &secret, &info, &err);
	if (r < 0) {
		fprintf(stderr, "mktoken: %s\n", err->msg);
		kiln_error_free(err);
	} else {
		printf("%s\n", secret);
	}
	free(secret);
	kiln_token_info_clear(&info);
	kiln_service_free(s);
	return r < 0 ? 1 : 0;
}
