/*
 * ee_profile -- per-exit latency, memory and energy samples of a bundle, measured on the
 * device itself (built per bundle, like ee_run; `eecompile profile` deploys and drives it).
 *
 *   ee_profile BUNDLE_DIR INPUTS.npy[,INPUT2.npy...] [--litert PATH] [--threads N] [--cores HEXMASK]
 *              [--runs R] [--warmup W] [--min-secs S] [--max-secs S]
 *              [--energy-secs S] [--sample FILE]... [--sample-ms MS] [--trace-ms MS]
 *
 * Phases, each printed as one JSON line on stdout as soon as it is done (so a run cut short,
 * e.g. a phone unplugged, still leaves what was measured):
 *   start    the device-side facts (LiteRT version, threads, cores, VmHWM)
 *   load     session creation: dlopen, reading and checking the model file, compiling (cold)
 *   first    the first inference through every stage (cold caches)
 *   latency  for every exit k, inferences forced to stop at k (max_exit = k, every exit head
 *            on the way evaluated, as in deployment); exits interleaved round-robin so machine
 *            drift hits them alike; rounds until --runs and --min-secs are both reached, or
 *            --max-secs. Statistics (n, mean, std, min, p10, p50, p90, p99, max, ns) of the
 *            whole inference, of each stage and of the exit decisions.
 *   trace    with --sample files: what they read every --trace-ms during the latency phase
 *            (cpufreq, thermal zones: a throttled run shows there)
 *   energy   with --energy-secs: an idle block (sleeping), then one block per exit running
 *            continuously, then idle again; a sampler thread reads every --sample file (RAPL
 *            counters, battery current/voltage, power rails, cpufreq, thermal) every --sample-ms.
 *            The raw text is reported; eecompile turns it into energy (it knows the formats).
 *   done     the end (a missing "done" line means the run was cut short)
 * Progress goes to stderr ("progress PHASE i/n"). Exit status: 0, 1 on an error, 2 on usage.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ee.h"
#include "ee_args.h"
#include "ee_bundle_gen.h"

#define EE_PROF_MAX_SAMPLE_FILES 16
#define EE_PROF_SAMPLE_BYTES 192

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* VmHWM of this process in kB from /proc/self/status (-1 where unreadable). */
static long vm_hwm_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if (*c < 0x20 || *c == 0x7f) printf("\\u%04x", *c);
        else putchar(*c);
    }
    putchar('"');
}

/* ---- statistics ------------------------------------------------------------------------ */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Linear interpolation between closest ranks, as numpy's default percentile. */
static double pct(const int64_t *sorted, size_t n, double q) {
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos;
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    double frac = pos - (double)lo;
    return (double)sorted[lo] + frac * (double)(sorted[hi] - sorted[lo]);
}

static void print_stats(const int64_t *v, size_t n, int64_t *scratch) {
    if (n == 0) {
        printf("{\"n\": 0}");
        return;
    }
    memcpy(scratch, v, n * sizeof *v);
    qsort(scratch, n, sizeof *scratch, cmp_i64);
    double mean = 0.0, var = 0.0;
    for (size_t i = 0; i < n; i++) mean += (double)v[i];
    mean /= (double)n;
    for (size_t i = 0; i < n; i++) var += ((double)v[i] - mean) * ((double)v[i] - mean);
    double sd = n > 1 ? sqrt(var / (double)(n - 1)) : 0.0;
    /* the mean of the central 98% (1% cut at each end): a mean that one interrupt cannot move */
    size_t cut = n / 100, m = n - 2 * cut;
    double tmean = 0.0;
    for (size_t i = cut; i < n - cut; i++) tmean += (double)scratch[i];
    tmean /= (double)(m ? m : 1);
    printf("{\"n\": %zu, \"mean\": %.1f, \"tmean\": %.1f, \"std\": %.1f, \"min\": %lld, \"p10\": %.1f, "
           "\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"max\": %lld}",
           n, mean, tmean, sd, (long long)scratch[0], pct(scratch, n, 0.10), pct(scratch, n, 0.50),
           pct(scratch, n, 0.90), pct(scratch, n, 0.99), (long long)scratch[n - 1]);
}

/* ---- arguments --------------------------------------------------------------------------- */

