#include "ee_args.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
