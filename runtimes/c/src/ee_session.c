/*
 * ee_session.c -- sessions of the early-exit harness on the LiteRT C API: open and check the
 * bundle's model files, wire the graphs' buffers, run stage by stage and stop at the first
 * exit whose policy fires. See include/ee.h for the contract, ee_internal.h for the parts.
 *
 * Stages are chained without copies where the bundle allows it: a stage's output tensor
 * buffer is handed to the next stage as its input buffer, unless the bundle records a
 * requantization for that boundary. The decision maths lives in ee_decide.c.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ee_decide.h"
#include "ee_internal.h"

#define EE_MAX_GRAPHS (3 * EE_MAX_STAGES) /* up to 2 graphs and a trunk per stage */

/* One model file, opened and compiled once. A packed bundle has one file holding every
 * graph as a signature, so all stages share one interpreter and one XNNPACK thread pool. */
typedef struct {
    const char *file; /* the description's file name; graphs naming the same file share it */
    size_t file_bytes;    /* as the first graph naming the file describes it; later ones must agree */
    uint64_t file_fnv1a;
    void *file_data;  /* the model file's bytes; must outlive the model (LiteRtCreateModelFromBuffer) */
    LiteRtModel model;
    LiteRtOptions options;
    LiteRtCompiledModel cm;
} ee_model_rt;

typedef struct {
    const ee_graph_desc *d;
    ee_model_rt *m;
    LiteRtParamIndex sig; /* signature index of this graph in m */
    size_t n_in, n_out;
    LiteRtTensorBuffer in_bufs[EE_MAX_GRAPH_IO];  /* signature order */
    LiteRtTensorBuffer out_bufs[EE_MAX_GRAPH_IO]; /* signature order */
    bool in_owned[EE_MAX_GRAPH_IO];
    bool out_shared[EE_MAX_GRAPH_IO]; /* a trunk writes into its fused graph's state buffers */
    int in_sig[EE_MAX_GRAPH_IO];  /* desc input i -> signature input index */
    int out_sig[EE_MAX_GRAPH_IO]; /* desc output i -> signature output index */
    /* where desc input i comes from: producer graph and its desc output index (-1: model input) */
    int src_graph[EE_MAX_GRAPH_IO];
    int src_out[EE_MAX_GRAPH_IO];
    int logits_out; /* desc output index of the logits, -1 if none */
    /* The input buffers stay bound to the graph's input tensors after its first run:
     * LiteRT skips the registration of a NULL input buffer and keeps the tensor's
     * custom allocation (the mechanism behind LiteRtAddExternalTensorBinding), so
     * later runs pass NULL inputs: 0.7% of a 115 us network (measured). */
    bool inputs_bound;
} ee_graph_rt;

struct ee_session {
    const ee_bundle_desc *desc;
    ee_session_params params;
    void *dl;
    ee_litert_api api;
    LiteRtEnvironment env;
    int n_models;
    ee_model_rt models[EE_MAX_GRAPHS];
    int n_graphs;
    ee_graph_rt graphs[EE_MAX_GRAPHS];
    int n_stage_graphs;                 /* graphs[0 .. n_stage_graphs) are the stages', then the trunks */
    int stage_first_graph[EE_MAX_STAGES];
    int trunk_graph[EE_MAX_STAGES];     /* the stage's trunk in graphs[], -1: none */
    bool kept[EE_MAX_STAGES];           /* a dropped exit: its head is not run, it never fires */
    ee_decider decider; /* policy, thresholds, per-exit tables and the logits copies */
};

const char *ee_status_str(ee_status status) {
    switch (status) {
    case EE_OK: return "ok";
    case EE_ERR_INVALID_ARG: return "invalid argument";
    case EE_ERR_IO: return "i/o error (stage file missing or unreadable)";
    case EE_ERR_BACKEND: return "LiteRT backend error";
    case EE_ERR_VERSION: return "version mismatch (libLiteRt.so or bundle description)";
    case EE_ERR_NOT_FOUND: return "libLiteRt.so not found or not loadable";
    case EE_ERR_STALE: return "the bundle's exit decision rule changed since this harness was generated";
    case EE_ERR_NO_MEMORY: return "out of memory";
    case EE_ERR_MODEL: return "stage model does not match the bundle description";
    }
    return "unknown status";
}

void ee_log(const ee_session_params *p, ee_log_level level, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p != NULL && p->log_fn != NULL) {
        p->log_fn(level, msg, p->log_user_data);
    } else if (level >= EE_LOG_WARN) {
        fprintf(stderr, "ee: %s\n", msg);
    }
}

int64_t ee_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

ee_session_params ee_session_default_params(void) {
    ee_session_params p;
    memset(&p, 0, sizeof p);
    p.n_threads = 1;
    p.check_version = true;
    return p;
}

ee_run_options ee_run_default_options(void) {
    ee_run_options o;
    memset(&o, 0, sizeof o);
    o.max_exit = -1;
    return o;
}

/* ---- graphs --------------------------------------------------------------------------- */

size_t ee_dtype_size(ee_dtype t) {
    switch (t) {
    case EE_DTYPE_INT8: return 1;
    case EE_DTYPE_FLOAT32:
    case EE_DTYPE_INT32: return 4;
    case EE_DTYPE_INT64: return 8;
    }
    return 0;
}