typedef struct {
    ee_session_params params;
    const char *inputs_path;
    unsigned long cores;
    long runs, warmup;
    double min_secs, max_secs, energy_secs, sample_ms, trace_ms;
    const char *sample_files[EE_PROF_MAX_SAMPLE_FILES];
    int n_sample_files;
} prof_args;

static int usage(const char *msg, const char *arg) {
    if (msg != NULL) fprintf(stderr, "ee_profile: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "usage: ee_profile BUNDLE_DIR INPUTS.npy[,INPUT2.npy...] [--litert PATH] [--threads N] [--cores HEXMASK]\n"
                    "                  [--runs R] [--warmup W] [--min-secs S] [--max-secs S]\n"
                    "                  [--energy-secs S] [--sample FILE]... [--sample-ms MS] [--trace-ms MS]\n");
    return 2;
}

static int parse_args(int argc, char **argv, prof_args *a) {
    a->params = ee_session_default_params();
    a->params.bundle_dir = argv[1];
    a->params.allow_stale_decision = true; /* the models are measured, whatever rule decides the exits */
    a->inputs_path = argv[2];
    a->runs = 100;
    a->warmup = 10;
    a->min_secs = 1.0;
    a->max_secs = 60.0;
    a->sample_ms = 20.0;
    a->trace_ms = 250.0;
    for (int i = 3; i < argc; i += 2) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        double d;
        if (v == NULL) return usage("missing value after", o);
        if (strcmp(o, "--litert") == 0) {
            a->params.litert_path = v;
        } else if (strcmp(o, "--threads") == 0) {
            if (ee_parse_long(v, 1, 64, &n) != 0) return usage("--threads takes 1..64", v);
            a->params.n_threads = (int32_t)n;
        } else if (strcmp(o, "--cores") == 0) {
            char *end = NULL;
            a->cores = strtoul(v, &end, 16);
            if (end == v || *end != '\0' || a->cores == 0) return usage("--cores takes a non-zero hex mask", v);
        } else if (strcmp(o, "--runs") == 0 || strcmp(o, "--warmup") == 0) {
            if (ee_parse_long(v, strcmp(o, "--runs") == 0 ? 1 : 0, 10000000, &n) != 0)
                return usage("--runs takes >= 1 and --warmup >= 0", v);
            if (strcmp(o, "--runs") == 0) a->runs = n;
            else a->warmup = n;
        } else if (strcmp(o, "--min-secs") == 0 || strcmp(o, "--max-secs") == 0 ||
                   strcmp(o, "--energy-secs") == 0 || strcmp(o, "--sample-ms") == 0 ||
                   strcmp(o, "--trace-ms") == 0) {
            if (ee_parse_double(v, &d) != 0 || d < 0 || d > 86400) return usage("a duration in 0..86400", v);
            if (strcmp(o, "--min-secs") == 0) a->min_secs = d;
            else if (strcmp(o, "--max-secs") == 0) a->max_secs = d;
            else if (strcmp(o, "--energy-secs") == 0) a->energy_secs = d;
            else if (d < 1) return usage("--sample-ms and --trace-ms take >= 1", v);
            else if (strcmp(o, "--sample-ms") == 0) a->sample_ms = d;
            else a->trace_ms = d;
        } else if (strcmp(o, "--sample") == 0) {
            if (a->n_sample_files == EE_PROF_MAX_SAMPLE_FILES) return usage("too many --sample files", v);
            a->sample_files[a->n_sample_files++] = v;
        } else {
            return usage("unknown option", o);
        }
    }
    if (a->max_secs < a->min_secs) return usage("--max-secs is below --min-secs", NULL);
    return -1;
}

/* ---- inputs ------------------------------------------------------------------------------ */

static int load_inputs(const char *path, ee_inputs *in) {
    if (ee_inputs_load(in, path, &EE_BUNDLE.stages[0].graphs[0], false) != 0) {
        fprintf(stderr, "ee_profile: %s\n", in->error);
        return -1;
    }
    return 0;
}

static ee_status run_one(ee_session *s, const ee_inputs *in, size_t i, int32_t max_exit, ee_result *r) {
    ee_run_options o = ee_run_default_options();
    o.max_exit = max_exit;
    o.no_early_exit = true; /* the cost of reaching exit max_exit, every head on the way evaluated */
    return ee_inputs_run(s, in, i, &o, r);
}

