/*
 * ee_jni.c -- the JNI side of dev.eecompile.EeHarness: one ee_session per Java object.
 *
 * Only primitive arrays cross the boundary (no FindClass/GetFieldID on result objects): Java
 * passes the arrays a run fills and wraps them in EeHarness.Result. The same file builds for
 * Android (NDK via Gradle, or clang without an NDK: eecompile/android/build.py) and for the
 * host, where a plain JVM loads it (eecompile/android/hostcheck.py, run by tests/test_android.py
 * with -Xcheck:jni).
 *
 * Errors: the harness's messages go to a per-session buffer (and to logcat on Android) and
 * come back to Java as the message of the exception the failing call throws. A JNI call that
 * fails (an array or string that cannot be pinned) leaves its OutOfMemoryError pending, and
 * the function returns at once. Strings handed to the JVM are Modified UTF-8: describe()'s JSON
 * is pure ASCII (every other character as a \u escape) and exception messages keep only the
 * UTF-8 sequences that are the same in Modified UTF-8 (others become '?').
 */
#include <jni.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ee.h"
#include "ee_bundle_gen.h"

#ifdef __ANDROID__
/* declared here rather than through <android/log.h>: liblog exports it from API 3 */
int __android_log_write(int prio, const char *tag, const char *text);
#define EE_JNI_LOG(level, msg) __android_log_write((level) >= EE_LOG_ERROR ? 6 : (level) >= EE_LOG_WARN ? 5 : 4, \
                                                   "eecompile", (msg))
#else
#define EE_JNI_LOG(level, msg) ((void)(level), (void)(msg))
#endif

typedef struct {
    ee_session *session;
    char last_error[512];
} jni_session;

static void log_to_buffer(ee_log_level level, const char *msg, void *user) {
    jni_session *js = (jni_session *)user;
    EE_JNI_LOG(level, msg);
    if (level >= EE_LOG_WARN) snprintf(js->last_error, sizeof js->last_error, "%s", msg);
}

/* ---- UTF-8 and Modified UTF-8 --------------------------------------------------------- */
#define UTF8_BAD 0xffffffffu

/* The code point at *s (a NUL-terminated UTF-8 string), *s moved past it; UTF8_BAD for a
 * malformed, overlong or surrogate sequence, of which one byte is consumed. */
static uint32_t utf8_next(const unsigned char **s) {
    static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
    const unsigned char *p = *s;
    const uint32_t c = p[0];
    const int n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
    *s = p + 1;
    if (n < 0) return UTF8_BAD;
    uint32_t cp = c & (0x7fu >> n);
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xc0) != 0x80) return UTF8_BAD; /* also stops at the terminating NUL */
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return UTF8_BAD;
    *s = p + n + 1;
    return cp;
}

/* In place: what NewStringUTF/ThrowNew accept. Standard UTF-8 and Modified UTF-8 agree on
 * U+0001..U+FFFF; four-byte sequences (U+10000 and up) and malformed bytes become '?'. */
static void mutf8_clean(char *s) {
    unsigned char *w = (unsigned char *)s;
    const unsigned char *r = (const unsigned char *)s;
    while (*r) {
        const unsigned char *start = r;
        const uint32_t cp = utf8_next(&r);
        if (cp == UTF8_BAD || cp >= 0x10000) {
            *w++ = '?';
        } else {
            while (start < r) *w++ = *start++;
        }
    }
    *w = '\0';
}

/* ---- exceptions ------------------------------------------------------------------------- */
static void throw_class(JNIEnv *env, const char *cls, const char *msg) {
    if ((*env)->ExceptionCheck(env)) return; /* one is pending (an OutOfMemoryError, say): keep it */
    jclass c = (*env)->FindClass(env, cls);
    if (c != NULL) (*env)->ThrowNew(env, c, msg);
}

static void throw_status(JNIEnv *env, ee_status st, const char *detail) {
    if ((*env)->ExceptionCheck(env)) return;
    const char *cls = st == EE_ERR_INVALID_ARG ? "java/lang/IllegalArgumentException"
                      : st == EE_ERR_NO_MEMORY ? "java/lang/OutOfMemoryError"
                                               : "java/lang/IllegalStateException";
    char msg[768];
    snprintf(msg, sizeof msg, "%s%s%s", ee_status_str(st), detail && detail[0] ? ": " : "", detail ? detail : "");
    mutf8_clean(msg);
    throw_class(env, cls, msg);
}

static jni_session *from_handle(JNIEnv *env, jlong h) {
    jni_session *js = (jni_session *)(intptr_t)h;
    if (js == NULL) throw_status(env, EE_ERR_INVALID_ARG, "the harness is closed");
    return js;
}

