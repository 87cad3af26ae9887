/*
 * ee.h -- the eecompile early-exit harness: run an exported bundle stage by stage on the
 * LiteRT C API and stop at the first exit whose policy fires.
 *
 * C99, no C++ in this header. Naming: ee_<noun>_<verb>. All handles are opaque.
 *
 * Lifetime and ownership, in one place:
 *   - An ee_bundle_desc is static data generated per bundle by `eecompile harness`
 *     (ee_bundle_gen.c); the harness only reads it and never frees it.
 *   - ee_session_create() loads libLiteRt.so (dlopen), the stage models of the bundle and
 *     allocates every buffer. Nothing is allocated in ee_session_run().
 *   - Pointers inside an ee_result (probabilities, exit logits) are owned by the session
 *     and stay valid until the next ee_session_run() or ee_session_free() on it.
 *   - ee_session_free(NULL) is a no-op.
 *   - A session is not thread-safe: use one session per thread.
 */
#ifndef EE_H
#define EE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EE_ABI_VERSION 5         /* bumped when ee_bundle_desc or this API changes (the generator reads it here) */
#define EE_MAX_STAGES 16
#define EE_MAX_GRAPH_IO 8
#define EE_MAX_RANK 8
#define EE_LITERT_VERSION "2.3.0" /* the LiteRT C API version whose prototypes we declare */

typedef enum {
    EE_OK = 0,
    EE_ERR_INVALID_ARG = -1, /* NULL argument, size mismatch, value out of range */
    EE_ERR_IO = -2,          /* a stage file is missing or unreadable */
    EE_ERR_BACKEND = -3,     /* LiteRT failed to load or run a model */
    EE_ERR_VERSION = -4,     /* libLiteRt.so is not the pinned version, or the description's ABI differs */
    EE_ERR_NO_MEMORY = -5,
    EE_ERR_MODEL = -6,       /* a stage model does not match the bundle description (corrupt/other bundle) */
    EE_ERR_NOT_FOUND = -7,   /* libLiteRt.so is missing or cannot be loaded (path, architecture, dependencies) */
    EE_ERR_STALE = -8        /* the bundle's exit decision rule changed since this harness was generated */
} ee_status;

/* A short static description of a status ("invalid argument", ...). Never NULL. */
const char *ee_status_str(ee_status status);

/* FNV-1a 64 of n bytes: the checksum the generator records for every stage file. */
uint64_t ee_fnv1a64(const void *data, size_t n);

/* LiteRT element type codes. INT32/INT64: integer model inputs (token ids), never quantized. */
typedef enum { EE_DTYPE_FLOAT32 = 1, EE_DTYPE_INT32 = 2, EE_DTYPE_INT64 = 4, EE_DTYPE_INT8 = 9 } ee_dtype;

/* Bytes per element of a dtype (0 for an unknown code). */
size_t ee_dtype_size(ee_dtype dtype);

typedef enum {
    EE_POLICY_MAX_PROB = 0, /* fires when max softmax >= t */
    EE_POLICY_ENTROPY = 1,  /* fires when entropy / log(C) <= t */
    EE_POLICY_MARGIN = 2,   /* fires when p1 - p2 >= t */
    EE_POLICY_PATIENCE = 3, /* fires when the top-1 class stayed the same over t consecutive exits (PABEE) */
    EE_POLICY_LEARNED = 4   /* fires when sigmoid(w . (p1, p1 - p2, entropy/log(C), agree) + b) >= t; w, b per
                               exit from the bundle (eecompile calibrate fits them) */
} ee_policy;

#define EE_GATE_SIZE 5 /* the learned gate per exit: 4 weights and a bias */

typedef enum { EE_ROLE_INPUT = 0, EE_ROLE_STATE = 1, EE_ROLE_LOGITS = 2 } ee_role;
typedef enum { EE_GRAPH_FUSED = 0, EE_GRAPH_SEGMENT = 1, EE_GRAPH_HEAD = 2 } ee_graph_kind;

