#include "ee_args.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ee_decide.h"
#include "ee_names.h"

int ee_parse_long(const char *s, long lo, long hi, long *out) {
    if (s == NULL || *s == '\0' || out == NULL) return -1;
    char *end = NULL;
    long v = strtol(s, &end, 10); /* overflow gives LONG_MIN/LONG_MAX, outside [lo, hi] */
    if (end == s || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int ee_parse_double(const char *s, double *out) {
    if (s == NULL || *s == '\0' || out == NULL) return -1;
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int ee_parse_floats(const char *s, float *out, int cap) {
    if (s == NULL || out == NULL || cap <= 0) return -1;
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end = NULL;
        float v = strtof(p, &end); /* overflow gives +-HUGE_VALF: not finite */
        if (end == p || !isfinite(v)) return -1;
        if (n == cap) return -1;
        out[n++] = v;
        if (*end == '\0') return n;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

int ee_parse_policy(const char *s, ee_policy *out) {
    if (s == NULL || out == NULL) return -1;
    for (int i = 0; i < EE_N_POLICIES; i++) {
        if (strcmp(s, ee_policy_names[i]) == 0) {
            *out = (ee_policy)i;
            return 0;
        }
    }
    return -1;
}

/* ---- .npy -------------------------------------------------------------------------------- */

/* The value after 'key': in a numpy header dict, e.g. "'descr': '<f4', 'fortran_order': False, ...". */
static const char *npy_value(const char *hdr, const char *key) {
    const char *p = strstr(hdr, key);
    if (p == NULL) return NULL;
    p = strchr(p + strlen(key), ':');
    if (p == NULL) return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

int ee_npy_parse_header(const char *hdr, size_t n, char *descr, size_t descr_cap, long *shape, int *rank, int cap) {
    char buf[1024];
    if (n == 0 || n >= sizeof buf || descr_cap < 2) return -1;
    memcpy(buf, hdr, n);
    buf[n] = '\0';
    const char *d = npy_value(buf, "'descr'");
    if (d == NULL || *d != '\'') return -1;
    d++;
    size_t len = 0;
    while (d[len] != '\0' && d[len] != '\'' && len + 1 < descr_cap) len++;
    if (d[len] != '\'') return -1;
    memcpy(descr, d, len);
    descr[len] = '\0';
    const char *fo = npy_value(buf, "'fortran_order'");
    if (fo == NULL || strncmp(fo, "False", 5) != 0) return -1;
    const char *sh = npy_value(buf, "'shape'");
    if (sh == NULL || *sh != '(') return -1;
    sh++;
    *rank = 0;
    for (;;) {
        while (*sh == ' ' || *sh == ',') sh++;
        if (*sh == ')') return 0;
        char *end = NULL;
        long v = strtol(sh, &end, 10);
        if (end == sh || v < 0 || v > (1L << 40) || *rank == cap) return -1;
        shape[(*rank)++] = v;
        sh = end;
        while (*sh == 'L') sh++; /* numpy 1 on some platforms wrote 3L */
        if (*sh != ',' && *sh != ')' && *sh != ' ') return -1;
    }
}

static void set_error(ee_input_file *in, const char *what) {
    snprintf(in->error, sizeof in->error, "%s", what);
}

static int open_npy(ee_input_file *in, const ee_sample_shape *shape) {
    unsigned char pre[12];
    if (fread(pre, 1, 10, in->f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        snprintf(in->error, sizeof in->error, "not a .npy file (no numpy header); write inputs with numpy.save");
        return -1;
    }
    size_t hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) { /* version 2/3: 4-byte header length */
        if (fread(pre + 10, 1, 2, in->f) != 2) return set_error(in, "truncated .npy header"), -1;
        hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    char hdr[1024], descr[16];
    long dims[EE_MAX_RANK + 1];
    int rank = 0;
    if (hlen >= sizeof hdr || fread(hdr, 1, hlen, in->f) != hlen ||
        ee_npy_parse_header(hdr, hlen, descr, sizeof descr, dims, &rank, EE_MAX_RANK + 1) != 0) {
        set_error(in, "unreadable .npy header (C order, a plain dtype and a shape are needed)");
        return -1;
    }
    bool ids = shape->dtype == EE_DTYPE_INT32 || shape->dtype == EE_DTYPE_INT64;
    bool is_f32 = !ids && strcmp(descr, "<f4") == 0;
    bool own = strcmp(descr, shape->dtype == EE_DTYPE_INT8 ? "|i1" : shape->dtype == EE_DTYPE_INT32 ? "<i4"
                                : shape->dtype == EE_DTYPE_INT64 ? "<i8" : "") == 0;
    if (ids && !own) {
        snprintf(in->error, sizeof in->error, "dtype %s; this model takes token ids as %s (numpy %s): "
                 "np.save(path, ids.astype(np.%s))", descr, ee_dtype_name(shape->dtype),
                 shape->dtype == EE_DTYPE_INT64 ? "<i8" : "<i4", ee_dtype_name(shape->dtype));
        return -1;
    }
    if (!is_f32 && !own) {
        snprintf(in->error, sizeof in->error, "dtype %s; give float32 (the harness quantizes it)%s", descr,
                 shape->dtype == EE_DTYPE_INT8 ? " or int8 already quantized with the input's scale" : "");
        return -1;
    }
    /* shape: (N, *sample dims) in the model's exported layout */
    bool ok = rank == shape->rank;
    for (int i = 1; ok && i < rank; i++) ok = dims[i] == shape->dims[i];
    if (!ok) {
        char want[96] = "(N", got[96] = "(";
        for (int i = 1; i < shape->rank; i++) {
            size_t u = strlen(want);
            snprintf(want + u, sizeof want - u, ", %d", (int)shape->dims[i]);
        }
        for (int i = 0; i < rank; i++) {
            size_t u = strlen(got);
            snprintf(got + u, sizeof got - u, "%s%ld", i ? ", " : "", dims[i]);
        }
        snprintf(in->error, sizeof in->error, "shape %s), but the model takes %s) in its own layout (NHWC for "
                 "images: transpose NCHW data with x.transpose(0, 2, 3, 1))", got, want);
        return -1;
    }
    in->npy = true;
    in->f32 = is_f32;
    in->n_samples = (size_t)dims[0];
    in->sample_bytes = shape->n_elems * (is_f32 ? 4 : ee_dtype_size(shape->dtype));
    long pos = ftell(in->f);
    if (fseek(in->f, 0, SEEK_END) != 0) return set_error(in, "cannot seek"), -1;
    long size = ftell(in->f);
    if (pos < 0 || size < pos || (size_t)(size - pos) != in->n_samples * in->sample_bytes ||
        fseek(in->f, pos, SEEK_SET) != 0) {
        snprintf(in->error, sizeof in->error, "truncated: its header promises %zu samples", in->n_samples);
        return -1;
    }
    if (in->n_samples == 0) return set_error(in, "the .npy file holds no samples"), -1;
    return 0;
}

static int open_raw(ee_input_file *in, const ee_sample_shape *shape, bool raw_f32) {
    bool ids = shape->dtype == EE_DTYPE_INT32 || shape->dtype == EE_DTYPE_INT64;
    if (ids && raw_f32) {
        snprintf(in->error, sizeof in->error, "--f32 given, but this model takes token ids (%s), not floats",
                 ee_dtype_name(shape->dtype));
        return -1;
    }
    size_t elem = raw_f32 ? 4 : ee_dtype_size(shape->dtype);
    in->f32 = raw_f32 || shape->dtype == EE_DTYPE_FLOAT32;
    in->sample_bytes = shape->n_elems * elem;
    if (fseek(in->f, 0, SEEK_END) != 0) return set_error(in, "cannot seek"), -1;
    long size = ftell(in->f);
    rewind(in->f);
    if (size <= 0 || (size_t)size % in->sample_bytes != 0) {
        snprintf(in->error, sizeof in->error, "%ld bytes is not a whole number of %zu-byte samples (%zu %s "
                 "elements each); give a .npy file, whose header states dtype and shape", size, in->sample_bytes,
                 shape->n_elems, in->f32 ? "float32" : ee_dtype_name(shape->dtype));
        return -1;
    }
    in->n_samples = (size_t)size / in->sample_bytes;
    return 0;
}

const char *ee_dtype_name(ee_dtype dtype) {
    switch (dtype) {
    case EE_DTYPE_FLOAT32: return "float32";
    case EE_DTYPE_INT8: return "int8";
    case EE_DTYPE_INT32: return "int32";
    case EE_DTYPE_INT64: return "int64";
    }
    return "unknown";
}

ee_sample_shape ee_sample_shape_of(const ee_tensor_desc *td) {
    size_t elem = ee_dtype_size(td->dtype);
    ee_sample_shape sh = {td->dtype, td->rank, td->dims, elem ? td->n_bytes / elem : 0};
    return sh;
}

int ee_input_file_open(ee_input_file *in, const char *path, const ee_sample_shape *shape, bool raw_f32) {
    memset(in, 0, sizeof *in);
    if (shape == NULL || shape->n_elems == 0 || shape->rank < 1 || shape->rank > EE_MAX_RANK) {
        set_error(in, "the model's input has no elements");
        return -1;
    }
    in->f = fopen(path, "rb");
    if (in->f == NULL) {
        snprintf(in->error, sizeof in->error, "cannot open: no such file or no permission");
        return -1;
    }
    size_t n = strlen(path);
    int rc = n > 4 && strcmp(path + n - 4, ".npy") == 0 ? open_npy(in, shape) : open_raw(in, shape, raw_f32);
    if (rc != 0) ee_input_file_close(in);
    return rc;
}

int ee_input_file_read(ee_input_file *in, void *buf) {
    return fread(buf, 1, in->sample_bytes, in->f) == in->sample_bytes ? 0 : -1;
}

void ee_input_file_close(ee_input_file *in) {
    if (in->f != NULL) fclose(in->f);
    in->f = NULL;
}

void ee_inputs_free(ee_inputs *in) {
    for (int32_t i = 0; i < EE_MAX_GRAPH_IO; i++) {
        free(in->data[i]);
        in->data[i] = NULL;
    }
}

static int load_one(ee_inputs *in, int32_t i, const char *path, const ee_tensor_desc *td, bool raw_f32) {
    ee_sample_shape shape = ee_sample_shape_of(td);
    ee_input_file f;
    if (ee_input_file_open(&f, path, &shape, raw_f32) != 0) {
        snprintf(in->error, sizeof in->error, "%s: %s", path, f.error);
        return -1;
    }
    if (i > 0 && f.n_samples != in->n_samples) {
        snprintf(in->error, sizeof in->error, "%s holds %zu samples, the first input %zu: give every input the "
                 "same samples", path, f.n_samples, in->n_samples);
        ee_input_file_close(&f);
        return -1;
    }
    in->n_samples = f.n_samples;
    in->sample_bytes[i] = f.sample_bytes;
    in->npy = in->npy && f.npy;
    in->data[i] = malloc(f.n_samples * f.sample_bytes);
    for (size_t k = 0; in->data[i] != NULL && k < f.n_samples; k++) {
        if (ee_input_file_read(&f, in->data[i] + k * f.sample_bytes) != 0) {
            snprintf(in->error, sizeof in->error, "%s: short read at sample %zu", path, k);
            ee_input_file_close(&f);
            return -1;
        }
    }
    ee_input_file_close(&f);
    if (in->data[i] == NULL) {
        snprintf(in->error, sizeof in->error, "%s: out of memory", path);
        return -1;
    }
    if (!f.f32 || td->dtype == EE_DTYPE_FLOAT32) return 0;
    if (raw_f32 || in->n_inputs_hint == 1) { /* a one-input model: ee_session_run_f32 quantizes it */
        in->f32 = true;
        return 0;
    }
    /* float32 given for an int8 input of a several-input model: quantize here, as run_f32 would */
    size_t n = f.n_samples * shape.n_elems;
    const float *x = (const float *)in->data[i];
    int8_t *q = (int8_t *)in->data[i]; /* in place: q[j] is written after x[j] is read */
    for (size_t j = 0; j < n; j++) {
        if (!isfinite(x[j])) {
            snprintf(in->error, sizeof in->error, "%s: element %zu is NaN or inf", path, j);
            return -1;
        }
        q[j] = ee_clamp_i8(ee_round_half_away(x[j] / td->quant.scale) + (float)td->quant.zero_point);
    }
    in->sample_bytes[i] = shape.n_elems;
    return 0;
}

int ee_inputs_load(ee_inputs *in, const char *paths, const ee_graph_desc *first_graph, bool raw_f32) {
    memset(in, 0, sizeof *in);
    in->npy = true;
    int32_t want = first_graph->n_inputs;
    in->n_inputs_hint = want;
    if (raw_f32 && want > 1) {
        snprintf(in->error, sizeof in->error, "--f32 applies to a one-input model; this one takes %d inputs "
                 "(give .npy files: their headers state each input's dtype)", want);
        return -1;
    }
    char buf[4096];
    if (strlen(paths) >= sizeof buf) {
        snprintf(in->error, sizeof in->error, "INPUTS is longer than %zu characters", sizeof buf - 1);
        return -1;
    }
    memcpy(buf, paths, strlen(paths) + 1);
    int32_t n = 0;
    for (char *p = buf, *next; p != NULL; p = next, n++) {
        next = strchr(p, ',');
        if (next != NULL) *next++ = '\0';
        if (n >= want) {
            n = want + 1;
            break;
        }
        if (*p == '\0' || load_one(in, n, p, &first_graph->inputs[n], raw_f32 && want == 1) != 0) {
            if (*p == '\0') snprintf(in->error, sizeof in->error, "INPUTS has an empty file name");
            ee_inputs_free(in);
            return -1;
        }
    }
    if (n != want) {
        snprintf(in->error, sizeof in->error, "%s file(s) given, the model takes %d inputs: give one file per "
                 "input, comma-separated in the model's order (e.g. ids.npy,mask.npy)", n > want ? "too many" :
                 "too few", want);
        ee_inputs_free(in);
        return -1;
    }
    in->n_inputs = want;
    return 0;
}

ee_status ee_inputs_run(ee_session *s, const ee_inputs *in, size_t k, const ee_run_options *opts, ee_result *out) {
    size_t j = k % in->n_samples;
    if (in->f32)
        return ee_session_run_f32(s, (const float *)(in->data[0] + j * in->sample_bytes[0]),
                                  in->sample_bytes[0] / sizeof(float), opts, out);
    const void *ptrs[EE_MAX_GRAPH_IO];
    for (int32_t i = 0; i < in->n_inputs; i++) ptrs[i] = in->data[i] + j * in->sample_bytes[i];
    return ee_session_run_inputs(s, ptrs, in->sample_bytes, in->n_inputs, opts, out);
}
