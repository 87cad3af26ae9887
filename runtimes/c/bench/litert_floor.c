/*
 * litert_floor -- the fixed cost of one LiteRtRunCompiledModel call, the floor under the
 * harness's per-stage overhead: a model with one tiny op, run in a loop.
 *
 *   litert_floor MODEL.tflite --litert LIB [--iters N]
 *
 * Times the call with the input buffer passed on every run (LiteRT registers it each
 * time) and with NULL inputs after the first run (bound once, as the harness does).
 * Prints one JSON object; times in ns per call, the best of 3 repeats.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ee_args.h"
#include "litert_api.h"

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define CK(x)                                                                   \
    do {                                                                        \
        if ((x) != kLiteRtStatusOk) {                                           \
            fprintf(stderr, "litert_floor: %s failed (line %d)\n", #x, __LINE__); \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

static void free_payload(void *p) { free(p); }

static void make_buffer(ee_litert_api *api, LiteRtEnvironment env, LiteRtCompiledModel cm, LiteRtSignature sig,
                        bool is_in, LiteRtTensorBuffer *out) {
    LiteRtTensor t;
    LiteRtRankedTensorType rtt;
    LiteRtTensorBufferRequirements req;
    CK(is_in ? api->LiteRtGetSignatureInputTensorByIndex(sig, 0, &t) : api->LiteRtGetSignatureOutputTensorByIndex(sig, 0, &t));
    CK(api->LiteRtGetRankedTensorType(t, &rtt));
    CK(is_in ? api->LiteRtGetCompiledModelInputBufferRequirements(cm, 0, 0, &req)
             : api->LiteRtGetCompiledModelOutputBufferRequirements(cm, 0, 0, &req));
    CK(api->LiteRtCreateManagedTensorBufferFromRequirements(env, &rtt, req, out));
}

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
    void *dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        fprintf(stderr, "litert_floor: %s\n", dlerror());
        return 1;
    }
    ee_litert_api api;
#define LOAD(ret, name, args)                                            \
    *(void **)&api.name = dlsym(dl, #name);                              \
    if (api.name == NULL) {                                              \
        fprintf(stderr, "litert_floor: %s lacks %s\n", lib, #name);      \
        return 1;                                                        \
    }
    EE_LITERT_FUNCTIONS(LOAD)
#undef LOAD
    LiteRtEnvironment env;
    LiteRtModel model;
    LiteRtOptions opts;
    LiteRtCompiledModel cm;
    LiteRtSignature sig;
    LiteRtOpaqueOptions oo;
    CK(api.LiteRtCreateEnvironment(0, NULL, &env));
    CK(api.LiteRtCreateModelFromFile(env, argv[1], &model));
    CK(api.LiteRtGetModelSignature(model, 0, &sig));
    CK(api.LiteRtCreateOptions(&opts));
    CK(api.LiteRtSetOptionsHardwareAccelerators(opts, kLiteRtHwAcceleratorCpu));
    char *payload = malloc(32);
    snprintf(payload, 32, "num_threads = 1\n");
    CK(api.LiteRtCreateOpaqueOptions("xnnpack", payload, free_payload, &oo));
    CK(api.LiteRtAddOpaqueOptions(opts, oo));
    CK(api.LiteRtCreateCompiledModel(env, model, opts, &cm));
    LiteRtTensorBuffer in, out, none[1] = {NULL};
    make_buffer(&api, env, cm, sig, true, &in);
    make_buffer(&api, env, cm, sig, false, &out);
    double best[2] = {1e30, 1e30};
    for (int rep = 0; rep < 3; rep++) {
        for (int bound = 0; bound < 2; bound++) {
            CK(api.LiteRtRunCompiledModel(cm, 0, 1, &in, 1, &out));
            int64_t t0 = now_ns();
            for (long i = 0; i < iters; i++) CK(api.LiteRtRunCompiledModel(cm, 0, 1, bound ? none : &in, 1, &out));
            double ns = (double)(now_ns() - t0) / (double)iters;
            if (ns < best[bound]) best[bound] = ns;
        }
    }
    printf("{\"iters\": %ld, \"ns_per_run_input_registered\": %.0f, \"ns_per_run_input_bound\": %.0f}\n", iters,
           best[0], best[1]);
    api.LiteRtDestroyTensorBuffer(in);
    api.LiteRtDestroyTensorBuffer(out);
    api.LiteRtDestroyCompiledModel(cm);
    api.LiteRtDestroyOptions(opts);
    api.LiteRtDestroyModel(model);
    api.LiteRtDestroyEnvironment(env);
    return 0;
}
