/*
 * ee_run -- command-line runner over the harness, built per bundle (links ee_bundle_gen.c).
 *
 *   ee_run BUNDLE_DIR INPUTS [--f32] [--max-exit K] [--deadline-us US] [--policy P] [--thresholds a,b,...]
 *          [--kept 1,0,1,...] [--threads N] [--litert PATH] [--all-exits] [--dump-logits FILE] [--json]
 *          [--quiet] [--allow-stale]
 *
 * INPUTS: a .npy file (float32, quantized by the harness, or int8 already quantized; int32/int64
 * token ids for a model that takes ids; shape (N, *input) in the model's layout, NHWC for
 * images), or raw samples back to back in the
 * model's layout: in its dtype by default, float32 with --f32. A model with several inputs
 * (token ids and an attention mask) takes one file per input, comma-separated in the model's
 * order: ids.npy,mask.npy. Prints per sample: class,
 * exit, confidence and per-stage times; a summary at the end.
 * Exit status: 0 ok, 1 a run or file error, 2 a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee.h"
#include "ee_args.h"
#include "ee_bundle_gen.h"
#include "ee_names.h"

static void print_json_chars(const char *str) {
    for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f) printf("\\u%04x", *c);
        else putchar(*c);
    }
}

static int usage(const char *msg, const char *arg) {
    if (msg != NULL) fprintf(stderr, "ee_run: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr,
            "usage: ee_run BUNDLE_DIR INPUTS(.npy|raw)[,INPUT2.npy...] [--f32] [--max-exit K] [--deadline-us US] [--policy NAME]\n"
            "              [--thresholds a,b,...] [--kept 1,0,1,...] [--threads N] [--litert PATH] [--all-exits]\n"
            "              [--dump-logits FILE] [--json] [--quiet] [--allow-stale]\n"
            "policies:");
    for (int i = 0; i < EE_N_POLICIES; i++) fprintf(stderr, " %s", ee_policy_names[i]);
    fprintf(stderr, "\n");
    return 2;
}

typedef struct {
    ee_session_params params;
    ee_run_options ropts;
    const char *inputs_path;
    const char *dump_path;
    bool f32, json, quiet, policy_set;
    ee_policy policy;
    float thresholds[EE_MAX_STAGES];
    int32_t n_thresholds;
    float kept_f[EE_MAX_STAGES];
    int32_t n_kept;
} ee_run_args;

/* Returns -1 when the arguments are fine, else the exit status of the usage error. */
static int parse_args(int argc, char **argv, ee_run_args *a) {
    a->params = ee_session_default_params();
    a->params.bundle_dir = argv[1];
    a->inputs_path = argv[2];
    a->ropts = ee_run_default_options();
    a->policy = EE_BUNDLE.policy;
    for (int i = 3; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(o, "--f32") == 0) { a->f32 = true; continue; }
        if (strcmp(o, "--json") == 0) { a->json = true; continue; }
        if (strcmp(o, "--quiet") == 0) { a->quiet = true; continue; } /* the summary only: no output between runs */
        if (strcmp(o, "--all-exits") == 0) { a->ropts.no_early_exit = true; continue; }
        if (strcmp(o, "--allow-stale") == 0) { a->params.allow_stale_decision = true; continue; }
        bool known = strcmp(o, "--max-exit") == 0 || strcmp(o, "--threads") == 0 || strcmp(o, "--policy") == 0 ||
                     strcmp(o, "--thresholds") == 0 || strcmp(o, "--litert") == 0 || strcmp(o, "--dump-logits") == 0 ||
                     strcmp(o, "--deadline-us") == 0 || strcmp(o, "--kept") == 0;
        if (!known) return usage("unknown option", o);
        if (v == NULL) return usage("missing value after", o);
        i++;
        long n;
        if (strcmp(o, "--max-exit") == 0) {
            if (ee_parse_long(v, -1, EE_BUNDLE.n_stages - 1, &n) != 0) return usage("--max-exit out of range", v);
            a->ropts.max_exit = (int32_t)n;
        } else if (strcmp(o, "--threads") == 0) {
            if (ee_parse_long(v, 1, 64, &n) != 0) return usage("--threads takes 1..64", v);
            a->params.n_threads = (int32_t)n;
        } else if (strcmp(o, "--policy") == 0) {
            if (ee_parse_policy(v, &a->policy) != 0) return usage("unknown --policy", v);
            a->policy_set = true;
        } else if (strcmp(o, "--thresholds") == 0) {
            a->n_thresholds = ee_parse_floats(v, a->thresholds, EE_MAX_STAGES);
            if (a->n_thresholds <= 0) return usage("--thresholds takes comma-separated numbers", v);
        } else if (strcmp(o, "--deadline-us") == 0) {
            if (ee_parse_long(v, 1, 1000000000L, &n) != 0) return usage("--deadline-us takes a positive integer", v);
            a->ropts.deadline_us = n;
        } else if (strcmp(o, "--kept") == 0) {
            a->n_kept = ee_parse_floats(v, a->kept_f, EE_MAX_STAGES);
            if (a->n_kept != EE_BUNDLE.n_stages) return usage("--kept takes one 0 or 1 per exit", v);
        } else if (strcmp(o, "--litert") == 0) {
            a->params.litert_path = v;
        } else {
            a->dump_path = v;
        }
    }
    return -1;
}