static ee_status check_tensor(ee_session *s, const ee_graph_desc *g, LiteRtTensor t, const ee_tensor_desc *td) {
    LiteRtRankedTensorType rtt;
    if (s->api.LiteRtGetRankedTensorType(t, &rtt) != kLiteRtStatusOk) return EE_ERR_MODEL;
    bool ok = rtt.element_type == (int)td->dtype && (int32_t)rtt.layout.rank == td->rank;
    size_t n = ee_dtype_size(td->dtype);
    for (int32_t i = 0; ok && i < td->rank; i++) {
        ok = rtt.layout.dimensions[i] == td->dims[i];
        n *= (size_t)td->dims[i];
    }
    ok = ok && n == td->n_bytes;
    if (ok && td->has_quant) {
        int qt = 0;
        LiteRtQuantizationPerTensor q;
        ok = s->api.LiteRtGetQuantizationTypeId(t, &qt) == kLiteRtStatusOk && qt == kLiteRtQuantizationPerTensor &&
             s->api.LiteRtGetPerTensorQuantization(t, &q) == kLiteRtStatusOk && q.scale == td->quant.scale &&
             q.zero_point == td->quant.zero_point;
    }
    if (!ok) {
        ee_log(&s->params, EE_LOG_ERROR, "%s: tensor %s does not match the bundle description", g->file,
               td->signature_name);
        return EE_ERR_MODEL;
    }
    return EE_OK;
}

static void free_payload(void *p) { free(p); }

/* Open, check and compile the model file `g` names; a file already opened for an earlier
 * graph is shared. */
static ee_status open_model(ee_session *s, const ee_graph_desc *g, ee_model_rt **out) {
    for (int i = 0; i < s->n_models; i++) {
        if (strcmp(s->models[i].file, g->file) == 0) {
            if (s->models[i].file_data == NULL) return EE_ERR_MODEL;
            if (g->file_bytes != s->models[i].file_bytes || g->file_fnv1a != s->models[i].file_fnv1a) {
                ee_log(&s->params, EE_LOG_ERROR, "graphs naming %s disagree on its size or checksum: "
                       "the bundle description is inconsistent (regenerate it with eecompile harness)", g->file);
                return EE_ERR_MODEL;
            }
            *out = &s->models[i];
            return EE_OK;
        }
    }
    ee_model_rt *m = &s->models[s->n_models++];
    m->file = g->file;
    m->file_bytes = g->file_bytes;
    m->file_fnv1a = g->file_fnv1a;
    *out = m;
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", s->params.bundle_dir, g->file);
    ee_status es = ee_read_checked(&s->params, path, g->file_bytes, g->file_fnv1a, &m->file_data);
    if (es != EE_OK) return es;
    LiteRtStatus ls = s->api.LiteRtCreateModelFromBuffer(s->env, m->file_data, g->file_bytes, &m->model);
    if (ls != kLiteRtStatusOk) {
        m->model = NULL;
        ee_log(&s->params, EE_LOG_ERROR, "LiteRT cannot load %s (status %d)", path, ls);
        return EE_ERR_MODEL;
    }
    if (s->api.LiteRtCreateOptions(&m->options) != kLiteRtStatusOk) {
        m->options = NULL;
        return EE_ERR_BACKEND;
    }
    if (s->api.LiteRtSetOptionsHardwareAccelerators(m->options, kLiteRtHwAcceleratorCpu) != kLiteRtStatusOk)
        return EE_ERR_BACKEND;
    char *payload = malloc(48);
    if (payload == NULL) return EE_ERR_NO_MEMORY;
    snprintf(payload, 48, "num_threads = %d\n", (int)s->params.n_threads);
    LiteRtOpaqueOptions oo;
    if (s->api.LiteRtCreateOpaqueOptions("xnnpack", payload, free_payload, &oo) != kLiteRtStatusOk) {
        free(payload);
        return EE_ERR_BACKEND;
    }
    if (s->api.LiteRtAddOpaqueOptions(m->options, oo) != kLiteRtStatusOk) {
        s->api.LiteRtDestroyOpaqueOptions(oo); /* not attached: still ours */
        return EE_ERR_BACKEND;
    }
    ls = s->api.LiteRtCreateCompiledModel(s->env, m->model, m->options, &m->cm);
    if (ls != kLiteRtStatusOk) {
        m->cm = NULL;
        ee_log(&s->params, EE_LOG_ERROR, "%s: LiteRT cannot compile the model (status %d)", path, ls);
        return EE_ERR_BACKEND;
    }
    return EE_OK;
}

/* Bind graph `gr` to its signature in its model file and check every tensor against the
 * description. */
