#include "ee_args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int ee_parse_long(const char *s, long lo, long hi, long *out) {
    if (s == NULL || *s == '\0' || out == NULL) return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int ee_parse_floats(const char *s, float *out, int cap) {
    if (s == NULL || out == NULL || cap <= 0) return -1;
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end = NULL;
        errno = 0;
        float v = strtof(p, &end);
        if (end == p || errno != 0 || !isfinite(v)) return -1;
        if (n == cap) return -1;
        out[n++] = v;
        if (*end == '\0') return n;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

int ee_parse_policy(const char *s, ee_policy *out) {
    static const char *names[] = {"max-prob", "entropy", "margin", "patience"};
    if (s == NULL || out == NULL) return -1;
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (ee_policy)i;
            return 0;
        }
    }
    return -1;
}

int ee_input_file_open(ee_input_file *in, const char *path, size_t sample_bytes) {
    memset(in, 0, sizeof *in);
    in->sample_bytes = sample_bytes;
    if (sample_bytes == 0) {
        snprintf(in->error, sizeof in->error, "sample size is 0");
        return -1;
    }
    in->f = fopen(path, "rb");
    if (in->f == NULL) {
        snprintf(in->error, sizeof in->error, "cannot open: %s", strerror(errno));
        return -1;
    }
    if (fseek(in->f, 0, SEEK_END) != 0) {
        snprintf(in->error, sizeof in->error, "cannot seek");
        ee_input_file_close(in);
        return -1;
    }
    long size = ftell(in->f);
    rewind(in->f);
    if (size < 0 || (size_t)size % sample_bytes != 0 || size == 0) {
        snprintf(in->error, sizeof in->error, "%ld bytes is not a whole number of %zu-byte samples", size,
                 sample_bytes);
        ee_input_file_close(in);
        return -1;
    }
    in->n_samples = (size_t)size / sample_bytes;
    return 0;
}

int ee_input_file_read(ee_input_file *in, void *buf) {
    return fread(buf, 1, in->sample_bytes, in->f) == in->sample_bytes ? 0 : -1;
}

void ee_input_file_close(ee_input_file *in) {
    if (in->f != NULL) fclose(in->f);
    in->f = NULL;
}