/* ---- the compiled-in bundle, as JSON ------------------------------------------------- */
typedef struct {
    char *buf;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->buf == NULL) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *nb = realloc(b->buf, cap);
        if (nb == NULL) {
            free(b->buf);
            b->buf = NULL;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_fmt(sbuf *b, const char *fmt, double v) {
    char tmp[64];
    int n = snprintf(tmp, sizeof tmp, fmt, v);
    if (n > 0) sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string in ASCII: printable ASCII as is (with " and \ escaped), every other code point
 * as \uXXXX (a surrogate pair above U+FFFF), a malformed UTF-8 byte as U+FFFD. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_str(b, "\"");
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        uint32_t cp = utf8_next(&p);
        char esc[16];
        if (cp == UTF8_BAD) cp = 0xfffd;
        if (cp == '"' || cp == '\\') {
            esc[0] = '\\';
            esc[1] = (char)cp;
            sb_add(b, esc, 2);
        } else if (cp >= 0x20 && cp < 0x7f) {
            esc[0] = (char)cp;
            sb_add(b, esc, 1);
        } else if (cp < 0x10000) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
            sb_add(b, esc, 6);
        } else {
            cp -= 0x10000;
            snprintf(esc, sizeof esc, "\\u%04x\\u%04x", (unsigned)(0xd800 + (cp >> 10)),
                     (unsigned)(0xdc00 + (cp & 0x3ff)));
            sb_add(b, esc, 12);
        }
    }
    sb_str(b, "\"");
}

static const ee_tensor_desc *logits_desc(int32_t stage) {
    const ee_stage_desc *s = &EE_BUNDLE.stages[stage];
    const ee_graph_desc *g = &s->graphs[s->n_graphs - 1];
    for (int32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i].role == EE_ROLE_LOGITS) return &g->outputs[i];
    return NULL;
}

JNIEXPORT jstring JNICALL Java_dev_eecompile_EeHarness_describe(JNIEnv *env, jclass cls) {
    const ee_bundle_desc *d = &EE_BUNDLE;
    const ee_tensor_desc *in = &d->stages[0].graphs[0].inputs[0];
    sbuf b = {malloc(1024), 0, 1024};
    if (b.buf) b.buf[0] = '\0';
    sb_str(&b, "{\"abi_version\": ");
    sb_fmt(&b, "%.0f", (double)d->abi_version);
    sb_str(&b, ", \"name\": ");
    sb_json_str(&b, d->name);
    sb_str(&b, ", \"target\": ");
    sb_json_str(&b, d->target);
    sb_str(&b, ", \"n_stages\": ");
    sb_fmt(&b, "%.0f", (double)d->n_stages);
    sb_str(&b, ", \"n_classes\": ");
    sb_fmt(&b, "%.0f", (double)d->n_classes);
    sb_str(&b, ", \"policy\": ");
    sb_fmt(&b, "%.0f", (double)d->policy);
    sb_str(&b, ", \"decision_hash\": ");
    sb_json_str(&b, d->decision_hash);
    sb_str(&b, ", \"thresholds\": [");
    for (int32_t k = 0; k < d->n_stages; k++) sb_fmt(&b, k ? ", %.9g" : "%.9g", (double)d->thresholds[k]);
    sb_str(&b, "], \"kept\": [");
    for (int32_t k = 0; k < d->n_stages; k++) sb_str(&b, d->kept[k] ? (k ? ", true" : "true") : (k ? ", false" : "false"));
    sb_str(&b, "], \"class_names\": [");
    for (int32_t c = 0; c < d->n_classes; c++) {
        if (c) sb_str(&b, ", ");
        sb_json_str(&b, d->class_names[c]);
    }
    sb_str(&b, "], \"input\": {\"dtype\": ");
    sb_json_str(&b, in->dtype == EE_DTYPE_INT8 ? "int8" : "float32");
    sb_str(&b, ", \"shape\": [");
    for (int32_t i = 0; i < in->rank; i++) sb_fmt(&b, i ? ", %.0f" : "%.0f", (double)in->dims[i]);
    sb_str(&b, "], \"bytes\": ");
    sb_fmt(&b, "%.0f", (double)in->n_bytes);
    if (in->has_quant) {
        sb_str(&b, ", \"scale\": ");
        sb_fmt(&b, "%.9g", (double)in->quant.scale);
        sb_str(&b, ", \"zero_point\": ");
        sb_fmt(&b, "%.0f", (double)in->quant.zero_point);
    }
    sb_str(&b, "}, \"logits_dtype\": ");
    const ee_tensor_desc *lg = logits_desc(0);
    sb_json_str(&b, lg != NULL && lg->dtype == EE_DTYPE_INT8 ? "int8" : "float32");
    sb_str(&b, "}");
    if (b.buf == NULL) {
        throw_class(env, "java/lang/OutOfMemoryError", "describe(): no memory for the bundle's description");
        return NULL;
    }
    jstring out = (*env)->NewStringUTF(env, b.buf); /* ASCII: valid Modified UTF-8; NULL: OOM pending */
    free(b.buf);
    return out;
}