/* --policy/--thresholds: the bundle's thresholds for its own policy, else the policy's default;
 * one value applies to every early exit. */
static ee_status apply_policy(ee_session *s, ee_run_args *a) {
    if (a->n_kept > 0) {
        bool kept[EE_MAX_STAGES];
        for (int32_t k = 0; k < a->n_kept; k++) kept[k] = a->kept_f[k] != 0.0f;
        ee_status es = ee_session_set_kept(s, kept, a->n_kept);
        if (es != EE_OK) return es;
    }
    if (!a->policy_set && a->n_thresholds == 0) return EE_OK;
    if (a->n_thresholds == 0) {
        a->n_thresholds = EE_BUNDLE.n_stages;
        for (int32_t k = 0; k < a->n_thresholds; k++)
            a->thresholds[k] = a->policy == EE_BUNDLE.policy ? EE_BUNDLE.thresholds[k]
                                                             : ee_policy_default_threshold[a->policy];
    } else if (a->n_thresholds == 1) {
        for (int32_t k = 1; k < EE_BUNDLE.n_stages; k++) a->thresholds[k] = a->thresholds[0];
        a->n_thresholds = EE_BUNDLE.n_stages;
    }
    return ee_session_set_policy(s, a->policy, a->thresholds, a->n_thresholds);
}

static void dump_logits(FILE *dump, const ee_result *r) {
    for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) {
        const ee_graph_desc *g = &EE_BUNDLE.stages[k].graphs[EE_BUNDLE.stages[k].n_graphs - 1];
        size_t nb = 0;
        for (int32_t o = 0; o < g->n_outputs; o++)
            if (g->outputs[o].role == EE_ROLE_LOGITS) nb = g->outputs[o].n_bytes;
        if (r->exit_logits[k] != NULL) {
            fwrite(r->exit_logits[k], 1, nb, dump);
        } else {
            for (size_t z = 0; z < nb; z++) fputc(0, dump);
        }
    }
}

static void print_sample(size_t i, const ee_result *r, bool json) {
    if (!json) {
        printf("sample %zu: class %d (%s) exit %d confidence %.4f stages_us", i, r->class_idx,
               EE_BUNDLE.class_names[r->class_idx], r->exit_idx, r->confidence);
        for (int32_t k = 0; k < r->n_stages_run; k++) printf(" %.1f", (double)r->t_stage_ns[k] / 1e3);
        printf("\n");
        return;
    }
    printf("%s\n {\"sample\": %zu, \"class_idx\": %d, \"class\": \"", i ? "," : "", i, r->class_idx);
    print_json_chars(EE_BUNDLE.class_names[r->class_idx]);
    printf("\", \"exit_idx\": %d, \"confidence\": %.6f, \"t_stage_us\": [", r->exit_idx, r->confidence);
    for (int32_t k = 0; k < r->n_stages_run; k++) printf("%s%.3f", k ? ", " : "", (double)r->t_stage_ns[k] / 1e3);
    printf("], \"t_decision_ns\": [");
    for (int32_t k = 0; k < r->n_stages_run; k++) printf("%s%lld", k ? ", " : "", (long long)r->t_decision_ns[k]);
    printf("]}");
}

