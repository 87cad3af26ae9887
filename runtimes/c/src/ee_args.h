/*
 * Parsing for the command-line programs (ee_run, ee_profile): numbers, threshold lists,
 * policy names and input files (.npy, whose header states dtype and shape, or raw bytes).
 * Kept apart from the programs so the fuzzer can drive it directly. No errno, no scanf:
 * the same code builds for Android's bionic.
 */
#ifndef EE_ARGS_H
#define EE_ARGS_H

#include <stddef.h>
#include <stdio.h>

#include "ee.h"

/* Strict integer in [lo, hi] (lo > LONG_MIN, hi < LONG_MAX); returns 0 on success. */
int ee_parse_long(const char *s, long lo, long hi, long *out);

/* Strict finite number; returns 0 on success. */
int ee_parse_double(const char *s, double *out);

/* Comma-separated finite floats ("0.9,0.8"); returns how many were parsed (<= cap),
 * or -1 on any malformed, empty or excess item. */
int ee_parse_floats(const char *s, float *out, int cap);

/* A policy name of ee_names.h ("max-prob", ...); returns 0 on success. */
int ee_parse_policy(const char *s, ee_policy *out);

/* What one sample of the model's first input looks like. */
typedef struct {
    ee_dtype dtype;            /* the model input's dtype (int8 for tflite-int8; int32/int64 for token ids) */
    int32_t rank;              /* with the batch axis */
    const int32_t *dims;       /* exported layout (NHWC for images), dims[0] the batch (1) */
    size_t n_elems;            /* elements per sample */
} ee_sample_shape;

/* The sample shape of a model input; its dtype's name ("int64", ...). */
ee_sample_shape ee_sample_shape_of(const ee_tensor_desc *td);
const char *ee_dtype_name(ee_dtype dtype);

typedef struct {
    FILE *f;
    bool npy;            /* a .npy file (else raw bytes) */
    bool f32;            /* the samples are float32 (quantized by the harness), else in the model's dtype */
    size_t sample_bytes; /* bytes per sample in the file */
    size_t n_samples;
    char error[256];     /* why open failed: what is wrong and what to do */
} ee_input_file;

/* Open a file of samples. A path ending in ".npy" is read by its header: dtype float32
 * (quantized by the harness) or the model's own dtype, shape (N, *sample dims). Any other
 * file is raw samples back to back, float32 when raw_f32, else in the model's dtype; its
 * size must be a whole number of samples. Returns 0, or -1 with in->error set. */
int ee_input_file_open(ee_input_file *in, const char *path, const ee_sample_shape *shape, bool raw_f32);
int ee_input_file_read(ee_input_file *in, void *buf);
void ee_input_file_close(ee_input_file *in);

/* Parse a .npy header (the bytes after the 10- or 12-byte preamble): dtype code and shape.
 * Returns 0 on success. Exposed for the fuzzer. */
int ee_npy_parse_header(const char *hdr, size_t n, char *descr, size_t descr_cap, long *shape, int *rank, int cap);

/* The samples of every model input, read whole. INPUTS names one file per model input,
 * comma-separated in the model's order ("ids.npy,mask.npy"; one file for a one-input model),
 * each read as ee_input_file_open reads it; all must hold the same number of samples.
 * raw_f32 (--f32) applies to a one-input model only. */
typedef struct {
    int32_t n_inputs;
    int32_t n_inputs_hint; /* while loading: the model's number of inputs */
    size_t n_samples;
    bool f32;  /* input 0 given as float32 (quantized by the harness): run with ee_session_run_f32 */
    bool npy;  /* every file is a .npy */
    size_t sample_bytes[EE_MAX_GRAPH_IO];
    unsigned char *data[EE_MAX_GRAPH_IO];
    char error[384]; /* why loading failed: which file, what is wrong, what to do */
} ee_inputs;

int ee_inputs_load(ee_inputs *in, const char *paths, const ee_graph_desc *first_graph, bool raw_f32);
void ee_inputs_free(ee_inputs *in);

/* Run sample k (modulo the number of samples) through the session. */
ee_status ee_inputs_run(ee_session *s, const ee_inputs *in, size_t k, const ee_run_options *opts, ee_result *out);

#endif /* EE_ARGS_H */
