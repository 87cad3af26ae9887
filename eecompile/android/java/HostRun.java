import dev.eecompile.EeHarness;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Locale;

/**
 * Drives the app's JNI bridge from a plain JVM on the host (eecompile/android/hostcheck.py):
 * every sample of samples.bin through EeHarness, one JSON object per line (class, exit, each
 * exit's confidence and raw logits, time), then the error paths a caller can hit.
 *
 * usage: java -cp CLASSES HostRun LIBRARY BUNDLE_DIR LITERT_SO SAMPLES_BIN [POLICY T0,T1,... KEPT0,KEPT1,...]
 */
public final class HostRun {
    public static void main(String[] args) throws IOException {
        EeHarness.loadLibrary(args[0]);
        System.out.println("{\"describe\": " + EeHarness.describe() + "}");
        byte[] all = Files.readAllBytes(Paths.get(args[3]));
        try (EeHarness h = new EeHarness(args[1], args[2], 1)) {
            if (args.length > 4) {
                h.setKept(bools(args[6]));
                h.setPolicy(Integer.parseInt(args[4]), floats(args[5]));
            }
            int n = h.inputBytes();
            for (int i = 0; i * n < all.length; i++) {
                byte[] x = new byte[n];
                System.arraycopy(all, i * n, x, 0, n);
                EeHarness.Result r = h.run(x, -1);
                StringBuilder b = new StringBuilder();
                b.append(String.format(Locale.US, "{\"sample\": %d, \"class_idx\": %d, \"exit_idx\": %d, \"stages_run\": %d, "
                        + "\"confidence\": %.7g, \"total_ns\": %d, \"exit_confidence\": [", i, r.classIdx, r.exitIdx,
                        r.stagesRun, r.confidence, r.totalNs));
                for (int k = 0; k < r.exitConfidence.length; k++)
                    b.append(k > 0 ? ", " : "").append(Float.isNaN(r.exitConfidence[k]) ? "null"
                            : String.format(Locale.US, "%.7g", r.exitConfidence[k]));
                b.append("], \"exit_logits\": [");
                for (int k = 0; k < r.exitLogits.length; k++) {
                    b.append(k > 0 ? ", " : "");
                    float[] l = r.exitLogits[k] == null ? null : r.logitsAsFloat(k);
                    if (l == null) {
                        b.append("null");
                        continue;
                    }
                    b.append('[');
                    for (int c = 0; c < l.length; c++) b.append(c > 0 ? ", " : "").append(l[c]);
                    b.append(']');
                }
                System.out.println(b.append("]}"));
            }
            expectThrows("bad threshold", IllegalArgumentException.class, () -> h.setPolicy(EeHarness.POLICY_MAX_PROB,
                    new float[] {2f}));
            expectThrows("short input", IllegalArgumentException.class, () -> h.run(new byte[1], -1));
        }
        expectThrows("missing bundle", IllegalStateException.class, () -> new EeHarness(args[1] + "/missing", args[2], 1));
        EeHarness closed = new EeHarness(args[1], args[2], 1);
        closed.close();
        expectThrows("closed", IllegalStateException.class, () -> closed.run(new byte[1], -1));
    }

    private static void expectThrows(String what, Class<? extends Throwable> kind, Runnable r) {
        try {
            r.run();
            System.out.println("{\"error_case\": \"" + what + "\", \"thrown\": null}");
        } catch (Throwable t) {
            String msg = String.valueOf(t.getMessage()).replace("\\", "\\\\").replace("\"", "\\\"");
            System.out.println("{\"error_case\": \"" + what + "\", \"thrown\": \"" + t.getClass().getName()
                    + "\", \"expected\": " + kind.isInstance(t) + ", \"message\": \"" + msg + "\"}");
        }
    }

    private static float[] floats(String csv) {
        String[] p = csv.split(",");
        float[] out = new float[p.length];
        for (int i = 0; i < p.length; i++) out[i] = Float.parseFloat(p[i]);
        return out;
    }

    private static boolean[] bools(String csv) {
        String[] p = csv.split(",");
        boolean[] out = new boolean[p.length];
        for (int i = 0; i < p.length; i++) out[i] = p[i].equals("1") || p[i].equals("true");
        return out;
    }
}
