/*
 * ee_run -- command-line runner over the harness, built per bundle (links ee_bundle_gen.c).
 *
 *   ee_run BUNDLE_DIR INPUTS.bin [--f32] [--max-exit K] [--policy P] [--thresholds a,b,...]
 *          [--threads N] [--litert PATH] [--all-exits] [--dump-logits FILE] [--json]
 *
 * INPUTS.bin holds samples back to back in the model's input layout (NHWC): raw int8
 * (already quantized) by default, float32 with --f32. Prints per sample: class, exit,
 * confidence and per-stage times; a summary at the end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee.h"
#include "ee_args.h"
#include "ee_bundle_gen.h"

static void print_json_chars(const char *str) {
    for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if (*c < 0x20) printf("\\u%04x", *c);
        else putchar(*c);
    }
}

static int usage(const char *msg) {
    if (msg != NULL) fprintf(stderr, "ee_run: %s\n", msg);
    fprintf(stderr,
            "usage: ee_run BUNDLE_DIR INPUTS.bin [--f32] [--max-exit K] [--policy max-prob|entropy|margin|patience]\n"
            "              [--thresholds a,b,...] [--threads N] [--litert PATH] [--all-exits]\n"
            "              [--dump-logits FILE] [--json]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage(NULL);
    ee_session_params params = ee_session_default_params();
    params.bundle_dir = argv[1];
    const char *inputs_path = argv[2];
    ee_run_options ropts = ee_run_default_options();
    bool f32 = false, json = false, policy_set = false;
    const char *dump_path = NULL;
    ee_policy policy = EE_BUNDLE.policy;
    float thresholds[EE_MAX_STAGES];
    int32_t n_thresholds = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--f32") == 0) f32 = true;
        else if (strcmp(a, "--json") == 0) json = true;
        else if (strcmp(a, "--all-exits") == 0) ropts.no_early_exit = true;
        else if (v == NULL) return usage("missing value after an option");
        else if (strcmp(a, "--max-exit") == 0) {
            long k;
            if (ee_parse_long(v, -1, EE_BUNDLE.n_stages - 1, &k) != 0) return usage("--max-exit out of range");
            ropts.max_exit = (int32_t)k;
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            long n;
            if (ee_parse_long(v, 1, 64, &n) != 0) return usage("--threads takes 1..64");
            params.n_threads = (int32_t)n;
            i++;
        } else if (strcmp(a, "--policy") == 0) {
            if (ee_parse_policy(v, &policy) != 0) return usage("unknown --policy");
            policy_set = true;
            i++;
        } else if (strcmp(a, "--thresholds") == 0) {
            n_thresholds = ee_parse_floats(v, thresholds, EE_MAX_STAGES);
            if (n_thresholds <= 0) return usage("--thresholds takes comma-separated numbers");
            i++;
        } else if (strcmp(a, "--litert") == 0) {
            params.litert_path = v;
            i++;
        } else if (strcmp(a, "--dump-logits") == 0) {
            dump_path = v;
            i++;
        } else {
            return usage("unknown option");
        }
    }

    ee_session *s = NULL;
    ee_status st = ee_session_create(&EE_BUNDLE, &params, &s);
    if (st != EE_OK) {
        fprintf(stderr, "ee_run: cannot create session: %s\n", ee_status_str(st));
        return 1;
    }
    if (policy_set || n_thresholds > 0) {
        if (n_thresholds == 0) {
            /* the bundle's thresholds for its own policy, else the Python runtime's defaults */
            static const float defaults[] = {0.9f, 0.2f, 0.8f, 2.0f};
            n_thresholds = EE_BUNDLE.n_stages;
            for (int32_t k = 0; k < n_thresholds; k++)
                thresholds[k] = policy == EE_BUNDLE.policy ? EE_BUNDLE.thresholds[k] : defaults[policy];
        } else if (n_thresholds == 1) {
            for (int32_t k = 1; k < EE_BUNDLE.n_stages; k++) thresholds[k] = thresholds[0];
            n_thresholds = EE_BUNDLE.n_stages;
        }
        st = ee_session_set_policy(s, policy, thresholds, n_thresholds);
        if (st != EE_OK) {
            fprintf(stderr, "ee_run: thresholds rejected: %s\n", ee_status_str(st));
            ee_session_free(s);
            return 1;
        }
    }
    size_t in_bytes = ee_session_input_bytes(s);
    size_t sample_bytes = f32 ? in_bytes * (EE_BUNDLE.stages[0].graphs[0].inputs[0].dtype == EE_DTYPE_INT8 ? 4 : 1)
                              : in_bytes;
    ee_input_file in;
    if (ee_input_file_open(&in, inputs_path, sample_bytes) != 0) {
        fprintf(stderr, "ee_run: %s: %s\n", inputs_path, in.error);
        ee_session_free(s);
        return 1;
    }
    FILE *dump = NULL;
    if (dump_path != NULL && (dump = fopen(dump_path, "wb")) == NULL) {
        fprintf(stderr, "ee_run: cannot write %s: %s\n", dump_path, strerror(errno));
        ee_input_file_close(&in);
        ee_session_free(s);
        return 1;
    }
    void *buf = malloc(sample_bytes);
    long exit_counts[EE_MAX_STAGES] = {0};
    double total_us = 0.0;
    int rc = 0;
    if (json) printf("{\"samples\": [");
    for (size_t i = 0; buf != NULL && i < in.n_samples; i++) {
        if (ee_input_file_read(&in, buf) != 0) {
            fprintf(stderr, "ee_run: short read at sample %zu\n", i);
            rc = 1;
            break;
        }
        ee_result r;
        st = f32 ? ee_session_run_f32(s, buf, sample_bytes / sizeof(float), &ropts, &r)
                 : ee_session_run_raw(s, buf, sample_bytes, &ropts, &r);
        if (st != EE_OK) {
            fprintf(stderr, "ee_run: sample %zu: %s\n", i, ee_status_str(st));
            rc = 1;
            break;
        }
        exit_counts[r.exit_idx]++;
        total_us += (double)r.t_total_us;
        if (dump != NULL) {
            for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) {
                const ee_graph_desc *g = &EE_BUNDLE.stages[k].graphs[EE_BUNDLE.stages[k].n_graphs - 1];
                size_t nb = 0;
                for (int32_t o = 0; o < g->n_outputs; o++)
                    if (g->outputs[o].role == EE_ROLE_LOGITS) nb = g->outputs[o].n_bytes;
                if (r.exit_logits[k] != NULL) {
                    fwrite(r.exit_logits[k], 1, nb, dump);
                } else {
                    for (size_t z = 0; z < nb; z++) fputc(0, dump);
                }
            }
        }
        if (json) {
            printf("%s\n {\"sample\": %zu, \"class_idx\": %d, \"class\": \"", i ? "," : "", i, r.class_idx);
            print_json_chars(EE_BUNDLE.class_names[r.class_idx]);
            printf("\", \"exit_idx\": %d, \"confidence\": %.6f, \"t_stage_us\": [", r.exit_idx, r.confidence);
            for (int32_t k = 0; k < r.n_stages_run; k++) printf("%s%lld", k ? ", " : "", (long long)r.t_stage_us[k]);
            printf("], \"t_decision_ns\": [");
            for (int32_t k = 0; k < r.n_stages_run; k++)
                printf("%s%lld", k ? ", " : "", (long long)r.t_decision_ns[k]);
            printf("]}");
        } else {
            printf("sample %zu: class %d (%s) exit %d confidence %.4f stages_us", i, r.class_idx,
                   EE_BUNDLE.class_names[r.class_idx], r.exit_idx, r.confidence);
            for (int32_t k = 0; k < r.n_stages_run; k++) printf(" %lld", (long long)r.t_stage_us[k]);
            printf("\n");
        }
    }
    size_t n = in.n_samples;
    if (json) {
        printf("\n], \"summary\": {\"n\": %zu, \"mean_total_us\": %.3f, \"exit_counts\": [", n,
               n ? total_us / (double)n : 0.0);
        for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) printf("%s%ld", k ? ", " : "", exit_counts[k]);
        printf("]}}\n");
    } else {
        printf("%zu samples, mean %.1f us; exits:", n, n ? total_us / (double)n : 0.0);
        for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) printf(" %ld", exit_counts[k]);
        printf("\n");
    }
    if (buf == NULL) rc = 1;
    free(buf);
    if (dump != NULL) fclose(dump);
    ee_input_file_close(&in);
    ee_session_free(s);
    return rc;
}