static ee_status open_graph(ee_session *s, ee_graph_rt *gr) {
    const ee_graph_desc *g = gr->d;
    ee_status es = open_model(s, g, &gr->m);
    if (es != EE_OK) return es;
    LiteRtModel model = gr->m->model;
    LiteRtParamIndex n_sig = 0, n_in = 0, n_out = 0;
    LiteRtSignature sig;
    const char *key = NULL;
    if (g->signature_index < 0 || s->api.LiteRtGetNumModelSignatures(model, &n_sig) != kLiteRtStatusOk ||
        (LiteRtParamIndex)g->signature_index >= n_sig ||
        s->api.LiteRtGetModelSignature(model, (LiteRtParamIndex)g->signature_index, &sig) != kLiteRtStatusOk ||
        s->api.LiteRtGetSignatureKey(sig, &key) != kLiteRtStatusOk || key == NULL || g->signature_key == NULL ||
        strcmp(key, g->signature_key) != 0) {
        ee_log(&s->params, EE_LOG_ERROR, "%s has no signature %d named %s", g->file, (int)g->signature_index,
               g->signature_key != NULL ? g->signature_key : "(null)");
        return EE_ERR_MODEL;
    }
    if (s->api.LiteRtGetNumSignatureInputs(sig, &n_in) != kLiteRtStatusOk ||
        s->api.LiteRtGetNumSignatureOutputs(sig, &n_out) != kLiteRtStatusOk || (int32_t)n_in != g->n_inputs ||
        (int32_t)n_out != g->n_outputs || n_in > EE_MAX_GRAPH_IO || n_out > EE_MAX_GRAPH_IO) {
        ee_log(&s->params, EE_LOG_ERROR, "%s[%s]: signature does not match the bundle description", g->file, key);
        return EE_ERR_MODEL;
    }
    gr->sig = (LiteRtParamIndex)g->signature_index;
    gr->n_in = n_in;
    gr->n_out = n_out;
    for (int pass = 0; pass < 2; pass++) {
        int32_t n = pass == 0 ? g->n_inputs : g->n_outputs;
        const ee_tensor_desc *tds = pass == 0 ? g->inputs : g->outputs;
        for (int32_t i = 0; i < n; i++) {
            int found = -1;
            for (LiteRtParamIndex j = 0; j < (LiteRtParamIndex)n && found < 0; j++) {
                const char *name = NULL;
                LiteRtStatus st = pass == 0 ? s->api.LiteRtGetSignatureInputName(sig, j, &name)
                                            : s->api.LiteRtGetSignatureOutputName(sig, j, &name);
                if (st == kLiteRtStatusOk && name != NULL && strcmp(name, tds[i].signature_name) == 0) found = (int)j;
            }
            if (found < 0) {
                ee_log(&s->params, EE_LOG_ERROR, "%s[%s]: no signature tensor named %s", g->file, key,
                       tds[i].signature_name);
                return EE_ERR_MODEL;
            }
            LiteRtTensor t;
            LiteRtStatus st = pass == 0 ? s->api.LiteRtGetSignatureInputTensorByIndex(sig, (LiteRtParamIndex)found, &t)
                                        : s->api.LiteRtGetSignatureOutputTensorByIndex(sig, (LiteRtParamIndex)found, &t);
            if (st != kLiteRtStatusOk) return EE_ERR_MODEL;
            es = check_tensor(s, g, t, &tds[i]);
            if (es != EE_OK) return es;
            if (pass == 0) gr->in_sig[i] = found; else gr->out_sig[i] = found;
        }
    }
    return EE_OK;
}

static ee_status make_buffer(ee_session *s, ee_graph_rt *gr, bool input, size_t sig_idx, LiteRtTensorBuffer *out) {
    LiteRtTensorBufferRequirements req;
    LiteRtStatus st = input ? s->api.LiteRtGetCompiledModelInputBufferRequirements(gr->m->cm, gr->sig, sig_idx, &req)
                            : s->api.LiteRtGetCompiledModelOutputBufferRequirements(gr->m->cm, gr->sig, sig_idx, &req);
    if (st != kLiteRtStatusOk) return EE_ERR_BACKEND;
    /* find the desc tensor for this signature index to build the tensor type */
    const ee_tensor_desc *td = NULL;
    int32_t n = input ? gr->d->n_inputs : gr->d->n_outputs;
    for (int32_t i = 0; i < n; i++) {
        if ((size_t)(input ? gr->in_sig[i] : gr->out_sig[i]) == sig_idx) td = input ? &gr->d->inputs[i] : &gr->d->outputs[i];
    }
    if (td == NULL) return EE_ERR_MODEL;
    LiteRtRankedTensorType rtt;
    memset(&rtt, 0, sizeof rtt);
    rtt.element_type = (int)td->dtype;
    rtt.layout.rank = (unsigned)td->rank;
    for (int32_t i = 0; i < td->rank; i++) rtt.layout.dimensions[i] = td->dims[i];
    if (s->api.LiteRtCreateManagedTensorBufferFromRequirements(s->env, &rtt, req, out) != kLiteRtStatusOk) {
        *out = NULL;
        return EE_ERR_BACKEND;
    }
    return EE_OK;
}

/* Where does input i of graph gi come from? Producer: the previous stage's segment/fused
 * graph for segment/fused graphs, this stage's segment for a head. */
static void wire_sources(ee_session *s) {
    for (int32_t k = 0; k < s->desc->n_stages; k++) {
        const ee_stage_desc *st = &s->desc->stages[k];
        for (int32_t j = 0; j < st->n_graphs; j++) {
            int gi = s->stage_first_graph[k] + j;
            ee_graph_rt *gr = &s->graphs[gi];
            int producer = -1;
            if (gr->d->kind == EE_GRAPH_HEAD) producer = s->stage_first_graph[k];
            else if (k > 0) producer = s->stage_first_graph[k - 1];
            gr->logits_out = -1;
            for (int32_t o = 0; o < gr->d->n_outputs; o++)
                if (gr->d->outputs[o].role == EE_ROLE_LOGITS) gr->logits_out = o;
            int state_idx = 0;
            for (int32_t i = 0; i < gr->d->n_inputs; i++) {
                gr->src_graph[i] = producer;
                gr->src_out[i] = -1;
                if (producer < 0) continue;
                const ee_graph_desc *pd = s->graphs[producer].d;
                int seen = 0;
                for (int32_t o = 0; o < pd->n_outputs; o++) {
                    if (pd->outputs[o].role != EE_ROLE_STATE) continue;
                    if (seen++ == state_idx) gr->src_out[i] = o;
                }
                state_idx++;
            }
        }
    }
}

/* An output that is one of the graph's inputs (a state passed on unchanged, e.g. an attention
 * mask) is one tensor in the model: bound to two buffers, the model reads the input from the
 * output's buffer (measured: LiteRT ran on stale bytes). Both sides get the input's buffer. */
