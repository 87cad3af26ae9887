/*
 * The exit decision maths (ee_decide.c) against golden decisions written by the Python
 * runtime (eecompile/core/policies.py), without LiteRT. Run: ee_test_decide GOLDEN.txt
 *
 * GOLDEN.txt (written by tests/test_decide.py), whitespace-separated numbers:
 *   n_exits n_classes n_cases
 *   per exit: dtype (9 int8, 1 float32) scale zero_point
 *   n_samples, then per sample and exit: n_classes logits (raw int8 codes or floats)
 *   per case: policy_code, n_exits thresholds, [learned: n_exits x EE_GATE_SIZE gate values],
 *             then per sample: exit_idx class_idx confidence
 * Prints one line per case and exits 1 on any disagreement.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee_decide.h"

static int read_num(FILE *f, double *v) { return fscanf(f, "%lf", v) == 1 ? 0 : -1; }

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: ee_test_decide GOLDEN.txt\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    double v[3];
    if (f == NULL || read_num(f, &v[0]) || read_num(f, &v[1]) || read_num(f, &v[2])) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    int n_exits = (int)v[0], n_classes = (int)v[1], n_cases = (int)v[2];
    ee_logits_format fmt[EE_MAX_STAGES];
    for (int k = 0; k < n_exits; k++) {
        double dt, sc, zp;
        if (read_num(f, &dt) || read_num(f, &sc) || read_num(f, &zp)) return 2;
        fmt[k].dtype = (ee_dtype)(int)dt;
        fmt[k].has_quant = fmt[k].dtype == EE_DTYPE_INT8;
        fmt[k].quant.scale = (float)sc;
        fmt[k].quant.zero_point = (int32_t)zp;
    }
    double ns;
    if (read_num(f, &ns)) return 2;
    size_t n = (size_t)ns, per = (size_t)n_exits * (size_t)n_classes;
    float *logits = malloc(n * per * sizeof(float));
    for (size_t i = 0; i < n * per; i++) {
        double x;
        if (read_num(f, &x)) return 2;
        logits[i] = (float)x;
    }
    ee_decider d;
    if (ee_decider_init(&d, n_exits, n_classes, fmt) != EE_OK) return 2;
    int bad_cases = 0;
    for (int c = 0; c < n_cases; c++) {
        double pc;
        float t[EE_MAX_STAGES];
        if (read_num(f, &pc)) return 2;
        for (int k = 0; k < n_exits; k++) {
            double x;
            if (read_num(f, &x)) return 2;
            t[k] = (float)x;
        }
        if ((int)pc == EE_POLICY_LEARNED) {
            float gates[EE_MAX_STAGES * EE_GATE_SIZE];
            for (int i = 0; i < n_exits * EE_GATE_SIZE; i++) {
                double x;
                if (read_num(f, &x)) return 2;
                gates[i] = (float)x;
            }
            if (ee_decider_set_gates(&d, gates) != EE_OK) return 2;
        }
        if (ee_decider_set_policy(&d, (ee_policy)(int)pc, t, n_exits) != EE_OK) {
            printf("case %d: policy %d rejected\n", c, (int)pc);
            bad_cases++;
            continue;
        }
        size_t wrong_exit = 0, wrong_class = 0, wrong_conf = 0;
        for (size_t i = 0; i < n; i++) {
            double want_exit, want_class, want_conf;
            if (read_num(f, &want_exit) || read_num(f, &want_class) || read_num(f, &want_conf)) return 2;
            ee_decide_state st = ee_decide_start();
            int32_t pred = -1, exit_idx = -1;
            float conf = 0.0f;
            for (int k = 0; k < n_exits; k++) { /* the run loop of ee_session.c, without models */
                void *slot = ee_decider_logits(&d, k);
                const float *src = logits + i * per + (size_t)k * (size_t)n_classes;
                for (int j = 0; j < n_classes; j++) {
                    if (fmt[k].dtype == EE_DTYPE_INT8) ((int8_t *)slot)[j] = (int8_t)src[j];
                    else ((float *)slot)[j] = src[j];
                }
                bool ready;
                bool fire = ee_decide(&d, k, &st, &pred, &conf, &ready);
                exit_idx = k;
                if (fire || k == n_exits - 1) break;
            }
            wrong_exit += exit_idx != (int)want_exit;
            wrong_class += pred != (int)want_class;
            wrong_conf += fabs((double)conf - want_conf) > 2e-6;
        }
        printf("case %d: policy %d, %zu samples: exit %zu wrong, class %zu wrong, confidence %zu off\n", c, (int)pc,
               n, wrong_exit, wrong_class, wrong_conf);
        bad_cases += wrong_exit + wrong_class + wrong_conf > 0;
    }
    ee_decider_free(&d);
    free(logits);
    fclose(f);
    return bad_cases == 0 ? 0 : 1;
}
