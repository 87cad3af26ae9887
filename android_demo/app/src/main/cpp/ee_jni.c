/*
 * ee_jni.c -- the JNI side of dev.eecompile.EeHarness: one ee_session per Java object.
 *
 * Only primitive arrays cross the boundary (no FindClass/GetFieldID on result objects): Java
 * passes the arrays a run fills and wraps them in EeHarness.Result. The same file builds for
 * Android (NDK via Gradle, or clang without an NDK: eecompile/android/build.py) and for the
 * host, where a plain JVM loads it (tests/test_android_jni.py).
 *
 * Errors: the harness's messages go to a per-session buffer (and to logcat on Android) and
 * come back to Java as the message of the exception the failing call throws.
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

static void throw_status(JNIEnv *env, ee_status st, const char *detail) {
    const char *cls = st == EE_ERR_INVALID_ARG ? "java/lang/IllegalArgumentException" : "java/lang/IllegalStateException";
    char msg[768];
    snprintf(msg, sizeof msg, "%s%s%s", ee_status_str(st), detail && detail[0] ? ": " : "", detail ? detail : "");
    jclass c = (*env)->FindClass(env, cls);
    if (c != NULL) (*env)->ThrowNew(env, c, msg);
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

static void sb_json_str(sbuf *b, const char *s) {
    sb_str(b, "\"");
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            sb_add(b, esc, 2);
        } else if (*c < 0x20 || *c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            sb_add(b, esc, 6);
        } else {
            sb_add(b, (const char *)c, 1);
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
    if (b.buf == NULL) return NULL; /* OutOfMemoryError is pending */
    jstring out = (*env)->NewStringUTF(env, b.buf);
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
    const char *lib = litert_path ? (*env)->GetStringUTFChars(env, litert_path, NULL) : NULL;
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
    ee_run_options o = ee_run_default_options();
    o.max_exit = max_exit;
    o.deadline_us = deadline_us;
    ee_result r;
    ee_status st;
    js->last_error[0] = '\0';
    if (raw != NULL) {
        jsize n = (*env)->GetArrayLength(env, raw);
        jbyte *in = (*env)->GetByteArrayElements(env, raw, NULL);
        st = ee_session_run_raw(js->session, in, (size_t)n, &o, &r);
        (*env)->ReleaseByteArrayElements(env, raw, in, JNI_ABORT);
    } else {
        jsize n = (*env)->GetArrayLength(env, f32);
        jfloat *in = (*env)->GetFloatArrayElements(env, f32, NULL);
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
    if (nc > 4096) {
        throw_status(env, EE_ERR_INVALID_ARG, "more than 4096 classes");
        return;
    }
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
