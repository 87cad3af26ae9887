/*
 * ee_bench -- overhead of the staged harness against one monolithic LiteRT model of the same
 * graph (backbone + every exit head as outputs), as paired per-iteration ratios.
 *
 *   ee_bench BUNDLE_DIR MONO.tflite --litert LIB [--threads N] [--iters N] [--warmup N]
 *
 * Each iteration runs both, in alternating order, on the same input: the harness with
 * every exit evaluated (no early exit) and the monolithic model; both copy the input in
 * and read every exit's logits out. Prints one JSON object.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee.h"
#include "ee_args.h"
#include "ee_bundle_gen.h"
#include "litert_mono.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void mono_run(mono_t *m, const void *input, size_t n, unsigned char *sink) {
    void *p;
    CK(m->api.LiteRtLockTensorBuffer(m->in[0], &p, kLiteRtTensorBufferLockModeWrite));
    memcpy(p, input, n);
    m->api.LiteRtUnlockTensorBuffer(m->in[0]);
    CK(m->api.LiteRtRunCompiledModel(m->cm, 0, m->n_in, m->in, m->n_out, m->out));
    for (size_t o = 0; o < m->n_out; o++) {
        size_t sz = 0;
        CK(m->api.LiteRtLockTensorBuffer(m->out[o], &p, kLiteRtTensorBufferLockModeRead));
        m->api.LiteRtGetTensorBufferPackedSize(m->out[o], &sz);
        sink[o] ^= ((unsigned char *)p)[sz - 1];
        m->api.LiteRtUnlockTensorBuffer(m->out[o]);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ee_bench BUNDLE_DIR MONO.tflite --litert LIB [--threads N] [--iters N] [--warmup N]\n");
        return 2;
    }
    const char *lib = "libLiteRt.so";
    long threads = 1, iters = 2000, warmup = 100;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--litert") == 0) lib = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0 && ee_parse_long(argv[i + 1], 1, 64, &threads) == 0) {}
        else if (strcmp(argv[i], "--iters") == 0 && ee_parse_long(argv[i + 1], 1, 10000000, &iters) == 0) {}
        else if (strcmp(argv[i], "--warmup") == 0 && ee_parse_long(argv[i + 1], 0, 10000000, &warmup) == 0) {}
        else {
            fprintf(stderr, "ee_bench: bad option %s\n", argv[i]);
            return 2;
        }
    }
    ee_session_params p = ee_session_default_params();
    p.bundle_dir = argv[1];
    p.litert_path = lib;
    p.n_threads = (int32_t)threads;
    ee_session *s = NULL;
    ee_status st = ee_session_create(&EE_BUNDLE, &p, &s);
    if (st != EE_OK) {
        fprintf(stderr, "ee_bench: %s\n", ee_status_str(st));
        return 1;
    }
    mono_t m;
    mono_open(&m, lib, argv[2], (int)threads);
    size_t nb = ee_session_input_bytes(s);
    unsigned char *input = malloc(nb);
    srand(1234);
    for (size_t i = 0; i < nb; i++) input[i] = (unsigned char)(rand() & 0xff);
    ee_run_options o = ee_run_default_options();
    o.no_early_exit = true;
    ee_result r;
    unsigned char sink[EE_MAX_STAGES] = {0};
    double *ratio = malloc(sizeof(double) * (size_t)iters);
    double *harness_ns = malloc(sizeof(double) * (size_t)iters);
    double sum_h = 0, sum_m = 0, sum_dec_ns = 0;
    long n_dec = 0;
    for (long it = -warmup; it < iters; it++) {
        int64_t th = 0, tm = 0;
        for (int pass = 0; pass < 2; pass++) {
            bool harness_now = ((it & 1) == 0) == (pass == 0);
            int64_t t0 = now_ns();
            if (harness_now) {
                if (ee_session_run_raw(s, input, nb, &o, &r) != EE_OK) return 1;
                th = now_ns() - t0;
            } else {
                mono_run(&m, input, nb, sink);
                tm = now_ns() - t0;
            }
        }
        if (it < 0) continue;
        ratio[it] = (double)th / (double)tm;
        harness_ns[it] = (double)th;
        sum_h += (double)th;
        sum_m += (double)tm;
        for (int k = 0; k < r.n_stages_run; k++) {
            sum_dec_ns += (double)r.t_decision_ns[k];
            n_dec++;
        }
    }
    qsort(ratio, (size_t)iters, sizeof(double), cmp_double);
    qsort(harness_ns, (size_t)iters, sizeof(double), cmp_double);
    printf("{\"bundle\": \"%s\", \"threads\": %ld, \"iters\": %ld, \"median_ratio\": %.4f, \"p10_ratio\": %.4f, "
           "\"p90_ratio\": %.4f, \"mean_harness_us\": %.2f, \"median_harness_us\": %.3f, \"mean_mono_us\": %.2f, "
           "\"mean_decision_ns\": %.1f, \"sink\": %d}\n",
           EE_BUNDLE.name, threads, iters, ratio[iters / 2], ratio[iters / 10], ratio[iters * 9 / 10],
           sum_h / (double)iters / 1e3, harness_ns[iters / 2] / 1e3, sum_m / (double)iters / 1e3,
           n_dec ? sum_dec_ns / (double)n_dec : 0.0, sink[0]);
    free(ratio);
    free(harness_ns);
    free(input);
    ee_session_free(s);
    return 0;
}