/* ---- the sampler thread ------------------------------------------------------------------ */

/* Reads every --sample file every period_ms while a phase runs, from its own thread, so the
 * inferences are not interrupted: energy counters and battery gauges in the energy blocks,
 * cpufreq and thermal zones during the latency phase (to tell a throttled run). */
typedef struct {
    const prof_args *a;
    double period_ms;
    int64_t t0;
    volatile int stop;
    size_t n, cap;
    int64_t *t;
    char *text; /* cap x n_files x EE_PROF_SAMPLE_BYTES */
    pthread_t th;
} sampler;

static void sample_once(sampler *sp) {
    if (sp->n == sp->cap) return;
    sp->t[sp->n] = now_ns() - sp->t0;
    for (int j = 0; j < sp->a->n_sample_files; j++) {
        char *dst = sp->text + (sp->n * (size_t)sp->a->n_sample_files + (size_t)j) * EE_PROF_SAMPLE_BYTES;
        dst[0] = '\0';
        FILE *f = fopen(sp->a->sample_files[j], "r");
        if (f == NULL) continue;
        size_t got = fread(dst, 1, EE_PROF_SAMPLE_BYTES - 1, f);
        dst[got] = '\0';
        fclose(f);
    }
    sp->n++;
}

static void *sampler_main(void *arg) {
    sampler *sp = arg;
    int64_t period = (int64_t)(sp->period_ms * 1e6);
    int64_t next = now_ns();
    while (!sp->stop) {
        sample_once(sp);
        next += period;
        for (;;) { /* sleep until the next period, waking every 20 ms to see a stop */
            int64_t wait = next - now_ns();
            if (sp->stop || wait <= 0) break;
            sleep_ns(wait < 20000000LL ? wait : 20000000LL);
        }
    }
    sample_once(sp); /* the phase's end */
    return NULL;
}

/* Start sampling for a phase of about `secs` (the buffer holds that many periods, plus slack). */
static int sampler_start(sampler *sp, const prof_args *a, double period_ms, double secs) {
    memset(sp, 0, sizeof *sp);
    sp->a = a;
    sp->period_ms = period_ms;
    sp->cap = (size_t)(secs * 1000.0 / period_ms) + 16;
    sp->t = malloc(sp->cap * sizeof *sp->t);
    sp->text = malloc(sp->cap * (size_t)(a->n_sample_files > 0 ? a->n_sample_files : 1) * EE_PROF_SAMPLE_BYTES);
    sp->t0 = now_ns();
    if (sp->t == NULL || sp->text == NULL || pthread_create(&sp->th, NULL, sampler_main, sp) != 0) {
        free(sp->t);
        free(sp->text);
        return -1;
    }
    return 0;
}

static void sampler_stop(sampler *sp) {
    sp->stop = 1;
    pthread_join(sp->th, NULL);
}

static void sampler_free(sampler *sp) {
    free(sp->t);
    free(sp->text);
}

static void print_samples(const sampler *sp) {
    printf("\"samples\": [");
    for (size_t i = 0; i < sp->n; i++) {
        printf("%s[%lld", i ? ", " : "", (long long)sp->t[i]);
        for (int j = 0; j < sp->a->n_sample_files; j++) {
            putchar(',');
            json_str(sp->text + (i * (size_t)sp->a->n_sample_files + (size_t)j) * EE_PROF_SAMPLE_BYTES);
        }
        putchar(']');
    }
    printf("]");
}

/* One energy block: the exit's inferences (or sleep for exit -1) for --energy-secs, sampled. */
static int energy_block(ee_session *s, const ee_inputs *in, const prof_args *a, int32_t exit_idx,
                        const char *kind) {
    sampler sp;
    if (sampler_start(&sp, a, a->sample_ms, a->energy_secs) != 0) return -1;
    int64_t end = sp.t0 + (int64_t)(a->energy_secs * 1e9);
    long n_runs = 0;
    int rc = 0;
    if (exit_idx < 0) {
        sleep_ns(end - now_ns());
    } else {
        ee_result r;
        while (now_ns() < end) {
            if (run_one(s, in, (size_t)n_runs, exit_idx, &r) != EE_OK) {
                rc = -1;
                break;
            }
            n_runs++;
        }
    }
    int64_t duration = now_ns() - sp.t0;
    sampler_stop(&sp);
    if (rc == 0) {
        printf("{\"phase\": \"energy\", \"kind\": \"%s\", \"exit\": %d, \"duration_ns\": %lld, \"n_runs\": %ld, ",
               kind, exit_idx, (long long)duration, n_runs);
        print_samples(&sp);
        printf("}\n");
        fflush(stdout);
    }
    sampler_free(&sp);
    return rc;
}

