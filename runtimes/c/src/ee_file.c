/*
 * ee_file.c -- model files are read whole and checked (size, FNV-1a 64) before LiteRT sees
 * them: LiteRT does not verify a model it is handed and can crash on a truncated one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee_internal.h"

uint64_t ee_fnv1a64(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static ee_status read_all(FILE *f, size_t n_bytes, void **out) {
    /* LiteRT wants model buffers aligned; 64 bytes covers every host requirement.
     * posix_memalign, not aligned_alloc: the latter exists on Android only from API 28. */
    size_t alloc = (n_bytes + 63) / 64 * 64;
    if (posix_memalign(out, 64, alloc == 0 ? 64 : alloc) != 0) {
        *out = NULL;
        return EE_ERR_NO_MEMORY;
    }
    return fread(*out, 1, n_bytes, f) == n_bytes ? EE_OK : EE_ERR_IO;
}

ee_status ee_read_checked(const ee_session_params *p, const char *path, size_t expect_bytes, uint64_t expect_fnv1a,
                          void **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ee_log(p, EE_LOG_ERROR, "cannot open %s (is ee_session_params.bundle_dir the bundle directory?)", path);
        return EE_ERR_IO;
    }
    ee_status es = EE_OK;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        ee_log(p, EE_LOG_ERROR, "cannot read %s", path);
        es = EE_ERR_IO;
    } else if ((size_t)size != expect_bytes) {
        ee_log(p, EE_LOG_ERROR, "%s has %ld bytes, the bundle description says %zu: truncated or from another "
               "bundle (regenerate the harness for this bundle)", path, size, expect_bytes);
        es = EE_ERR_MODEL;
    } else {
        es = read_all(f, expect_bytes, out);
        if (es == EE_OK && ee_fnv1a64(*out, expect_bytes) != expect_fnv1a) {
            ee_log(p, EE_LOG_ERROR, "%s fails its checksum: corrupt, or from another bundle", path);
            es = EE_ERR_MODEL;
        } else if (es == EE_ERR_IO) {
            ee_log(p, EE_LOG_ERROR, "short read from %s", path);
        }
    }
    fclose(f);
    if (es != EE_OK) {
        free(*out);
        *out = NULL;
    }
    return es;
}