static ee_status bind_passthrough(ee_session *s, ee_graph_rt *gr) {
    for (int32_t o = 0; o < gr->d->n_outputs; o++) {
        const ee_tensor_desc *od = &gr->d->outputs[o];
        if (!od->passthrough) continue;
        int32_t i = od->passthrough_input;
        if (i < 0 || i >= gr->d->n_inputs || gr->d->inputs[i].n_bytes != od->n_bytes ||
            gr->d->inputs[i].dtype != od->dtype) {
            ee_log(&s->params, EE_LOG_ERROR, "%s: output %s passes on no matching input", gr->d->file,
                   od->signature_name);
            return EE_ERR_MODEL;
        }
        size_t os = (size_t)gr->out_sig[o];
        if (gr->out_bufs[os] != NULL && !gr->out_shared[os]) s->api.LiteRtDestroyTensorBuffer(gr->out_bufs[os]);
        gr->out_bufs[os] = gr->in_bufs[gr->in_sig[i]];
        gr->out_shared[os] = true;
    }
    return EE_OK;
}

static ee_status make_buffers(ee_session *s) {
    for (int gi = 0; gi < s->n_stage_graphs; gi++) {
        ee_graph_rt *gr = &s->graphs[gi];
        for (size_t o = 0; o < gr->n_out; o++) {
            ee_status es = make_buffer(s, gr, false, o, &gr->out_bufs[o]);
            if (es != EE_OK) return es;
        }
        for (int32_t i = 0; i < gr->d->n_inputs; i++) {
            const ee_tensor_desc *td = &gr->d->inputs[i];
            int sig = gr->in_sig[i];
            if (gr->src_graph[i] >= 0 && gr->src_out[i] < 0) return EE_ERR_MODEL;
            if (gr->src_graph[i] >= 0 && !td->requant) {
                ee_graph_rt *pr = &s->graphs[gr->src_graph[i]];
                const ee_tensor_desc *ptd = &pr->d->outputs[gr->src_out[i]];
                if (ptd->n_bytes != td->n_bytes || ptd->dtype != td->dtype) {
                    ee_log(&s->params, EE_LOG_ERROR, "%s input %s cannot take %s's output", gr->d->file,
                           td->signature_name, pr->d->file);
                    return EE_ERR_MODEL;
                }
                gr->in_bufs[sig] = pr->out_bufs[pr->out_sig[gr->src_out[i]]]; /* zero copy */
                gr->in_owned[sig] = false;
            } else {
                ee_status es = make_buffer(s, gr, true, (size_t)sig, &gr->in_bufs[sig]);
                if (es != EE_OK) return es;
                gr->in_owned[sig] = true;
            }
        }
        ee_status es = bind_passthrough(s, gr);
        if (es != EE_OK) return es;
    }
    return EE_OK;
}

/* A trunk takes its fused graph's inputs and writes the fused graph's state outputs: it shares
 * their buffers, so the next stage's (zero-copy) input is right whichever of the two ran. */
static ee_status share_trunk_buffers(ee_session *s, ee_graph_rt *tr, const ee_graph_rt *fu) {
    const ee_graph_desc *t = tr->d, *f = fu->d;
    int32_t n_state = 0;
    for (int32_t o = 0; o < f->n_outputs; o++) n_state += f->outputs[o].role == EE_ROLE_STATE;
    bool ok = f->kind == EE_GRAPH_FUSED && t->n_inputs == f->n_inputs && t->n_outputs == n_state;
    for (int32_t i = 0; ok && i < t->n_inputs; i++)
        ok = t->inputs[i].n_bytes == f->inputs[i].n_bytes && t->inputs[i].dtype == f->inputs[i].dtype;
    for (int32_t o = 0, st = 0; ok && o < f->n_outputs; o++) {
        if (f->outputs[o].role != EE_ROLE_STATE) continue;
        ok = t->outputs[st].n_bytes == f->outputs[o].n_bytes && t->outputs[st].dtype == f->outputs[o].dtype &&
             t->outputs[st].role == EE_ROLE_STATE;
        if (ok) {
            tr->out_bufs[tr->out_sig[st]] = fu->out_bufs[fu->out_sig[o]];
            tr->out_shared[tr->out_sig[st]] = true;
        }
        st++;
    }
    if (!ok) {
        ee_log(&s->params, EE_LOG_ERROR, "%s: the trunk graph does not match its stage's inputs and state outputs",
               t->file);
        return EE_ERR_MODEL;
    }
    for (int32_t i = 0; i < t->n_inputs; i++) {
        tr->in_bufs[tr->in_sig[i]] = fu->in_bufs[fu->in_sig[i]];
        tr->in_owned[tr->in_sig[i]] = false;
        tr->src_graph[i] = fu->src_graph[i]; /* requantized from the same producer as the fused graph */
        tr->src_out[i] = fu->src_out[i];
    }
    tr->logits_out = -1;
    return EE_OK;
}

/* The bundle's decision.hash against the one compiled in: a bundle re-calibrated after this
 * harness was generated must not silently run the old thresholds. */