/* ---- phases ------------------------------------------------------------------------------ */

typedef struct {
    int64_t *total;    /* [round][exit] */
    int64_t *stage;    /* [round][exit][stage] */
    int64_t *decision; /* [round][exit]: the sum of the decisions on the way */
    int64_t *trunk;    /* [round][stage]: the full path with every early exit dropped (trunk graphs) */
    size_t cap, n;
    bool has_trunks;
} latency_buf;

/* "progress PHASE i/n" on stderr, at most 5 lines a second (force: the phase's last line). */
static void progress(const char *phase, size_t i, size_t n, int64_t *last, bool force) {
    int64_t t = now_ns();
    if (!force && t - *last < 200000000LL) return;
    *last = t;
    fprintf(stderr, "progress %s %zu/%zu\n", phase, i, n > i ? n : i);
}

/* Grow the round-major buffers (growing keeps the rounds already measured). */
static int latency_grow(latency_buf *b, int32_t k_exits, size_t min_cap) {
    size_t cap = b->cap ? 2 * b->cap : min_cap;
    int64_t *tot = realloc(b->total, cap * (size_t)k_exits * sizeof(int64_t));
    if (tot != NULL) b->total = tot;
    int64_t *st = realloc(b->stage, cap * (size_t)(k_exits * k_exits) * sizeof(int64_t));
    if (st != NULL) b->stage = st;
    int64_t *de = realloc(b->decision, cap * (size_t)k_exits * sizeof(int64_t));
    if (de != NULL) b->decision = de;
    int64_t *tr = realloc(b->trunk, cap * (size_t)(k_exits + 1) * sizeof(int64_t));
    if (tr != NULL) b->trunk = tr;
    if (tot == NULL || st == NULL || de == NULL || tr == NULL) return -1;
    b->cap = cap;
    return 0;
}

/* One round: every exit once, the order rotated each round; with trunks, also the full path
 * with every early exit dropped (each stage's segment alone: what a dropped exit's stage costs). */
static int latency_round(ee_session *s, const ee_inputs *in, latency_buf *b, int32_t k_exits) {
    ee_result r;
    if (b->has_trunks) {
        bool none[EE_MAX_STAGES], all[EE_MAX_STAGES];
        for (int32_t k = 0; k < k_exits; k++) none[k] = false, all[k] = true;
        ee_session_set_kept(s, none, k_exits);
        ee_status st = run_one(s, in, b->n, k_exits - 1, &r);
        ee_session_set_kept(s, all, k_exits);
        if (st != EE_OK) return -1;
        for (int32_t k = 0; k < k_exits; k++) b->trunk[b->n * (size_t)(k_exits + 1) + (size_t)k] = r.t_stage_ns[k];
        b->trunk[b->n * (size_t)(k_exits + 1) + (size_t)k_exits] = r.t_total_ns;
    }
    for (int32_t j = 0; j < k_exits; j++) {
        int32_t k = (int32_t)((b->n + (size_t)j) % (size_t)k_exits);
        if (run_one(s, in, b->n * (size_t)k_exits + (size_t)j, k, &r) != EE_OK) return -1;
        int64_t dec = 0;
        for (int32_t st = 0; st <= k; st++) {
            b->stage[b->n * (size_t)(k_exits * k_exits) + (size_t)(k * k_exits + st)] = r.t_stage_ns[st];
            dec += r.t_decision_ns[st];
        }
        b->total[b->n * (size_t)k_exits + (size_t)k] = r.t_total_ns;
        b->decision[b->n * (size_t)k_exits + (size_t)k] = dec;
    }
    b->n++;
    return 0;
}

