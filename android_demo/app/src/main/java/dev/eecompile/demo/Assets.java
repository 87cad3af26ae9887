package dev.eecompile.demo;

import android.content.Context;
import android.content.res.AssetManager;

import org.json.JSONArray;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.util.UUID;

/**
 * The bundle and samples live in the APK's assets under eecompile/ (stored uncompressed);
 * LiteRT and the harness read files by path, so they are copied to the app's files dir on the
 * first start, or when the APK carries another bundle (eecompile/stamp.txt differs). The copy
 * goes to a temporary directory of its own, renamed into place: a start interrupted mid-copy
 * leaves no half-written bundle behind. One install at a time per process (an activity
 * recreated on rotation starts a second one while the first may still copy).
 */
final class Assets {
    static final String ROOT = "eecompile";
    private static final String TMP_PREFIX = ROOT + ".tmp";

    private Assets() {
    }

    static synchronized File install(Context ctx) throws IOException {
        AssetManager am = ctx.getAssets();
        String stamp = new String(read(am.open(ROOT + "/stamp.txt")), "UTF-8").trim();
        File files = ctx.getFilesDir();
        File dir = new File(files, ROOT);
        File have = new File(dir, "stamp.txt");
        if (have.isFile() && new String(readFile(have), "UTF-8").trim().equals(stamp)) return dir;
        File[] old = files.listFiles();
        if (old != null)  // copies cut short by a killed process (only this method makes them, under its lock)
            for (File f : old) if (f.getName().startsWith(TMP_PREFIX)) delete(f);
        File tmp = new File(files, TMP_PREFIX + "-" + UUID.randomUUID());
        try {
            copyTree(am, ROOT, tmp);
            delete(dir);
            if (!tmp.renameTo(dir)) throw new IOException("cannot move " + tmp + " to " + dir);
        } finally {
            delete(tmp);
        }
        return dir;
    }

    /** Policy names by EeHarness.POLICY_* code. */
    private static final String[] POLICIES = {"max-prob", "entropy", "margin", "patience", "learned"};

    static int policyCode(String name) {
        for (int i = 0; i < POLICIES.length; i++) if (POLICIES[i].equals(name)) return i;
        throw new IllegalArgumentException("unknown policy " + name);
    }

    static String policyName(int code) {
        return code >= 0 && code < POLICIES.length ? POLICIES[code] : "policy " + code;
    }

    static float[] floats(JSONArray a) throws Exception {
        float[] out = new float[a.length()];
        for (int i = 0; i < out.length; i++) out[i] = (float) a.getDouble(i);
        return out;
    }

    static boolean[] bools(JSONArray a) throws Exception {
        boolean[] out = new boolean[a.length()];
        for (int i = 0; i < out.length; i++) out[i] = a.getBoolean(i);
        return out;
    }

    static byte[] readFile(File f) throws IOException {
        return read(new FileInputStream(f));
    }

    private static void copyTree(AssetManager am, String path, File dst) throws IOException {
        String[] kids = am.list(path);
        if (kids == null || kids.length == 0) {
            InputStream in = am.open(path);
            OutputStream out = new FileOutputStream(dst);
            try {
                byte[] buf = new byte[1 << 16];
                for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
            } finally {
                in.close();
                out.close();
            }
            return;
        }
        if (!dst.mkdirs() && !dst.isDirectory()) throw new IOException("cannot create " + dst);
        for (String k : kids) copyTree(am, path + "/" + k, new File(dst, k));
    }

    private static byte[] read(InputStream in) throws IOException {
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
            return out.toByteArray();
        } finally {
            in.close();
        }
    }

    private static void delete(File f) {
        File[] kids = f.listFiles();
        if (kids != null) for (File k : kids) delete(k);
        f.delete();
    }
}