static ee_status check_decision_hash(const ee_session *s) {
    const char *want = s->desc->decision_hash;
    if (want == NULL || want[0] == '\0') return EE_OK;
    char path[2048], got[40] = {0};
    snprintf(path, sizeof path, "%s/decision.hash", s->params.bundle_dir);
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(got, 1, sizeof got - 1, f) : 0;
    if (f != NULL) fclose(f);
    while (n > 0 && (got[n - 1] == '\n' || got[n - 1] == '\r' || got[n - 1] == ' ')) got[--n] = '\0';
    if (f == NULL) {
        ee_log(&s->params, EE_LOG_WARN, "%s is missing: cannot tell whether the bundle was re-calibrated since "
               "this harness was generated", path);
        return EE_OK;
    }
    if (strcmp(got, want) == 0) return EE_OK;
    ee_log(&s->params, s->params.allow_stale_decision ? EE_LOG_WARN : EE_LOG_ERROR,
           "the bundle's exit decision rule (%s) is not the one this harness was generated for (%s): it was "
           "re-calibrated or re-exported; regenerate the harness with eecompile harness%s", got, want,
           s->params.allow_stale_decision ? " (running the compiled-in rule)" : "");
    return s->params.allow_stale_decision ? EE_OK : EE_ERR_STALE;
}

static ee_status check_desc(const ee_bundle_desc *d, const ee_session_params *p) {
    if (d->abi_version != EE_ABI_VERSION) {
        ee_log(p, EE_LOG_ERROR, "bundle description has ABI %u, this harness %d: regenerate with eecompile harness",
               d->abi_version, EE_ABI_VERSION);
        return EE_ERR_VERSION;
    }
    if (d->n_stages < 1 || d->n_stages > EE_MAX_STAGES || d->n_classes < 2 || d->stages == NULL ||
        d->thresholds == NULL) {
        return EE_ERR_INVALID_ARG;
    }
    for (int32_t k = 0; k < d->n_stages; k++) {
        const ee_stage_desc *st = &d->stages[k];
        if (st->n_graphs < 1 || st->n_graphs > 2 || st->graphs == NULL) return EE_ERR_INVALID_ARG;
        for (int32_t j = 0; j < st->n_graphs; j++) {
            const ee_graph_desc *g = &st->graphs[j];
            if (g->n_inputs < 1 || g->n_inputs > EE_MAX_GRAPH_IO || g->n_outputs < 1 ||
                g->n_outputs > EE_MAX_GRAPH_IO || g->file == NULL) {
                return EE_ERR_INVALID_ARG;
            }
        }
    }
    return EE_OK;
}

ee_status ee_session_set_policy(ee_session *s, ee_policy policy, const float *thresholds, int32_t n) {
    if (s == NULL) return EE_ERR_INVALID_ARG;
    ee_status es = ee_decider_set_policy(&s->decider, policy, thresholds, n);
    if (es != EE_OK)
        ee_log(&s->params, EE_LOG_ERROR, "policy %d or a threshold is out of range for it%s", (int)policy,
               policy == EE_POLICY_LEARNED && !s->decider.has_gates ? " (the bundle has no learned gates)" : "");
    return es;
}

ee_status ee_session_set_kept(ee_session *s, const bool *kept, int32_t n) {
    if (s == NULL || kept == NULL || n != s->desc->n_stages) return EE_ERR_INVALID_ARG;
    for (int32_t k = 0; k < n; k++) s->kept[k] = kept[k] || k == n - 1;
    return EE_OK;
}

ee_status ee_session_create(const ee_bundle_desc *desc, const ee_session_params *params, ee_session **out) {
    if (out == NULL) return EE_ERR_INVALID_ARG;
    *out = NULL;
    if (desc == NULL || params == NULL || params->bundle_dir == NULL) return EE_ERR_INVALID_ARG;
    if (params->n_threads < 1 || params->n_threads > 64) return EE_ERR_INVALID_ARG;
    ee_status es = check_desc(desc, params);
    if (es != EE_OK) return es;
    ee_session *s = calloc(1, sizeof *s);
    if (s == NULL) return EE_ERR_NO_MEMORY;
    s->desc = desc;
    s->params = *params;
    es = ee_litert_open(&s->params, &s->dl, &s->api);
    if (es != EE_OK) goto fail;
    LiteRtEnvOption env_opts[2];
    memset(env_opts, 0, sizeof env_opts);
    env_opts[0].tag = kLiteRtEnvOptionTagAutoRegisterAccelerators; /* CPU only: no GPU/NPU plugin probing */
    env_opts[0].value.type = kLiteRtAnyTypeInt;
    env_opts[0].value.v.int_value = kLiteRtHwAcceleratorCpu;
    env_opts[1].tag = kLiteRtEnvOptionTagMinLoggerSeverity;
    env_opts[1].value.type = kLiteRtAnyTypeInt;
    env_opts[1].value.v.int_value = 3; /* errors only */
    if (s->api.LiteRtCreateEnvironment(2, env_opts, &s->env) != kLiteRtStatusOk) {
        s->env = NULL;
        es = EE_ERR_BACKEND;
        goto fail;
    }
    es = check_decision_hash(s);
    if (es != EE_OK) goto fail;
    for (int32_t k = 0; k < desc->n_stages; k++) {
        s->stage_first_graph[k] = s->n_graphs;
        for (int32_t j = 0; j < desc->stages[k].n_graphs; j++) {
            ee_graph_rt *gr = &s->graphs[s->n_graphs++];
            gr->d = &desc->stages[k].graphs[j];
            es = open_graph(s, gr);
            if (es != EE_OK) goto fail;
        }
    }
    s->n_stage_graphs = s->n_graphs;
    for (int32_t k = 0; k < desc->n_stages; k++) {
        s->trunk_graph[k] = -1;
        s->kept[k] = desc->kept == NULL || desc->kept[k] || k == desc->n_stages - 1;
        if (desc->stages[k].trunk == NULL) continue;
        s->trunk_graph[k] = s->n_graphs;
        ee_graph_rt *gr = &s->graphs[s->n_graphs++];
        gr->d = desc->stages[k].trunk;
        es = open_graph(s, gr);
        if (es != EE_OK) goto fail;
    }
    wire_sources(s);
    es = make_buffers(s);
    for (int32_t k = 0; es == EE_OK && k < desc->n_stages; k++)
        if (s->trunk_graph[k] >= 0)
            es = share_trunk_buffers(s, &s->graphs[s->trunk_graph[k]], &s->graphs[s->stage_first_graph[k]]);
    if (es != EE_OK) goto fail;
    ee_logits_format fmt[EE_MAX_STAGES];
    for (int32_t k = 0; k < desc->n_stages; k++) {
        const ee_stage_desc *st = &desc->stages[k];
        const ee_graph_rt *gr = &s->graphs[s->stage_first_graph[k] + st->n_graphs - 1];
        if (gr->logits_out < 0) {
            ee_log(&s->params, EE_LOG_ERROR, "exit %d: the stage's last graph has no logits output", (int)k);
            es = EE_ERR_MODEL;
            goto fail;
        }
        const ee_tensor_desc *lt = &gr->d->outputs[gr->logits_out];
        if (lt->n_bytes != (size_t)desc->n_classes * ee_dtype_size(lt->dtype)) {
            ee_log(&s->params, EE_LOG_ERROR, "exit %d: logits of %zu bytes for %d classes", (int)k, lt->n_bytes,
                   (int)desc->n_classes);
            es = EE_ERR_MODEL;
            goto fail;
        }
        fmt[k].dtype = lt->dtype;
        fmt[k].has_quant = lt->has_quant;
        fmt[k].quant = lt->quant;
    }
    es = ee_decider_init(&s->decider, desc->n_stages, desc->n_classes, fmt);
    if (es == EE_ERR_MODEL) ee_log(&s->params, EE_LOG_ERROR, "int8 logits without quantization parameters");
    if (es == EE_OK && desc->gates != NULL) es = ee_decider_set_gates(&s->decider, desc->gates);
    if (es != EE_OK) goto fail;
    es = ee_session_set_policy(s, desc->policy, desc->thresholds, desc->n_stages);
    if (es != EE_OK) goto fail;
    *out = s;
    return EE_OK;
fail:
    ee_session_free(s);
    return es;
}

