/*
 * libFuzzer target over everything the harness parses or takes from outside:
 * the runner's number/threshold/policy parsers, the raw input file reader, and
 * ee_session_run_raw / ee_session_set_policy with arbitrary bytes and options.
 * Env: EE_FUZZ_BUNDLE (bundle dir) and EE_LITERT_LIB enable the session part.
 * Build: cmake -DEE_FUZZ=ON -DCMAKE_C_COMPILER=clang; run: ee_fuzz -max_total_time=30
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ee.h"
#include "ee_args.h"
#include "ee_bundle_gen.h"
#include "ee_names.h"

static ee_session *g_session = NULL;
static char g_tmp[64], g_tmp_npy[64];

static void quiet_log(ee_log_level level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    (void)user;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = getenv("EE_FUZZ_BUNDLE");
    if (dir != NULL) {
        ee_session_params p = ee_session_default_params();
        p.bundle_dir = dir;
        p.log_fn = quiet_log;
        if (ee_session_create(&EE_BUNDLE, &p, &g_session) != EE_OK) {
            fprintf(stderr, "fuzz: cannot create a session for %s\n", dir);
            abort();
        }
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/ee_fuzz_%d.bin", (int)getpid());
    snprintf(g_tmp_npy, sizeof g_tmp_npy, "/tmp/ee_fuzz_%d.npy", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n) {
    if (n < 2) return 0;
    unsigned mode = data[0] % 6;
    const unsigned char *d = data + 1;
    size_t m = n - 1;
    char *s = malloc(m + 1);
    memcpy(s, d, m);
    s[m] = '\0';
    if (mode == 0) {
        float f[EE_MAX_STAGES];
        int k = ee_parse_floats(s, f, EE_MAX_STAGES);
        if (k > EE_MAX_STAGES) abort();
    } else if (mode == 1) {
        long v;
        if (ee_parse_long(s, -5, 5, &v) == 0 && (v < -5 || v > 5)) abort();
    } else if (mode == 2) {
        ee_policy p;
        if (ee_parse_policy(s, &p) == 0 && ((int)p < 0 || (int)p >= EE_N_POLICIES)) abort();
    } else if (mode == 3) { /* an input file, raw or .npy, of arbitrary bytes */
        const char *path = (d[0] & 1) ? g_tmp_npy : g_tmp;
        FILE *f = fopen(path, "wb");
        if (f != NULL) {
            fwrite(d + 1, 1, m - 1, f);
            fclose(f);
            const ee_tensor_desc *td = &EE_BUNDLE.stages[0].graphs[0].inputs[0];
            ee_sample_shape shape = ee_sample_shape_of(td);
            ee_input_file in;
            if (ee_input_file_open(&in, path, &shape, (d[0] & 2) != 0) == 0) {
                unsigned char *buf = malloc(in.sample_bytes);
                for (size_t i = 0; i < in.n_samples && i < 64; i++)
                    if (ee_input_file_read(&in, buf) != 0) abort();
                free(buf);
                ee_input_file_close(&in);
            }
        }
    } else if (mode == 4) { /* the .npy header parser alone */
        char descr[16];
        long shape[9];
        int rank = 0;
        if (ee_npy_parse_header(s, m, descr, sizeof descr, shape, &rank, 9) == 0 && (rank < 0 || rank > 9)) abort();
    } else if (g_session != NULL) {
        ee_run_options o = ee_run_default_options();
        o.max_exit = (int32_t)(d[0] % (EE_BUNDLE.n_stages + 2)) - 1; /* -1 .. n_stages: includes invalid */
        o.no_early_exit = m > 1 && (d[1] & 1);
        float t[EE_MAX_STAGES];
        for (int i = 0; i < EE_MAX_STAGES; i++) t[i] = (float)(m > (size_t)(2 + i) ? d[2 + i] : 0) / 200.0f;
        ee_session_set_policy(g_session, (ee_policy)(d[0] % (EE_N_POLICIES + 1)), t, EE_BUNDLE.n_stages);
        size_t need = ee_session_input_bytes(g_session);
        unsigned char *in = calloc(1, need + 1);
        memcpy(in, d, m < need ? m : need);
        ee_result r;
        ee_status st = ee_session_run_raw(g_session, in, m >= need ? need : m, &o, &r);
        if (st == EE_OK && (r.exit_idx < 0 || r.exit_idx >= EE_BUNDLE.n_stages || r.class_idx < 0 ||
                            r.class_idx >= EE_BUNDLE.n_classes))
            abort();
        free(in);
    }
    free(s);
    return 0;
}