/* ---- sessions ------------------------------------------------------------------------- */
JNIEXPORT jlong JNICALL Java_dev_eecompile_EeHarness_nativeCreate(JNIEnv *env, jclass cls, jstring bundle_dir,
                                                                   jstring litert_path, jint threads) {
    if (bundle_dir == NULL) {
        throw_status(env, EE_ERR_INVALID_ARG, "bundleDir is null");
        return 0;
    }
    jni_session *js = calloc(1, sizeof *js);
    if (js == NULL) {
        throw_status(env, EE_ERR_NO_MEMORY, NULL);
        return 0;
    }
    const char *dir = (*env)->GetStringUTFChars(env, bundle_dir, NULL);
    if (dir == NULL) { /* OutOfMemoryError pending */
        free(js);
        return 0;
    }
    const char *lib = NULL;
    if (litert_path != NULL && (lib = (*env)->GetStringUTFChars(env, litert_path, NULL)) == NULL) {
        (*env)->ReleaseStringUTFChars(env, bundle_dir, dir);
        free(js);
        return 0;
    }
    ee_session_params p = ee_session_default_params();
    p.bundle_dir = dir;
    p.litert_path = lib;
    p.n_threads = threads > 0 ? threads : 1;
    p.log_fn = log_to_buffer;
    p.log_user_data = js;
    ee_status st = ee_session_create(&EE_BUNDLE, &p, &js->session);
    (*env)->ReleaseStringUTFChars(env, bundle_dir, dir);
    if (lib) (*env)->ReleaseStringUTFChars(env, litert_path, lib);
    if (st != EE_OK) {
        throw_status(env, st, js->last_error);
        free(js);
        return 0;
    }
    return (jlong)(intptr_t)js;
}

JNIEXPORT void JNICALL Java_dev_eecompile_EeHarness_nativeFree(JNIEnv *env, jclass cls, jlong h) {
    jni_session *js = (jni_session *)(intptr_t)h;
    if (js == NULL) return;
    ee_session_free(js->session);
    free(js);
}

JNIEXPORT jint JNICALL Java_dev_eecompile_EeHarness_nativeInputBytes(JNIEnv *env, jclass cls, jlong h) {
    jni_session *js = from_handle(env, h);
    return js ? (jint)ee_session_input_bytes(js->session) : 0;
}

JNIEXPORT void JNICALL Java_dev_eecompile_EeHarness_nativeSetPolicy(JNIEnv *env, jclass cls, jlong h, jint policy,
                                                                    jfloatArray thresholds) {
    jni_session *js = from_handle(env, h);
    if (js == NULL) return;
    if (thresholds == NULL) {
        throw_status(env, EE_ERR_INVALID_ARG, "thresholds is null");
        return;
    }
    jsize n = (*env)->GetArrayLength(env, thresholds);
    jfloat *t = (*env)->GetFloatArrayElements(env, thresholds, NULL);
    if (t == NULL) return; /* OutOfMemoryError pending */
    js->last_error[0] = '\0';
    ee_status st = ee_session_set_policy(js->session, (ee_policy)policy, t, (int32_t)n);
    (*env)->ReleaseFloatArrayElements(env, thresholds, t, JNI_ABORT);
    if (st != EE_OK) throw_status(env, st, js->last_error);
}

JNIEXPORT void JNICALL Java_dev_eecompile_EeHarness_nativeSetKept(JNIEnv *env, jclass cls, jlong h,
                                                                  jbooleanArray kept) {
    jni_session *js = from_handle(env, h);
    if (js == NULL) return;
    if (kept == NULL) {
        throw_status(env, EE_ERR_INVALID_ARG, "kept is null");
        return;
    }
    jsize n = (*env)->GetArrayLength(env, kept);
    bool k[EE_MAX_STAGES];
    if (n > EE_MAX_STAGES) {
        throw_status(env, EE_ERR_INVALID_ARG, "more entries than stages");
        return;
    }
    jboolean *v = (*env)->GetBooleanArrayElements(env, kept, NULL);
    if (v == NULL) return; /* OutOfMemoryError pending */
    for (jsize i = 0; i < n; i++) k[i] = v[i] != JNI_FALSE;
    (*env)->ReleaseBooleanArrayElements(env, kept, v, JNI_ABORT);
    js->last_error[0] = '\0';
    ee_status st = ee_session_set_kept(js->session, k, (int32_t)n);
    if (st != EE_OK) throw_status(env, st, js->last_error);
}