void ee_session_free(ee_session *s) {
    if (s == NULL) return;
    for (int gi = s->n_graphs - 1; gi >= 0; gi--) {
        ee_graph_rt *gr = &s->graphs[gi];
        for (size_t i = 0; i < EE_MAX_GRAPH_IO; i++) {
            if (gr->in_bufs[i] != NULL && gr->in_owned[i]) s->api.LiteRtDestroyTensorBuffer(gr->in_bufs[i]);
            if (gr->out_bufs[i] != NULL && !gr->out_shared[i]) s->api.LiteRtDestroyTensorBuffer(gr->out_bufs[i]);
        }
    }
    for (int mi = s->n_models - 1; mi >= 0; mi--) {
        ee_model_rt *m = &s->models[mi];
        if (m->cm != NULL) s->api.LiteRtDestroyCompiledModel(m->cm);
        if (m->options != NULL) s->api.LiteRtDestroyOptions(m->options);
        if (m->model != NULL) s->api.LiteRtDestroyModel(m->model);
        free(m->file_data);
    }
    if (s->env != NULL) s->api.LiteRtDestroyEnvironment(s->env);
    /* libLiteRt.so is not dlclose'd: its static destructors and thread pools may still run. */
    ee_decider_free(&s->decider);
    free(s);
}

int32_t ee_session_n_inputs(const ee_session *s) {
    return s == NULL ? 0 : s->graphs[0].d->n_inputs;
}

size_t ee_session_input_bytes_at(const ee_session *s, int32_t i) {
    if (s == NULL || i < 0 || i >= s->graphs[0].d->n_inputs) return 0;
    return s->graphs[0].d->inputs[i].n_bytes;
}

size_t ee_session_input_bytes(const ee_session *s) { return ee_session_input_bytes_at(s, 0); }

/* ---- running ---------------------------------------------------------------------------- */

static ee_status requantize_into(ee_session *s, LiteRtTensorBuffer src, LiteRtTensorBuffer dst,
                                 const ee_tensor_desc *td) {
    void *pin = NULL, *pout = NULL;
    if (s->api.LiteRtLockTensorBuffer(src, &pin, kLiteRtTensorBufferLockModeRead) != kLiteRtStatusOk)
        return EE_ERR_BACKEND;
    if (s->api.LiteRtLockTensorBuffer(dst, &pout, kLiteRtTensorBufferLockModeWrite) != kLiteRtStatusOk) {
        s->api.LiteRtUnlockTensorBuffer(src);
        return EE_ERR_BACKEND;
    }
    const int8_t *a = pin;
    int8_t *b = pout;
    float ratio = td->requant_from.scale / td->quant.scale;
    for (size_t i = 0; i < td->n_bytes; i++) {
        float v = (float)((int32_t)a[i] - td->requant_from.zero_point) * ratio;
        b[i] = ee_clamp_i8(ee_round_half_away(v) + (float)td->quant.zero_point);
    }
    s->api.LiteRtUnlockTensorBuffer(dst);
    s->api.LiteRtUnlockTensorBuffer(src);
    return EE_OK;
}