static void print_latency(const latency_buf *b, int32_t k_exits, const prof_args *a, int64_t elapsed,
                          int64_t *col, int64_t *scratch) {
    printf("{\"phase\": \"latency\", \"rounds\": %zu, \"warmup\": %ld, \"elapsed_ns\": %lld, \"vm_hwm_kb\": %ld, "
           "\"exits\": [", b->n, a->warmup, (long long)elapsed, vm_hwm_kb());
    for (int32_t k = 0; k < k_exits; k++) {
        printf("%s{\"exit\": %d, \"total\": ", k ? ", " : "", k);
        for (size_t i = 0; i < b->n; i++) col[i] = b->total[i * (size_t)k_exits + (size_t)k];
        print_stats(col, b->n, scratch);
        printf(", \"decision\": ");
        for (size_t i = 0; i < b->n; i++) col[i] = b->decision[i * (size_t)k_exits + (size_t)k];
        print_stats(col, b->n, scratch);
        printf(", \"stages\": [");
        for (int32_t st = 0; st <= k; st++) {
            for (size_t i = 0; i < b->n; i++)
                col[i] = b->stage[i * (size_t)(k_exits * k_exits) + (size_t)(k * k_exits + st)];
            if (st) printf(", ");
            print_stats(col, b->n, scratch);
        }
        printf("]}");
    }
    printf("]");
    if (b->has_trunks) { /* the stages with their exit dropped: stage s's segment alone */
        printf(", \"trunk\": {\"total\": ");
        for (size_t i = 0; i < b->n; i++) col[i] = b->trunk[i * (size_t)(k_exits + 1) + (size_t)k_exits];
        print_stats(col, b->n, scratch);
        printf(", \"stages\": [");
        for (int32_t st = 0; st < k_exits; st++) {
            for (size_t i = 0; i < b->n; i++) col[i] = b->trunk[i * (size_t)(k_exits + 1) + (size_t)st];
            if (st) printf(", ");
            print_stats(col, b->n, scratch);
        }
        printf("]}");
    }
    printf("}\n");
}

static int latency_phase(ee_session *s, const ee_inputs *in, const prof_args *a) {
    int32_t k_exits = EE_BUNDLE.n_stages;
    int64_t last_progress = 0;
    ee_result r;
    for (long w = 0; w < a->warmup; w++)
        for (int32_t k = 0; k < k_exits; k++)
            if (run_one(s, in, (size_t)(w * k_exits + k), k, &r) != EE_OK) return -1;
    /* rounds: at least --runs and --min-secs, at most --max-secs */
    latency_buf b = {NULL, NULL, NULL, NULL, 0, 0, false};
    for (int32_t k = 0; k + 1 < k_exits; k++) b.has_trunks |= EE_BUNDLE.stages[k].trunk != NULL;
    sampler trace;
    bool tracing = a->n_sample_files > 0 && sampler_start(&trace, a, a->trace_ms, a->max_secs) == 0;
    int rc = 0;
    int64_t t0 = now_ns(), min_ns = (int64_t)(a->min_secs * 1e9), max_ns = (int64_t)(a->max_secs * 1e9);
    for (;;) {
        int64_t el = now_ns() - t0;
        if ((b.n >= (size_t)a->runs && el >= min_ns) || (el >= max_ns && b.n > 0)) break;
        if ((b.n == b.cap && latency_grow(&b, k_exits, (size_t)a->runs) != 0) ||
            latency_round(s, in, &b, k_exits) != 0) {
            rc = -1;
            break;
        }
        progress("latency", b.n, (size_t)a->runs, &last_progress, false);
    }
    int64_t elapsed = now_ns() - t0;
    if (tracing) sampler_stop(&trace);
    int64_t *col = NULL, *scratch = NULL;
    if (rc == 0) {
        progress("latency", b.n, b.n, &last_progress, true);
        col = malloc(b.n * sizeof *col);
        scratch = malloc(b.n * sizeof *scratch);
        rc = col != NULL && scratch != NULL ? 0 : -1;
    }
    if (rc == 0) {
        print_latency(&b, k_exits, a, elapsed, col, scratch);
        if (tracing) {
            printf("{\"phase\": \"trace\", \"kind\": \"latency\", \"duration_ns\": %lld, ", (long long)elapsed);
            print_samples(&trace);
            printf("}\n");
        }
        fflush(stdout);
    }
    if (tracing) sampler_free(&trace);
    free(col);
    free(scratch);
    free(b.total);
    free(b.stage);
    free(b.decision);
    free(b.trunk);
    return rc;
}

