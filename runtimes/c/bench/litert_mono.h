/*
 * litert_mono.h -- shared by the bench programs: one LiteRT model opened through the C API
 * directly (no harness), with a managed buffer per signature input and output, and a clock.
 * Any failure prints the call and exits: these are measurement tools, not library code.
 */
#ifndef EE_BENCH_LITERT_MONO_H
#define EE_BENCH_LITERT_MONO_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ee.h"
#include "litert_api.h"

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define CK(x)                                                                  \
    do {                                                                       \
        if ((x) != kLiteRtStatusOk) {                                          \
            fprintf(stderr, "bench: %s failed (%s:%d)\n", #x, __FILE__, __LINE__); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

typedef struct {
    ee_litert_api api;
    LiteRtEnvironment env;
    LiteRtModel model;
    LiteRtOptions opts;
    LiteRtCompiledModel cm;
    size_t n_in, n_out;
    LiteRtTensorBuffer in[EE_MAX_GRAPH_IO], out[EE_MAX_STAGES];
} mono_t;

static void mono_free_payload(void *p) { free(p); }

/* Load `lib`, compile the model file at `path` on the CPU (XNNPACK, `threads` threads) and
 * create its buffers (signature 0). */
static void mono_open(mono_t *m, const char *lib, const char *path, int threads) {
    memset(m, 0, sizeof *m);
    void *dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        fprintf(stderr, "bench: %s\n", dlerror());
        exit(1);
    }
#define LOAD(ret, name, args)                                    \
    *(void **)&m->api.name = dlsym(dl, #name);                   \
    if (m->api.name == NULL) {                                   \
        fprintf(stderr, "bench: %s lacks %s\n", lib, #name);     \
        exit(1);                                                 \
    }
    EE_LITERT_FUNCTIONS(LOAD)
#undef LOAD
    LiteRtEnvOption eo[1];
    memset(eo, 0, sizeof eo);
    eo[0].tag = kLiteRtEnvOptionTagAutoRegisterAccelerators;
    eo[0].value.type = kLiteRtAnyTypeInt;
    eo[0].value.v.int_value = kLiteRtHwAcceleratorCpu;
    CK(m->api.LiteRtCreateEnvironment(1, eo, &m->env));
    CK(m->api.LiteRtCreateModelFromFile(m->env, path, &m->model));
    LiteRtSignature sig;
    CK(m->api.LiteRtGetModelSignature(m->model, 0, &sig));
    CK(m->api.LiteRtGetNumSignatureInputs(sig, &m->n_in));
    CK(m->api.LiteRtGetNumSignatureOutputs(sig, &m->n_out));
    if (m->n_in > EE_MAX_GRAPH_IO || m->n_out > EE_MAX_STAGES) {
        fprintf(stderr, "bench: %s has %zu inputs and %zu outputs, more than the bench holds\n", path, m->n_in,
                m->n_out);
        exit(1);
    }
    CK(m->api.LiteRtCreateOptions(&m->opts));
    CK(m->api.LiteRtSetOptionsHardwareAccelerators(m->opts, kLiteRtHwAcceleratorCpu));
    char *payload = malloc(48);
    snprintf(payload, 48, "num_threads = %d\n", threads);
    LiteRtOpaqueOptions oo;
    CK(m->api.LiteRtCreateOpaqueOptions("xnnpack", payload, mono_free_payload, &oo));
    CK(m->api.LiteRtAddOpaqueOptions(m->opts, oo));
    CK(m->api.LiteRtCreateCompiledModel(m->env, m->model, m->opts, &m->cm));
    for (size_t i = 0; i < m->n_in + m->n_out; i++) {
        bool is_in = i < m->n_in;
        size_t j = is_in ? i : i - m->n_in;
        LiteRtTensor t;
        LiteRtRankedTensorType rtt;
        LiteRtTensorBufferRequirements req;
        CK(is_in ? m->api.LiteRtGetSignatureInputTensorByIndex(sig, j, &t)
                 : m->api.LiteRtGetSignatureOutputTensorByIndex(sig, j, &t));
        CK(m->api.LiteRtGetRankedTensorType(t, &rtt));
        CK(is_in ? m->api.LiteRtGetCompiledModelInputBufferRequirements(m->cm, 0, j, &req)
                 : m->api.LiteRtGetCompiledModelOutputBufferRequirements(m->cm, 0, j, &req));
        CK(m->api.LiteRtCreateManagedTensorBufferFromRequirements(m->env, &rtt, req, is_in ? &m->in[j] : &m->out[j]));
    }
}

#endif /* EE_BENCH_LITERT_MONO_H */