static ee_status run_graph(ee_session *s, ee_graph_rt *gr) {
    for (int32_t i = 0; i < gr->d->n_inputs; i++) {
        const ee_tensor_desc *td = &gr->d->inputs[i];
        if (gr->src_graph[i] >= 0 && td->requant) {
            ee_graph_rt *pr = &s->graphs[gr->src_graph[i]];
            ee_status es = requantize_into(s, pr->out_bufs[pr->out_sig[gr->src_out[i]]], gr->in_bufs[gr->in_sig[i]], td);
            if (es != EE_OK) return es;
        }
    }
    static LiteRtTensorBuffer bound[EE_MAX_GRAPH_IO]; /* all NULL, never written */
    LiteRtStatus st = s->api.LiteRtRunCompiledModel(gr->m->cm, gr->sig, gr->n_in,
                                                    gr->inputs_bound ? bound : gr->in_bufs, gr->n_out, gr->out_bufs);
    if (st != kLiteRtStatusOk) {
        ee_log(&s->params, EE_LOG_ERROR, "%s: LiteRtRunCompiledModel failed (status %d)", gr->d->file, st);
        return EE_ERR_BACKEND;
    }
    gr->inputs_bound = true;
    return EE_OK;
}

static ee_status run_from_stage0(ee_session *s, const ee_run_options *opts, ee_result *out) {
    const ee_bundle_desc *d = s->desc;
    ee_decider *dec = &s->decider;
    int32_t last = d->n_stages - 1;
    if (opts->max_exit >= 0) last = opts->max_exit;
    if (opts->deadline_us > 0) { /* the deepest exit whose profiled p99 completion fits */
        int32_t fit = 0;
        for (int32_t k = 0; k < d->n_stages; k++)
            if ((double)d->p99_latency_us[k] <= (double)opts->deadline_us) fit = k;
        if (fit < last) last = fit;
    }
    memset(out, 0, sizeof *out);
    out->n_classes = d->n_classes;
    out->probs = dec->probs;
    ee_decide_state dst = ee_decide_start();
    int64_t t_start = ee_now_ns(), t0 = t_start; /* each stage's clock starts where the last decision ended */
    for (int32_t k = 0; k <= last; k++) {
        const ee_stage_desc *st = &d->stages[k];
        if (k != last && !s->kept[k]) { /* a dropped exit: the segment alone, no head, no decision */
            ee_graph_rt *g = s->trunk_graph[k] >= 0 ? &s->graphs[s->trunk_graph[k]] : &s->graphs[s->stage_first_graph[k]];
            ee_status es = run_graph(s, g);
            if (es != EE_OK) return es;
            int64_t t1 = ee_now_ns();
            out->t_stage_ns[k] = t1 - t0;
            t0 = t1;
            out->n_stages_run = k + 1;
            continue;
        }
        for (int32_t j = 0; j < st->n_graphs; j++) {
            ee_status es = run_graph(s, &s->graphs[s->stage_first_graph[k] + j]);
            if (es != EE_OK) return es;
        }
        ee_graph_rt *lg = &s->graphs[s->stage_first_graph[k] + st->n_graphs - 1];
        void *p = NULL;
        LiteRtTensorBuffer buf = lg->out_bufs[lg->out_sig[lg->logits_out]];
        if (s->api.LiteRtLockTensorBuffer(buf, &p, kLiteRtTensorBufferLockModeRead) != kLiteRtStatusOk)
            return EE_ERR_BACKEND;
        void *logits = ee_decider_logits(dec, k);
        memcpy(logits, p, dec->logits_bytes[k]);
        s->api.LiteRtUnlockTensorBuffer(buf);
        int64_t t1 = ee_now_ns(); /* stage time: the models and the logits read-out; then the decision */
        int32_t pred = 0;
        float conf = 0.0f;
        bool probs_ready = false;
        bool fire = ee_decide(dec, k, &dst, &pred, &conf, &probs_ready);
        int64_t t2 = ee_now_ns();
        bool stop = k == last || (fire && !opts->no_early_exit);
        if (stop && !probs_ready) ee_decide_fill_probs(dec, k);
        out->t_stage_ns[k] = t1 - t0;
        out->t_decision_ns[k] = t2 - t1;
        t0 = t2;
        out->exit_logits[k] = logits;
        out->n_stages_run = k + 1;
        out->class_idx = pred;
        out->exit_idx = k;
        out->confidence = conf;
        if (stop) break;
    }
    out->t_total_ns = ee_now_ns() - t_start;
    return EE_OK;
}

static ee_status check_run_args(ee_session *s, const void *input, const ee_run_options *opts, ee_result *out,
                                ee_run_options *resolved) {
    if (s == NULL || input == NULL || out == NULL) return EE_ERR_INVALID_ARG;
    *resolved = opts != NULL ? *opts : ee_run_default_options();
    if (resolved->deadline_us > 0 && s->desc->p99_latency_us == NULL) {
        ee_log(&s->params, EE_LOG_ERROR, "a deadline needs the bundle's anytime table: calibrate it with a device "
               "profile (eecompile calibrate --profile ...) and regenerate the harness");
        return EE_ERR_INVALID_ARG;
    }
    if (resolved->max_exit < -1 || resolved->max_exit >= s->desc->n_stages) {
        ee_log(&s->params, EE_LOG_ERROR, "max_exit %d out of range -1..%d", resolved->max_exit,
               s->desc->n_stages - 1);
        return EE_ERR_INVALID_ARG;
    }
    return EE_OK;
}

/* Integer ids outside the vocabulary would index past the embedding table: refuse them. */
static bool ids_in_range(ee_session *s, const ee_tensor_desc *td, int32_t idx, const void *input, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int64_t v = td->dtype == EE_DTYPE_INT64 ? ((const int64_t *)input)[i] : ((const int32_t *)input)[i];
        if (v < td->range_lo || v > td->range_hi) {
            ee_log(&s->params, EE_LOG_ERROR, "input %d: id %lld at position %zu is outside the vocabulary %lld..%lld",
                   idx, (long long)v, i, (long long)td->range_lo, (long long)td->range_hi);
            return false;
        }
    }
    return true;
}

