/*
 * Bad input gets a clear status, never a crash. Run: ee_test_errors BUNDLE_DIR LIBLITERT
 * (built against a generated bundle description; pytest drives it, see tests/test_harness.py).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee.h"
#include "ee_args.h"
#include "ee_bundle_gen.h"

static int n_pass = 0, n_fail = 0;
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (cond) {                                                          \
            n_pass++;                                                        \
        } else {                                                             \
            n_fail++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                    \
    } while (0)

static int n_logged = 0;
static void count_log(ee_log_level level, const char *msg, void *user) {
    (void)level;
    (void)msg;
    (*(int *)user)++;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ee_test_errors BUNDLE_DIR LIBLITERT\n");
        return 2;
    }
    ee_session_params p = ee_session_default_params();
    p.bundle_dir = argv[1];
    p.litert_path = argv[2];
    p.log_fn = count_log;
    p.log_user_data = &n_logged;
    ee_session *s = NULL;

    /* NULL arguments */
    CHECK(ee_session_create(NULL, &p, &s) == EE_ERR_INVALID_ARG && s == NULL);
    CHECK(ee_session_create(&EE_BUNDLE, NULL, &s) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_create(&EE_BUNDLE, &p, NULL) == EE_ERR_INVALID_ARG);
    ee_session_free(NULL);
    CHECK(strcmp(ee_status_str(EE_ERR_VERSION), "version mismatch (libLiteRt.so or bundle description)") == 0);
    CHECK(strcmp(ee_status_str((ee_status)12345), "unknown status") == 0);

    /* missing libLiteRt.so, a library that is not LiteRT */
    ee_session_params q = p;
    q.litert_path = "/nonexistent/libLiteRt.so";
    CHECK(ee_session_create(&EE_BUNDLE, &q, &s) == EE_ERR_NOT_FOUND && s == NULL);
    CHECK(strcmp(ee_status_str(EE_ERR_NOT_FOUND), "libLiteRt.so not found or not loadable") == 0);
    q.litert_path = "libm.so.6";
    CHECK(ee_session_create(&EE_BUNDLE, &q, &s) == EE_ERR_VERSION && s == NULL);

    /* wrong bundle dir, bad thread count, description of another ABI */
    q = p;
    q.bundle_dir = "/nonexistent";
    CHECK(ee_session_create(&EE_BUNDLE, &q, &s) == EE_ERR_IO && s == NULL);
    q = p;
    q.n_threads = 0;
    CHECK(ee_session_create(&EE_BUNDLE, &q, &s) == EE_ERR_INVALID_ARG);
    ee_bundle_desc other = EE_BUNDLE;
    other.abi_version = 999;
    CHECK(ee_session_create(&other, &p, &s) == EE_ERR_VERSION);

    /* a graph pointing at a signature its file does not have (wrong key, index out of range) */
    ee_stage_desc stages[EE_MAX_STAGES];
    ee_graph_desc g0[2];
    memcpy(stages, EE_BUNDLE.stages, sizeof(ee_stage_desc) * (size_t)EE_BUNDLE.n_stages);
    memcpy(g0, EE_BUNDLE.stages[0].graphs, sizeof(ee_graph_desc) * (size_t)EE_BUNDLE.stages[0].n_graphs);
    stages[0].graphs = g0;
    other = EE_BUNDLE;
    other.stages = stages;
    g0[0].signature_key = "no_such_signature";
    CHECK(ee_session_create(&other, &p, &s) == EE_ERR_MODEL && s == NULL);
    g0[0].signature_key = EE_BUNDLE.stages[0].graphs[0].signature_key;
    g0[0].signature_index = 1000;
    CHECK(ee_session_create(&other, &p, &s) == EE_ERR_MODEL && s == NULL);
    g0[0].signature_index = -1;
    CHECK(ee_session_create(&other, &p, &s) == EE_ERR_MODEL && s == NULL);
    g0[0].signature_index = EE_BUNDLE.stages[0].graphs[0].signature_index;
    CHECK(ee_session_create(&other, &p, &s) == EE_OK && s != NULL); /* the copy itself is fine */
    ee_session_free(s);
    s = NULL;

    /* two graphs naming one file (a packed bundle) but describing it differently */
    if (EE_BUNDLE.n_stages > 1 && strcmp(EE_BUNDLE.stages[1].graphs[0].file, g0[0].file) == 0) {
        ee_graph_desc g1[2];
        memcpy(g1, EE_BUNDLE.stages[1].graphs, sizeof(ee_graph_desc) * (size_t)EE_BUNDLE.stages[1].n_graphs);
        stages[1].graphs = g1;
        g1[0].file_fnv1a ^= 1u;
        CHECK(ee_session_create(&other, &p, &s) == EE_ERR_MODEL && s == NULL);
        g1[0].file_fnv1a ^= 1u;
        g1[0].file_bytes += 1;
        CHECK(ee_session_create(&other, &p, &s) == EE_ERR_MODEL && s == NULL);
        stages[1].graphs = EE_BUNDLE.stages[1].graphs;
    }

    /* a good session */
    n_logged = 0;
    CHECK(ee_session_create(&EE_BUNDLE, &p, &s) == EE_OK && s != NULL);
    if (s == NULL) {
        fprintf(stderr, "cannot continue without a session\n");
        printf("%d passed, %d failed\n", n_pass, n_fail + 1);
        return 1;
    }
    size_t nb = ee_session_input_bytes(s);
    CHECK(nb > 0);
    unsigned char *in = calloc(1, nb);
    ee_result r;
    ee_run_options o = ee_run_default_options();
    CHECK(ee_session_run_raw(s, in, nb, &o, &r) == EE_OK && r.exit_idx >= 0 && r.exit_idx < EE_BUNDLE.n_stages);
    CHECK(ee_session_run_raw(s, in, nb, NULL, &r) == EE_OK);

    /* input of the wrong size, NULLs */
    CHECK(ee_session_run_raw(s, in, nb - 1, &o, &r) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_run_raw(s, in, nb + 1, &o, &r) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_run_raw(s, NULL, nb, &o, &r) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_run_raw(s, in, nb, &o, NULL) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_run_raw(NULL, in, nb, &o, &r) == EE_ERR_INVALID_ARG);

    /* float input: NaN refused, wrong count refused */
    size_t n_el = nb / ee_dtype_size(EE_BUNDLE.stages[0].graphs[0].inputs[0].dtype);
    float *f = calloc(n_el, sizeof(float));
    CHECK(ee_session_run_f32(s, f, n_el, &o, &r) == EE_OK);
    f[n_el / 2] = NAN;
    CHECK(ee_session_run_f32(s, f, n_el, &o, &r) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_run_f32(s, f, n_el - 1, &o, &r) == EE_ERR_INVALID_ARG);

    /* max_exit out of range; in range caps the exit */
    o.max_exit = EE_BUNDLE.n_stages;
    CHECK(ee_session_run_raw(s, in, nb, &o, &r) == EE_ERR_INVALID_ARG);
    o.max_exit = -2;
    CHECK(ee_session_run_raw(s, in, nb, &o, &r) == EE_ERR_INVALID_ARG);
    o.max_exit = 0;
    CHECK(ee_session_run_raw(s, in, nb, &o, &r) == EE_OK && r.exit_idx == 0 && r.n_stages_run == 1);

    /* thresholds out of range, wrong count, bad policy */
    float t[EE_MAX_STAGES];
    for (int i = 0; i < EE_MAX_STAGES; i++) t[i] = 0.5f;
    t[0] = 1.5f;
    CHECK(ee_session_set_policy(s, EE_POLICY_MAX_PROB, t, EE_BUNDLE.n_stages) == EE_ERR_INVALID_ARG);
    t[0] = -0.1f;
    CHECK(ee_session_set_policy(s, EE_POLICY_ENTROPY, t, EE_BUNDLE.n_stages) == EE_ERR_INVALID_ARG);
    t[0] = NAN;
    CHECK(ee_session_set_policy(s, EE_POLICY_MARGIN, t, EE_BUNDLE.n_stages) == EE_ERR_INVALID_ARG);
    t[0] = 1.5f;
    CHECK(ee_session_set_policy(s, EE_POLICY_PATIENCE, t, EE_BUNDLE.n_stages) == EE_ERR_INVALID_ARG);
    t[0] = 0.5f;
    CHECK(ee_session_set_policy(s, EE_POLICY_MAX_PROB, t, EE_BUNDLE.n_stages + 1) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_set_policy(s, (ee_policy)7, t, EE_BUNDLE.n_stages) == EE_ERR_INVALID_ARG);
    CHECK(ee_session_set_policy(s, EE_POLICY_MAX_PROB, NULL, EE_BUNDLE.n_stages) == EE_ERR_INVALID_ARG);
    t[0] = 0.0f; /* every sample leaves at exit 0 */
    CHECK(ee_session_set_policy(s, EE_POLICY_MAX_PROB, t, EE_BUNDLE.n_stages - 1) == EE_OK);
    o.max_exit = -1;
    CHECK(ee_session_run_raw(s, in, nb, &o, &r) == EE_OK && r.exit_idx == 0);
    o.no_early_exit = true;
    CHECK(ee_session_run_raw(s, in, nb, &o, &r) == EE_OK && r.exit_idx == EE_BUNDLE.n_stages - 1);
    for (int k = 0; k < EE_BUNDLE.n_stages; k++) CHECK(r.exit_logits[k] != NULL);
    CHECK(n_logged > 0); /* errors went through the log callback */

    /* the runner's parsers */
    float fl[4];
    long v;
    ee_policy pol;
    CHECK(ee_parse_floats("0.9,0.8", fl, 4) == 2 && fl[1] == 0.8f);
    CHECK(ee_parse_floats("0.9,,0.8", fl, 4) == -1);
    CHECK(ee_parse_floats("1,2,3,4,5", fl, 4) == -1);
    CHECK(ee_parse_floats("nan", fl, 4) == -1);
    CHECK(ee_parse_floats("", fl, 4) == -1);
    CHECK(ee_parse_long("3", 0, 3, &v) == 0 && v == 3);
    CHECK(ee_parse_long("4", 0, 3, &v) == -1 && ee_parse_long("1x", 0, 3, &v) == -1);
    CHECK(ee_parse_policy("patience", &pol) == 0 && pol == EE_POLICY_PATIENCE);
    CHECK(ee_parse_policy("vibes", &pol) == -1);
    CHECK(ee_parse_long("99999999999999999999", 0, 3, &v) == -1);
    double dv;
    CHECK(ee_parse_double("2.5", &dv) == 0 && dv == 2.5 && ee_parse_double("1e999", &dv) == -1);
    char descr[16];
    long shape[9];
    int rank = 0;
    const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 8, 8, 1), }";
    CHECK(ee_npy_parse_header(h, strlen(h), descr, sizeof descr, shape, &rank, 9) == 0 && rank == 4 &&
          shape[0] == 3 && shape[3] == 1 && strcmp(descr, "<f4") == 0);
    h = "{'descr': '<f4', 'fortran_order': True, 'shape': (3, 8), }";
    CHECK(ee_npy_parse_header(h, strlen(h), descr, sizeof descr, shape, &rank, 9) == -1);
    h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -8), }";
    CHECK(ee_npy_parse_header(h, strlen(h), descr, sizeof descr, shape, &rank, 9) == -1);

    free(f);
    free(in);
    ee_session_free(s);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
