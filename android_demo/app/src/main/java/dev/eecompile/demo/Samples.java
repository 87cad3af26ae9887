package dev.eecompile.demo;

import org.json.JSONArray;
import org.json.JSONObject;

import java.io.File;

/** The labelled test samples `eecompile bundle --android` put beside the bundle: raw model
 * inputs (the first stage's layout and dtype), one after another, and their labels. */
final class Samples {
    final int count;
    final int bytes;
    final int[] labels;
    final String[] classNames;
    private final byte[] data;

    private Samples(int count, int bytes, int[] labels, String[] classNames, byte[] data) {
        this.count = count;
        this.bytes = bytes;
        this.labels = labels;
        this.classNames = classNames;
        this.data = data;
    }

    static Samples load(File dir) throws Exception {
        JSONObject meta = new JSONObject(new String(Assets.readFile(new File(dir, "samples.json")), "UTF-8"));
        int n = meta.getInt("n"), b = meta.getInt("input_bytes");
        byte[] data = Assets.readFile(new File(dir, "samples.bin"));
        if (data.length != n * b)
            throw new IllegalStateException("samples.bin holds " + data.length + " bytes, expected " + n * b);
        JSONArray l = meta.getJSONArray("labels"), c = meta.getJSONArray("class_names");
        int[] labels = new int[n];
        for (int i = 0; i < n; i++) labels[i] = l.getInt(i);
        String[] names = new String[c.length()];
        for (int i = 0; i < names.length; i++) names[i] = c.getString(i);
        return new Samples(n, b, labels, names, data);
    }

    byte[] sample(int i) {
        byte[] out = new byte[bytes];
        System.arraycopy(data, i * bytes, out, 0, bytes);
        return out;
    }

    String className(int c) {
        return c >= 0 && c < classNames.length ? classNames[c] : "?";
    }
}
