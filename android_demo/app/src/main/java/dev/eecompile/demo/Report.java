package dev.eecompile.demo;

import java.util.Locale;

import dev.eecompile.EeHarness;

/** The text the screen shows for one run and for a run over every sample. */
final class Report {
    private Report() {
    }

    static String one(EeHarness.Result r, Samples s, int label) {
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.US, "class %s%s\nexit %d of %d, confidence %.3f, %.1f us\n",
                s.className(r.classIdx), label < 0 ? "" : r.classIdx == label ? "  (right)" : "  (wrong: "
                        + s.className(label) + ")", r.exitIdx, r.exitConfidence.length - 1, r.confidence,
                r.totalNs / 1e3));
        b.append("exit  confidence  stage us\n");
        for (int k = 0; k < r.exitConfidence.length; k++) {
            if (k >= r.stagesRun) break;
            String conf = Float.isNaN(r.exitConfidence[k]) ? "   dropped" : String.format(Locale.US, "%10.3f",
                    r.exitConfidence[k]);
            b.append(String.format(Locale.US, "%4d  %s  %8.1f%s\n", k, conf, r.stageNs[k] / 1e3,
                    k == r.exitIdx ? "  <- exit" : ""));
        }
        return b.toString();
    }

    static String all(EeHarness h, Samples s) {
        int n = s.count, right = 0;
        int[] exits = new int[h.stages()];
        int[] rightAt = new int[h.stages()];
        double totalUs = 0;
        for (int i = 0; i < n; i++) {
            EeHarness.Result r = h.run(s.sample(i), -1);
            exits[r.exitIdx]++;
            totalUs += r.totalNs / 1e3;
            if (r.classIdx == s.labels[i]) {
                right++;
                rightAt[r.exitIdx]++;
            }
        }
        StringBuilder b = new StringBuilder(String.format(Locale.US,
                "%d samples: accuracy %.2f%%, mean %.1f us per sample\nexit  samples  share  accuracy\n", n,
                100.0 * right / n, totalUs / n));
        for (int k = 0; k < exits.length; k++) {
            StringBuilder bar = new StringBuilder();
            for (int j = 0; j < Math.round(30.0 * exits[k] / n); j++) bar.append('#');
            b.append(String.format(Locale.US, "%4d  %7d  %4.0f%%  %s  %s\n", k, exits[k], 100.0 * exits[k] / n,
                    exits[k] > 0 ? String.format(Locale.US, "%6.1f%%", 100.0 * rightAt[k] / exits[k]) : "     -",
                    bar));
        }
        return b.toString();
    }
}
