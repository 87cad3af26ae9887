package dev.eecompile.demo;

import org.json.JSONArray;
import org.json.JSONObject;

import java.io.File;
import java.util.Locale;

/**
 * pareto.json, written by `eecompile bundle --android` (eecompile/android/contents.py): the
 * calibration's Pareto points, each with its rule, the bundle's own marked "chosen". Read whole
 * at start, so a bad table is reported then and moving the slider parses nothing.
 *
 * Every key is read here and only here, from the objects named top, pt, rule and cost:
 * tests/test_android.py takes the keys from this file and checks that the pareto.json the
 * Python side writes has each of them (a key read with isNull may be null).
 */
final class Pareto {
    static final class Point {
        double accuracy;
        double cost;
        double targetDropPts; // NaN: none (the bundle's own rule, appended)
        int policy;
        float[] thresholds;
        boolean[] kept;
        boolean chosen;
    }

    final String costKind;
    final String costUnit;
    final Point[] points;

    private Pareto(String costKind, String costUnit, Point[] points) {
        this.costKind = costKind;
        this.costUnit = costUnit;
        this.points = points;
    }

    /** The table in dir, or null when the bundle was not calibrated (no file, or no point). */
    static Pareto load(File dir) throws Exception {
        File f = new File(dir, "pareto.json");
        if (!f.isFile()) return null;
        JSONObject top = new JSONObject(new String(Assets.readFile(f), "UTF-8"));
        String kind = top.getString("cost_kind");
        JSONArray front = top.getJSONArray("frontier");
        if (front.length() == 0) return null;
        Point[] points = new Point[front.length()];
        for (int i = 0; i < points.length; i++) {
            JSONObject pt = front.getJSONObject(i);
            JSONObject rule = pt.getJSONObject("rule");
            JSONObject cost = pt.getJSONObject("cost");
            Point p = new Point();
            p.accuracy = pt.getDouble("accuracy");
            p.targetDropPts = pt.isNull("target_drop_pts") ? Double.NaN : pt.getDouble("target_drop_pts");
            p.cost = cost.getDouble(kind);
            p.policy = Assets.policyCode(rule.getString("policy"));
            p.thresholds = Assets.floats(rule.getJSONArray("thresholds"));
            p.kept = Assets.bools(rule.getJSONArray("kept"));
            p.chosen = pt.getBoolean("chosen");
            points[i] = p;
        }
        return new Pareto(kind, top.getString("cost_unit"), points);
    }

    /** The point of the rule the calibration wrote into the bundle, or -1. */
    int chosen() {
        for (int i = 0; i < points.length; i++) if (points[i].chosen) return i;
        return -1;
    }

    String label(int i) {
        Point p = points[i];
        String drop = Double.isNaN(p.targetDropPts) ? "" : String.format(Locale.US, ", target drop %.2f pts",
                p.targetDropPts);
        return String.format(Locale.US, "Pareto point %d/%d%s: accuracy %.2f%%%s, %s %.4g %s", i + 1, points.length,
                p.chosen ? " (the bundle's rule)" : "", 100 * p.accuracy, drop, costKind, p.cost, costUnit);
    }
}