/* ---- bundle description (generated; see eecompile/harness) ---------------------------- */
typedef struct {
    float scale;
    int32_t zero_point;
} ee_quant;

typedef struct {
    const char *signature_name; /* name in the model's signature, e.g. "state_in_0", "output_1" */
    ee_role role;
    ee_dtype dtype;
    int32_t rank;
    int32_t dims[EE_MAX_RANK]; /* exported layout (NHWC for 4-D), batch first */
    size_t n_bytes;
    bool has_quant;
    ee_quant quant;
    bool requant;           /* inputs: requantize from requant_from to quant before feeding */
    ee_quant requant_from;
    bool has_range;         /* integer model inputs: every value must lie in [range_lo, range_hi] (the ids of */
    int64_t range_lo;       /* the model's vocabulary); ee_session_run_raw refuses others (EE_ERR_INVALID_ARG) */
    int64_t range_hi;
    bool passthrough;         /* outputs: this output is input passthrough_input of the same graph, unchanged */
    int32_t passthrough_input; /* (one tensor in the model, e.g. an attention mask): both bind one buffer */
} ee_tensor_desc;

typedef struct {
    const char *file; /* relative to the bundle directory; graphs that name the same file share one
                         compiled model (a packed bundle: every graph a signature of one file) */
    size_t file_bytes;   /* expected size of the file */
    uint64_t file_fnv1a; /* FNV-1a 64 of the file: a corrupt or foreign file is refused before LiteRT sees it */
    const char *signature_key; /* the graph's signature in the file, checked at session creation */
    int32_t signature_index;   /* its index in the file's signature list */
    ee_graph_kind kind;
    int32_t n_inputs;
    int32_t n_outputs;
    const ee_tensor_desc *inputs;
    const ee_tensor_desc *outputs;
} ee_graph_desc;

typedef struct {
    int32_t n_graphs; /* 1 (fused) or 2 (segment, head) */
    const ee_graph_desc *graphs;
    const ee_graph_desc *trunk; /* the segment without its exit head, run when the exit is dropped; NULL: none
                                   (a split-heads stage then runs its segment graph alone) */
} ee_stage_desc;

typedef struct {
    uint32_t abi_version; /* EE_ABI_VERSION of the generator */
    const char *name;
    const char *target; /* "tflite-int8", ... */
    int32_t n_stages;   /* == number of exits */
    int32_t n_classes;
    const ee_stage_desc *stages;
    ee_policy policy;
    const float *thresholds;        /* n_stages entries; the last exit always fires */
    const char *const *class_names; /* n_classes entries */
    const bool *kept;               /* n_stages: false where calibration dropped the exit (its head is not run) */
    const float *gates;             /* EE_POLICY_LEARNED: n_stages x EE_GATE_SIZE; else NULL */
    const float *p99_latency_us;    /* the anytime table: profiled p99 time to complete exit k; NULL: none */
    const char *decision_hash;      /* the bundle's decision.hash when generated ("": not checked) */
} ee_bundle_desc;

/* ---- sessions --------------------------------------------------------------------------- */
typedef struct ee_session ee_session; /* opaque */

typedef enum { EE_LOG_DEBUG = 0, EE_LOG_INFO = 1, EE_LOG_WARN = 2, EE_LOG_ERROR = 3 } ee_log_level;
typedef void (*ee_log_fn)(ee_log_level level, const char *msg, void *user_data);

typedef struct {
    const char *bundle_dir;  /* directory holding the stage files; required */
    const char *litert_path; /* path of libLiteRt.so; NULL: $EE_LITERT_LIB, then the loader's search path */
    int32_t n_threads;       /* XNNPACK threads per model file (a packed bundle has one); default 1 */
    bool check_version;      /* refuse a libLiteRt.so that is not EE_LITERT_VERSION (default true) */
    ee_log_fn log_fn;        /* NULL: errors go to stderr */
    void *log_user_data;
    bool allow_stale_decision; /* a bundle re-calibrated since generation: warn and run the compiled-in rule
                                  instead of refusing with EE_ERR_STALE (default false) */
} ee_session_params;