/* Copy model input i into the first graph's input buffer. */
static ee_status write_input(ee_session *s, int32_t i, const void *src, size_t n_bytes) {
    ee_graph_rt *g0 = &s->graphs[0];
    LiteRtTensorBuffer buf = g0->in_bufs[g0->in_sig[i]];
    void *dst = NULL;
    if (s->api.LiteRtLockTensorBuffer(buf, &dst, kLiteRtTensorBufferLockModeWrite) != kLiteRtStatusOk)
        return EE_ERR_BACKEND;
    memcpy(dst, src, n_bytes);
    s->api.LiteRtUnlockTensorBuffer(buf);
    return EE_OK;
}

ee_status ee_session_run_inputs(ee_session *s, const void *const *inputs, const size_t *n_bytes, int32_t n_inputs,
                                const ee_run_options *opts, ee_result *out) {
    ee_run_options o;
    if (inputs == NULL || n_bytes == NULL) return EE_ERR_INVALID_ARG;
    ee_status es = check_run_args(s, inputs, opts, out, &o);
    if (es != EE_OK) return es;
    const ee_graph_desc *g0 = s->graphs[0].d;
    if (n_inputs != g0->n_inputs) {
        ee_log(&s->params, EE_LOG_ERROR, "%d input(s) given, the model takes %d", n_inputs, g0->n_inputs);
        return EE_ERR_INVALID_ARG;
    }
    for (int32_t i = 0; i < n_inputs; i++) { /* every check before any buffer is written */
        const ee_tensor_desc *td = &g0->inputs[i];
        if (inputs[i] == NULL || n_bytes[i] != td->n_bytes) {
            ee_log(&s->params, EE_LOG_ERROR, "input %d has %zu bytes, the model takes %zu (%s)", i,
                   inputs[i] == NULL ? (size_t)0 : n_bytes[i], td->n_bytes, td->signature_name);
            return EE_ERR_INVALID_ARG;
        }
        if (td->has_range && !ids_in_range(s, td, i, inputs[i], td->n_bytes / ee_dtype_size(td->dtype)))
            return EE_ERR_INVALID_ARG;
    }
    for (int32_t i = 0; i < n_inputs; i++) {
        es = write_input(s, i, inputs[i], n_bytes[i]);
        if (es != EE_OK) return es;
    }
    return run_from_stage0(s, &o, out);
}

ee_status ee_session_run_raw(ee_session *s, const void *input, size_t n_bytes, const ee_run_options *opts,
                             ee_result *out) {
    if (s != NULL && s->graphs[0].d->n_inputs != 1) {
        ee_log(&s->params, EE_LOG_ERROR, "the model takes %d inputs: use ee_session_run_inputs",
               s->graphs[0].d->n_inputs);
        return EE_ERR_INVALID_ARG;
    }
    const void *in[1] = {input};
    size_t nb[1] = {n_bytes};
    return ee_session_run_inputs(s, input == NULL ? NULL : in, nb, 1, opts, out);
}

ee_status ee_session_run_f32(ee_session *s, const float *input, size_t n_floats, const ee_run_options *opts,
                             ee_result *out) {
    ee_run_options o;
    ee_status es = check_run_args(s, input, opts, out, &o);
    if (es != EE_OK) return es;
    const ee_graph_desc *g0 = s->graphs[0].d;
    const ee_tensor_desc *td = &g0->inputs[0];
    if (g0->n_inputs != 1) {
        ee_log(&s->params, EE_LOG_ERROR, "the model takes %d inputs: use ee_session_run_inputs", g0->n_inputs);
        return EE_ERR_INVALID_ARG;
    }
    if (td->dtype == EE_DTYPE_INT32 || td->dtype == EE_DTYPE_INT64) {
        ee_log(&s->params, EE_LOG_ERROR, "the model takes integer ids (%s), not float32: use ee_session_run_raw",
               td->dtype == EE_DTYPE_INT64 ? "int64" : "int32");
        return EE_ERR_INVALID_ARG;
    }
    size_t n_elems = td->n_bytes / ee_dtype_size(td->dtype);
    if (n_floats != n_elems) {
        ee_log(&s->params, EE_LOG_ERROR, "input has %zu x 4 bytes, the bundle's input takes %zu x %zu", n_floats,
               n_elems, ee_dtype_size(td->dtype));
        return EE_ERR_INVALID_ARG;
    }
    for (size_t i = 0; i < n_floats; i++) {
        if (!isfinite(input[i])) {
            ee_log(&s->params, EE_LOG_ERROR, "input element %zu is NaN or inf", i);
            return EE_ERR_INVALID_ARG;
        }
    }
    ee_graph_rt *gr = &s->graphs[0];
    LiteRtTensorBuffer buf = gr->in_bufs[gr->in_sig[0]];
    void *dst = NULL;
    if (s->api.LiteRtLockTensorBuffer(buf, &dst, kLiteRtTensorBufferLockModeWrite) != kLiteRtStatusOk)
        return EE_ERR_BACKEND;
    if (td->dtype == EE_DTYPE_INT8) {
        int8_t *q = dst;
        for (size_t i = 0; i < n_floats; i++)
            q[i] = ee_clamp_i8(ee_round_half_away(input[i] / td->quant.scale) + (float)td->quant.zero_point);
    } else {
        memcpy(dst, input, n_floats * sizeof(float));
    }
    s->api.LiteRtUnlockTensorBuffer(buf);
    return run_from_stage0(s, &o, out);
}
