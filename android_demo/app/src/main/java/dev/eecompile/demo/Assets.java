package dev.eecompile.demo;

import android.content.Context;
import android.content.res.AssetManager;

import org.json.JSONArray;
import org.json.JSONObject;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * The bundle and samples live in the APK's assets under eecompile/ (stored uncompressed);
 * LiteRT and the harness read files by path, so they are copied to the app's files dir on the
 * first start, or when the APK carries another bundle (eecompile/stamp.txt differs). The copy
 * goes to a temporary directory renamed into place: a start interrupted mid-copy leaves no
 * half-written bundle behind.
 */
final class Assets {
    static final String ROOT = "eecompile";

    private Assets() {
    }

    static File install(Context ctx) throws IOException {
        AssetManager am = ctx.getAssets();
        String stamp = new String(read(am.open(ROOT + "/stamp.txt")), "UTF-8").trim();
        File dir = new File(ctx.getFilesDir(), ROOT);
        File have = new File(dir, "stamp.txt");
        if (have.isFile() && new String(readFile(have), "UTF-8").trim().equals(stamp)) return dir;
        File tmp = new File(ctx.getFilesDir(), ROOT + ".tmp");
        delete(tmp);
        copyTree(am, ROOT, tmp);
        delete(dir);
        if (!tmp.renameTo(dir)) throw new IOException("cannot move " + tmp + " to " + dir);
        return dir;
    }

    /** The calibration report's Pareto points (each with its rule), or null without one. */
    static JSONArray frontier(File dir) throws Exception {
        File f = new File(dir, "pareto.json");
        if (!f.isFile()) return null;
        JSONObject o = new JSONObject(new String(readFile(f), "UTF-8"));
        JSONArray pts = o.getJSONArray("frontier");
        return pts.length() > 0 ? pts : null;
    }

    /** The frontier point closest to the rule the calibration wrote into the bundle. */
    static int chosenPoint(JSONArray frontier) throws Exception {
        for (int i = 0; i < frontier.length(); i++)
            if (frontier.getJSONObject(i).optBoolean("chosen", false)) return i;
        return frontier.length() - 1;
    }

    static int policyCode(String name) {
        String[] names = {"max-prob", "entropy", "margin", "patience", "learned"};
        for (int i = 0; i < names.length; i++) if (names[i].equals(name)) return i;
        throw new IllegalArgumentException("unknown policy " + name);
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
