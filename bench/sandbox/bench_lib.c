/* bench/sandbox/bench_lib.c — start-to-exit of /bin/true through the library,
 * as the build service calls it (a resident process: no exec of kiln, no
 * dynamic loading per run). Prints one latency in microseconds per line.
 *
 *   bench_lib ROOT RUNS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "sandbox/sandbox.h"

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	const char *layers[] = {argv[1]};
	static const char *const cmd[] = {"/bin/true", NULL};
	int runs = (int)strtol(argv[2], NULL, 10);
	for (int i = 0; i < runs; i++) {
		struct kiln_sandbox_spec s;
		kiln_sandbox_spec_init(&s);
		s.layers = layers;
		s.n_layers = 1;
		s.argv = cmd;
		struct kiln_sandbox_result r;
		struct kiln_error *err = NULL;
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		if (kiln_sandbox_run(&s, &r, &err) < 0 || r.exit_code != 0) {
			fprintf(stderr, "run failed: %s\n", err ? err->msg : "exit status");
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		printf("%ld\n", (b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000);
	}
	return 0;
}
