package dev.eecompile;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The eecompile C harness over JNI: one session on one exported bundle (the bundle compiled
 * into libeecompile_jni.so by `eecompile bundle --android`). Not thread-safe: one object per
 * thread. No Android imports, so the host tests load this class in a plain JVM.
 *
 * <pre>
 * EeHarness.loadLibrary(null);                      // System.loadLibrary("eecompile_jni")
 * try (EeHarness h = new EeHarness(bundleDir, nativeLibDir + "/libLiteRt.so", 1)) {
 *     EeHarness.Result r = h.run(int8Sample, -1);   // r.classIdx, r.exitIdx, r.exitConfidence ...
 * }
 * </pre>
 * Failures throw IllegalArgumentException (a bad argument or threshold) or IllegalStateException
 * (a missing stage file or libLiteRt.so, a LiteRT or version error, a bundle the library was not
 * built for); the message is the harness's status and its last error line. Native memory running
 * out throws OutOfMemoryError.
 */
public final class EeHarness implements AutoCloseable {
    public static final int POLICY_MAX_PROB = 0, POLICY_ENTROPY = 1, POLICY_MARGIN = 2, POLICY_PATIENCE = 3,
            POLICY_LEARNED = 4;

    /** One run: the exit taken, its class and probabilities, each checked exit's confidence. */
    public static final class Result {
        public int classIdx;
        public int exitIdx;
        public int stagesRun;
        public float confidence;      // max softmax probability at the exit taken
        public float[] probs;         // n_classes, at the exit taken
        public float[] exitConfidence; // n_stages: max softmax at each exit checked; NaN where not run or dropped
        public long totalNs;
        public long[] stageNs;        // n_stages; 0 where not run
        public byte[][] exitLogits;   // n_stages raw logits (int8 values, or float32 little-endian); null where not run

        /** Exit k's logits as floats (dequantization is the caller's: int8 logits come back as is). */
        public float[] logitsAsFloat(int k) {
            byte[] raw = exitLogits[k];
            if (raw == null) return null;
            float[] out;
            if (raw.length == probs.length) {
                out = new float[raw.length];
                for (int i = 0; i < raw.length; i++) out[i] = raw[i];
            } else {
                out = new float[raw.length / 4];
                ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(out);
            }
            return out;
        }
    }

    private long handle;
    private final int nStages;
    private final int nClasses;
    private final int logitBytes;

    /** Loads libeecompile_jni: from the app's library path (null) or a file path (host). */
    public static void loadLibrary(String path) {
        if (path == null) System.loadLibrary("eecompile_jni");
        else System.load(path);
    }

    /** The bundle compiled into the library, as JSON (name, n_stages, class_names, input, ...). */
    public static native String describe();

    public EeHarness(String bundleDir, String litertPath, int threads) {
        String d = describe();
        nStages = intField(d, "n_stages");
        nClasses = intField(d, "n_classes");
        logitBytes = d.contains("\"logits_dtype\": \"int8\"") ? 1 : 4;
        handle = nativeCreate(bundleDir, litertPath, threads);
    }

    public synchronized int inputBytes() {
        return nativeInputBytes(live());
    }

    public int stages() {
        return nStages;
    }

    public int classes() {
        return nClasses;
    }

    /** One sample in the model's own layout and dtype (int8 for tflite-int8, quantized). */
    public synchronized Result run(byte[] raw, int maxExit) {
        return runAny(raw, null, maxExit, 0);
    }

    /** One sample as float32 in the model's layout; the harness quantizes it. */
    public synchronized Result runFloat(float[] input, int maxExit) {
        return runAny(null, input, maxExit, 0);
    }

    /** Also stop at the deepest exit whose profiled p99 completion fits deadlineUs (needs the anytime table). */
    public synchronized Result runWithDeadline(byte[] raw, long deadlineUs) {
        return runAny(raw, null, -1, deadlineUs);
    }

    public synchronized void setPolicy(int policy, float[] thresholds) {
        nativeSetPolicy(live(), policy, thresholds);
    }

    public synchronized void setKept(boolean[] kept) {
        nativeSetKept(live(), kept);
    }

    @Override
    public synchronized void close() {
        nativeFree(handle);
        handle = 0;
    }

    private Result runAny(byte[] raw, float[] f32, int maxExit, long deadlineUs) {
        int[] ints = new int[3];
        float[] floats = new float[1 + nClasses + nStages];
        long[] times = new long[1 + nStages];
        byte[] logits = new byte[nStages * nClasses * logitBytes];
        nativeRun(live(), raw, f32, maxExit, deadlineUs, ints, floats, times, logits);
        Result r = new Result();
        r.classIdx = ints[0];
        r.exitIdx = ints[1];
        r.stagesRun = ints[2];
        r.confidence = floats[0];
        r.probs = new float[nClasses];
        System.arraycopy(floats, 1, r.probs, 0, nClasses);
        r.exitConfidence = new float[nStages];
        System.arraycopy(floats, 1 + nClasses, r.exitConfidence, 0, nStages);
        r.totalNs = times[0];
        r.stageNs = new long[nStages];
        System.arraycopy(times, 1, r.stageNs, 0, nStages);
        r.exitLogits = new byte[nStages][];
        int row = nClasses * logitBytes;
        for (int k = 0; k < nStages; k++) {
            if (k < r.stagesRun && !Float.isNaN(r.exitConfidence[k])) {
                r.exitLogits[k] = new byte[row];
                System.arraycopy(logits, k * row, r.exitLogits[k], 0, row);
            }
        }
        return r;
    }

    private long live() {
        if (handle == 0) throw new IllegalStateException("the harness is closed");
        return handle;
    }

    static int intField(String json, String key) {
        int i = json.indexOf("\"" + key + "\": ");
        if (i < 0) throw new IllegalStateException("describe() lacks " + key);
        int j = i + key.length() + 4, e = j;
        while (e < json.length() && Character.isDigit(json.charAt(e))) e++;
        return Integer.parseInt(json.substring(j, e));
    }

    private static native long nativeCreate(String bundleDir, String litertPath, int threads);

    private static native void nativeFree(long handle);

    private static native int nativeInputBytes(long handle);

    private static native void nativeSetPolicy(long handle, int policy, float[] thresholds);

    private static native void nativeSetKept(long handle, boolean[] kept);

    private static native void nativeRun(long handle, byte[] raw, float[] f32, int maxExit, long deadlineUs, int[] ints,
                                         float[] floats, long[] times, byte[] logits);
}