int main(int argc, char **argv) {
    if (argc < 3) return usage(argc == 2 ? "missing INPUTS" : NULL, NULL);
    ee_run_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    const ee_graph_desc *g0 = &EE_BUNDLE.stages[0].graphs[0];
    ee_inputs in;
    if (ee_inputs_load(&in, a.inputs_path, g0, a.f32) != 0) {
        fprintf(stderr, "ee_run: %s\n", in.error);
        return 1;
    }
    if (!in.npy && !in.f32 && in.n_inputs == 1 && g0->inputs[0].dtype == EE_DTYPE_INT8 && in.n_samples % 4 == 0)
        fprintf(stderr, "ee_run: note: read %s as %zu raw int8 samples; if it holds float32 data, pass --f32 "
                "(a .npy file says its dtype)\n", a.inputs_path, in.n_samples);
    ee_session *s = NULL;
    ee_status st = ee_session_create(&EE_BUNDLE, &a.params, &s);
    if (st != EE_OK) {
        fprintf(stderr, "ee_run: cannot create session: %s%s\n", ee_status_str(st),
                st == EE_ERR_STALE ? " (regenerate the harness, or pass --allow-stale to run the old rule)" : "");
        ee_inputs_free(&in);
        return 1;
    }
    st = apply_policy(s, &a);
    if (st != EE_OK) {
        fprintf(stderr, "ee_run: thresholds rejected (%s): each must lie in [%g, %g] for %s\n", ee_status_str(st),
                (double)ee_policy_threshold_lo[a.policy], (double)ee_policy_threshold_hi[a.policy],
                ee_policy_names[a.policy]);
        ee_session_free(s);
        ee_inputs_free(&in);
        return 1;
    }
    FILE *dump = NULL;
    if (a.dump_path != NULL && (dump = fopen(a.dump_path, "wb")) == NULL) {
        fprintf(stderr, "ee_run: cannot write %s\n", a.dump_path);
        ee_inputs_free(&in);
        ee_session_free(s);
        return 1;
    }
    long exit_counts[EE_MAX_STAGES] = {0};
    double total_ns = 0.0;
    rc = 0;
    if (a.json) printf("{\"samples\": [");
    size_t done = 0;
    for (size_t i = 0; i < in.n_samples; i++) {
        ee_result r;
        st = ee_inputs_run(s, &in, i, &a.ropts, &r);
        if (st != EE_OK) {
            fprintf(stderr, "ee_run: sample %zu: %s\n", i, ee_status_str(st));
            rc = 1;
            break;
        }
        exit_counts[r.exit_idx]++;
        total_ns += (double)r.t_total_ns;
        done++;
        if (dump != NULL) dump_logits(dump, &r);
        if (!a.quiet) print_sample(i, &r, a.json);
    }
    if (a.json) {
        printf("\n], \"summary\": {\"n\": %zu, \"input\": \"%s %s\", \"mean_total_us\": %.3f, \"exit_counts\": [", done,
               in.npy ? "npy" : "raw", in.f32 ? "float32" : ee_dtype_name(g0->inputs[0].dtype),
               done ? total_ns / (double)done / 1e3 : 0.0);
        for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) printf("%s%ld", k ? ", " : "", exit_counts[k]);
        printf("]}}\n");
    } else {
        printf("%zu samples, mean %.1f us; exits:", done, done ? total_ns / (double)done / 1e3 : 0.0);
        for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) printf(" %ld", exit_counts[k]);
        printf("\n");
    }
    if (dump != NULL) fclose(dump);
    ee_inputs_free(&in);
    ee_session_free(s);
    return rc;
}
