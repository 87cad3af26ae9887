/*
 * The exit decision maths of the harness: scores from an exit's logits (softmax on int8
 * logits by table look-up, or on float logits) and the policies. No LiteRT here, so it is
 * unit-tested against decisions written by the Python runtime (tests/test_decide.c).
 * Mirrors eecompile/core/policies.py.
 */
#ifndef EE_DECIDE_H
#define EE_DECIDE_H

#include "ee.h"

typedef struct {
    ee_dtype dtype;
    bool has_quant;
    ee_quant quant;
} ee_logits_format;

typedef struct {
    int32_t n_exits;
    int32_t n_classes;
    ee_policy policy;
    float thresholds[EE_MAX_STAGES];
    float log_c;                      /* log(n_classes): the entropy's normaliser */
    bool table[EE_MAX_STAGES];        /* int8 logits with quant params: decide by table look-up */
    /* Per exit, one page-aligned block: exp(-d * scale) for d = qmax - q in 0..255, then the
     * copy of the exit's logits. The decision reads both right after a model run has evicted
     * them; in one page they cost one TLB miss, not two (EfficientNet, 1000 classes: ~0.2 us). */
    float *block[EE_MAX_STAGES];
    float ez_tab[EE_MAX_STAGES][256]; /* exp(z) * z, z = -d * scale: the entropy's terms */
    size_t logits_bytes[EE_MAX_STAGES];
    float *probs;                     /* n_classes: the softmax at the exit taken */
    float *logits_f;                  /* n_classes scratch (float logits) */
    bool has_gates;
    float gates[EE_MAX_STAGES][EE_GATE_SIZE]; /* EE_POLICY_LEARNED: w (p1, margin, entropy, agree), b */
} ee_decider;

/* Patience needs the previous exit's prediction. */
typedef struct {
    int32_t prev_pred;
    int32_t streak;
} ee_decide_state;

/* Allocate the tables for n_exits exits with logits in formats fmt[0..n_exits). On error
 * everything allocated so far is freed. */
ee_status ee_decider_init(ee_decider *d, int32_t n_exits, int32_t n_classes, const ee_logits_format *fmt);
void ee_decider_free(ee_decider *d); /* NULL-safe; the struct itself is the caller's */

/* Where exit k's raw logits must be copied before ee_decide(d, k, ...). */
void *ee_decider_logits(ee_decider *d, int32_t k);

/* Policy and thresholds (n == n_exits or n_exits - 1; the final exit always fires). Checks
 * each threshold against the policy's range (ee_names.h); EE_POLICY_LEARNED needs gates. */
ee_status ee_decider_set_policy(ee_decider *d, ee_policy policy, const float *thresholds, int32_t n);

/* The learned policy's gates: n_exits x EE_GATE_SIZE finite floats (NULL: none). */
ee_status ee_decider_set_gates(ee_decider *d, const float *gates);

ee_decide_state ee_decide_start(void);

/* Does exit k fire? Sets *pred (top-1 class) and *conf (its probability); *probs_ready when
 * d->probs already holds the softmax (float logits). Updates the patience state. */
bool ee_decide(ee_decider *d, int32_t k, ee_decide_state *st, int32_t *pred, float *conf, bool *probs_ready);

/* Fill d->probs with exit k's softmax (int8 logits: from the table). */
void ee_decide_fill_probs(ee_decider *d, int32_t k);

/* Quantization arithmetic, as eecompile/core/quant.py: round half away from zero, clamp. */
float ee_round_half_away(float v);
int8_t ee_clamp_i8(float v);

#endif /* EE_DECIDE_H */
