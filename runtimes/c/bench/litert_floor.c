/*
 * litert_floor -- the fixed cost of one LiteRtRunCompiledModel call, the floor under the
 * harness's per-stage overhead: a model with one tiny op, run in a loop on 1 thread.
 *
 *   litert_floor MODEL.tflite --litert LIB [--iters N]
 *
 * Times the call with the input buffers passed on every run (LiteRT registers them each
 * time) and with NULL inputs after the first run (bound once, as the harness does).
 * Prints one JSON object; times in ns per call, the best of 3 repeats.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

#include "ee_args.h"
#include "litert_mono.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: litert_floor MODEL.tflite --litert LIB [--iters N]\n");
        return 2;
    }
    const char *lib = "libLiteRt.so";
    long iters = 100000;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--litert") == 0) lib = argv[i + 1];
        else if (strcmp(argv[i], "--iters") == 0 && ee_parse_long(argv[i + 1], 1, 100000000, &iters) == 0) {}
        else {
            fprintf(stderr, "litert_floor: bad option %s\n", argv[i]);
            return 2;
        }
    }
    mono_t m;
    mono_open(&m, lib, argv[1], 1);
    LiteRtTensorBuffer none[EE_MAX_GRAPH_IO] = {NULL};
    double best[2] = {1e30, 1e30};
    for (int rep = 0; rep < 3; rep++) {
        for (int bound = 0; bound < 2; bound++) {
            CK(m.api.LiteRtRunCompiledModel(m.cm, 0, m.n_in, m.in, m.n_out, m.out));
            int64_t t0 = now_ns();
            for (long i = 0; i < iters; i++)
                CK(m.api.LiteRtRunCompiledModel(m.cm, 0, m.n_in, bound ? none : m.in, m.n_out, m.out));
            double ns = (double)(now_ns() - t0) / (double)iters;
            if (ns < best[bound]) best[bound] = ns;
        }
    }
    printf("{\"iters\": %ld, \"ns_per_run_input_registered\": %.0f, \"ns_per_run_input_bound\": %.0f}\n", iters,
           best[0], best[1]);
    return 0;
}