ee_session_params ee_session_default_params(void);

/* Create a session for `desc`. On error *out is NULL and nothing is leaked. */
ee_status ee_session_create(const ee_bundle_desc *desc, const ee_session_params *params, ee_session **out);

/* NULL-safe. */
void ee_session_free(ee_session *s);

/* Override the policy and the per-exit thresholds (n == n_stages or n_stages - 1).
 * max-prob/entropy/margin/learned thresholds must lie in [0, 1]; patience: whole numbers >= 1.
 * EE_POLICY_LEARNED needs the bundle's gates (EE_ERR_INVALID_ARG without them). */
ee_status ee_session_set_policy(ee_session *s, ee_policy policy, const float *thresholds, int32_t n);

/* Which exits are evaluated (n == n_stages; the last is always kept): a dropped exit's head
 * is not run (its stage runs the trunk graph) and it never fires. Starts as the bundle's. */
ee_status ee_session_set_kept(ee_session *s, const bool *kept, int32_t n);

typedef struct {
    int32_t max_exit;    /* stop at this exit at the latest; -1: the last exit */
    bool no_early_exit;  /* evaluate every kept exit; the result is the last run exit */
    int64_t deadline_us; /* > 0: also stop at the deepest exit whose profiled p99 completion fits
                            (the bundle's anytime table; EE_ERR_INVALID_ARG without one) */
} ee_run_options;

ee_run_options ee_run_default_options(void);

typedef struct {
    int32_t class_idx;
    int32_t exit_idx;
    float confidence;                      /* max softmax probability at the exit taken */
    const float *probs;                    /* n_classes, owned by the session */
    int32_t n_classes;
    int32_t n_stages_run;
    const void *exit_logits[EE_MAX_STAGES]; /* raw logits per exit (int8 or float), NULL if not run */
    int64_t t_stage_ns[EE_MAX_STAGES];      /* wall time per stage (requant, models, logits read-out), ns */
    int64_t t_decision_ns[EE_MAX_STAGES];   /* exit decision (policy on the logits) per exit, ns */
    int64_t t_total_ns;                     /* the whole run, from input copy to decision, ns */
} ee_result;

/* The model's inputs: 1 for an image or token ids alone; more for e.g. token ids and an
 * attention mask (the bundle's manifest lists them in order). */
int32_t ee_session_n_inputs(const ee_session *s);

/* Size in bytes of model input i (0 when i is out of range). */
size_t ee_session_input_bytes_at(const ee_session *s, int32_t i);

/* Size in bytes of the raw input expected by ee_session_run_raw (model input 0). */
size_t ee_session_input_bytes(const ee_session *s);

/* Run one sample given in the model's own input layout (NHWC) and dtype (int8 for
 * tflite-int8: already quantized with the bundle's input quant params; int32/int64 token ids
 * for a model that takes ids: each must lie in the input's range). For a model with one
 * input; a model with several refuses it (EE_ERR_INVALID_ARG): use ee_session_run_inputs. */
ee_status ee_session_run_raw(ee_session *s, const void *input, size_t n_bytes, const ee_run_options *opts,
                             ee_result *out);

/* Run one sample of a model with n_inputs inputs (ee_session_n_inputs): inputs[i] holds
 * n_bytes[i] == ee_session_input_bytes_at(s, i) bytes of input i, raw as for
 * ee_session_run_raw. Every input is checked (size, id range) before any is written. */
ee_status ee_session_run_inputs(ee_session *s, const void *const *inputs, const size_t *n_bytes, int32_t n_inputs,
                                const ee_run_options *opts, ee_result *out);

/* Run one sample given as float32 in the model's input layout (NHWC); the harness
 * quantizes it (round half away from zero) when the model input is int8. A model that
 * takes integer ids refuses it (EE_ERR_INVALID_ARG): use ee_session_run_raw. */
ee_status ee_session_run_f32(ee_session *s, const float *input, size_t n_floats, const ee_run_options *opts,
                             ee_result *out);

#ifdef __cplusplus
}
#endif
#endif /* EE_H */