/* The max softmax probability of one exit's raw logits (dequantized when int8). */
static float exit_confidence(int32_t stage, const void *raw) {
    const ee_tensor_desc *lg = logits_desc(stage);
    int32_t n = EE_BUNDLE.n_classes;
    if (lg == NULL || raw == NULL) return NAN;
    float v[4096];
    if (n > 4096) return NAN;
    for (int32_t c = 0; c < n; c++)
        v[c] = lg->dtype == EE_DTYPE_INT8 ? lg->quant.scale * (float)(((const int8_t *)raw)[c] - lg->quant.zero_point)
                                          : ((const float *)raw)[c];
    float mx = v[0], sum = 0.0f;
    for (int32_t c = 1; c < n; c++) mx = v[c] > mx ? v[c] : mx;
    for (int32_t c = 0; c < n; c++) sum += expf(v[c] - mx);
    return 1.0f / sum;
}

/*
 * One run. ints: [class, exit, stages_run]; floats: [confidence, probs (n_classes),
 * exit confidence (n_stages)]; times: [total_ns, stage_ns (n_stages)]; logits: n_stages rows of
 * n_classes * element-size bytes (zero where the exit was not run). Exactly one of raw/f32.
 */
JNIEXPORT void JNICALL Java_dev_eecompile_EeHarness_nativeRun(JNIEnv *env, jclass cls, jlong h, jbyteArray raw,
                                                              jfloatArray f32, jint max_exit, jlong deadline_us,
                                                              jintArray ints, jfloatArray floats, jlongArray times,
                                                              jbyteArray logits) {
    jni_session *js = from_handle(env, h);
    if (js == NULL) return;
    const int32_t ns = EE_BUNDLE.n_stages, nc = EE_BUNDLE.n_classes;
    const ee_tensor_desc *lg = logits_desc(0);
    const size_t esize = lg != NULL && lg->dtype == EE_DTYPE_INT8 ? 1 : 4;
    if ((raw == NULL) == (f32 == NULL) || ints == NULL || floats == NULL || times == NULL || logits == NULL ||
        (*env)->GetArrayLength(env, ints) < 3 || (*env)->GetArrayLength(env, floats) < 1 + nc + ns ||
        (*env)->GetArrayLength(env, times) < 1 + ns || (size_t)(*env)->GetArrayLength(env, logits) < ns * nc * esize) {
        throw_status(env, EE_ERR_INVALID_ARG, "output arrays too small, or not exactly one input");
        return;
    }
    if (nc > 4096) {
        throw_status(env, EE_ERR_INVALID_ARG, "more than 4096 classes");
        return;
    }
    ee_run_options o = ee_run_default_options();
    o.max_exit = max_exit;
    o.deadline_us = deadline_us;
    ee_result r;
    ee_status st;
    js->last_error[0] = '\0';
    if (raw != NULL) {
        jsize n = (*env)->GetArrayLength(env, raw);
        jbyte *in = (*env)->GetByteArrayElements(env, raw, NULL);
        if (in == NULL) return; /* OutOfMemoryError pending */
        st = ee_session_run_raw(js->session, in, (size_t)n, &o, &r);
        (*env)->ReleaseByteArrayElements(env, raw, in, JNI_ABORT);
    } else {
        jsize n = (*env)->GetArrayLength(env, f32);
        jfloat *in = (*env)->GetFloatArrayElements(env, f32, NULL);
        if (in == NULL) return;
        st = ee_session_run_f32(js->session, in, (size_t)n, &o, &r);
        (*env)->ReleaseFloatArrayElements(env, f32, in, JNI_ABORT);
    }
    if (st != EE_OK) {
        throw_status(env, st, js->last_error);
        return;
    }
    jint iv[3] = {r.class_idx, r.exit_idx, r.n_stages_run};
    (*env)->SetIntArrayRegion(env, ints, 0, 3, iv);
    jfloat fv[1 + 4096 + EE_MAX_STAGES];
    fv[0] = r.confidence;
    memcpy(fv + 1, r.probs, (size_t)nc * sizeof(float));
    jlong tv[1 + EE_MAX_STAGES];
    tv[0] = r.t_total_ns;
    for (int32_t k = 0; k < ns; k++) {
        fv[1 + nc + k] = k < r.n_stages_run ? exit_confidence(k, r.exit_logits[k]) : NAN;
        tv[1 + k] = k < r.n_stages_run ? r.t_stage_ns[k] : 0;
        jbyte row[4096 * 4];
        if (k < r.n_stages_run && r.exit_logits[k] != NULL) memcpy(row, r.exit_logits[k], (size_t)nc * esize);
        else memset(row, 0, (size_t)nc * esize);
        (*env)->SetByteArrayRegion(env, logits, (jsize)((size_t)k * nc * esize), (jsize)((size_t)nc * esize), row);
    }
    (*env)->SetFloatArrayRegion(env, floats, 0, 1 + nc + ns, fv);
    (*env)->SetLongArrayRegion(env, times, 0, 1 + ns, tv);
}