static int set_cores(unsigned long mask) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c = 0; c < (int)(8 * sizeof mask); c++)
        if (mask & (1UL << c)) CPU_SET(c, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

int main(int argc, char **argv) {
    if (argc < 3) return usage(argc == 2 ? "missing INPUTS" : NULL, NULL);
    prof_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    rc = 0;
    if (a.cores != 0 && set_cores(a.cores) != 0) {
        fprintf(stderr, "ee_profile: --cores 0x%lx: no such cores on this device\n", a.cores);
        return 1;
    }
    ee_inputs in;
    if (load_inputs(a.inputs_path, &in) != 0) return 1;
    printf("{\"phase\": \"start\", \"bundle\": ");
    json_str(EE_BUNDLE.name);
    printf(", \"target\": ");
    json_str(EE_BUNDLE.target);
    printf(", \"abi_version\": %u, \"litert_version\": \"%s\", \"n_stages\": %d, \"threads\": %d, \"cores\": \"0x%lx\", "
           "\"inputs\": %zu, \"vm_hwm_kb\": %ld}\n", (unsigned)EE_BUNDLE.abi_version, EE_LITERT_VERSION,
           EE_BUNDLE.n_stages, a.params.n_threads, a.cores, in.n_samples, vm_hwm_kb());
    fflush(stdout);
    ee_session *s = NULL;
    int64_t t0 = now_ns();
    ee_status st = ee_session_create(&EE_BUNDLE, &a.params, &s);
    int64_t t_load = now_ns() - t0;
    if (st != EE_OK) {
        fprintf(stderr, "ee_profile: cannot create session: %s\n", ee_status_str(st));
        ee_inputs_free(&in);
        return 1;
    }
    bool all[EE_MAX_STAGES];
    for (int32_t k = 0; k < EE_BUNDLE.n_stages; k++) all[k] = true;
    ee_session_set_kept(s, all, EE_BUNDLE.n_stages); /* every exit measured, whatever the bundle drops */
    printf("{\"phase\": \"load\", \"t_load_ns\": %lld, \"vm_hwm_kb\": %ld}\n", (long long)t_load, vm_hwm_kb());
    fflush(stdout);
    ee_result r;
    st = run_one(s, &in, 0, EE_BUNDLE.n_stages - 1, &r);
    if (st == EE_OK) {
        printf("{\"phase\": \"first\", \"t_first_ns\": %lld, \"stage_ns\": [", (long long)r.t_total_ns);
        for (int32_t k = 0; k < r.n_stages_run; k++) printf("%s%lld", k ? ", " : "", (long long)r.t_stage_ns[k]);
        printf("], \"vm_hwm_kb\": %ld}\n", vm_hwm_kb());
        fflush(stdout);
    }
    if (st != EE_OK || latency_phase(s, &in, &a) != 0) {
        fprintf(stderr, "ee_profile: a run failed: %s\n", ee_status_str(st == EE_OK ? EE_ERR_BACKEND : st));
        rc = 1;
    }
    if (rc == 0 && a.energy_secs > 0) {
        int64_t last = 0;
        int32_t n_blocks = EE_BUNDLE.n_stages + 2;
        rc = energy_block(s, &in, &a, -1, "idle");
        for (int32_t k = 0; rc == 0 && k < EE_BUNDLE.n_stages; k++) {
            progress("energy", (size_t)(k + 1), (size_t)n_blocks, &last, true);
            rc = energy_block(s, &in, &a, k, "exit");
        }
        if (rc == 0) rc = energy_block(s, &in, &a, -1, "idle");
        progress("energy", (size_t)n_blocks, (size_t)n_blocks, &last, true);
        if (rc != 0) fprintf(stderr, "ee_profile: the energy phase failed\n");
    }
    if (rc == 0) printf("{\"phase\": \"done\", \"vm_hwm_kb\": %ld}\n", vm_hwm_kb());
    ee_session_free(s);
    ee_inputs_free(&in);
    return rc == 0 ? 0 : 1;
}
