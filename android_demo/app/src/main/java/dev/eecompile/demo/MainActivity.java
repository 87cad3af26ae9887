package dev.eecompile.demo;

import android.app.Activity;
import android.graphics.Typeface;
import android.os.Bundle;
import android.view.View;
import android.view.ViewGroup;
import android.widget.Button;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.SeekBar;
import android.widget.TextView;

import org.json.JSONArray;
import org.json.JSONObject;

import java.io.File;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import dev.eecompile.EeHarness;

/**
 * One screen: pick a bundled labelled sample (or draw one), run it through the early-exit
 * harness, see the class, the exit taken, each checked exit's confidence and per-stage latency;
 * a slider moves along the calibration's Pareto frontier (or scales a global threshold when
 * the bundle was not calibrated); "run all samples" reports accuracy, the exit histogram and
 * the mean latency. All inference runs on one background thread.
 */
public final class MainActivity extends Activity {
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private EeHarness harness;
    private Samples samples;
    private JSONObject info;
    private JSONArray frontier;   // calibration Pareto points with their rules; null: none
    private float[] baseThresholds;
    private int basePolicy;
    private int current;
    private DrawView draw;
    private TextView header, sampleLabel, sliderLabel, output;
    private SeekBar slider;

    @Override
    protected void onCreate(Bundle state) {
        super.onCreate(state);
        buildUi();
        output.setText("Preparing the bundle...");
        worker.execute(new Runnable() {
            @Override
            public void run() {
                try {
                    File dir = Assets.install(MainActivity.this);
                    EeHarness.loadLibrary(null);
                    info = new JSONObject(EeHarness.describe());
                    samples = Samples.load(dir);
                    frontier = Assets.frontier(dir);
                    String litert = getApplicationInfo().nativeLibraryDir + "/libLiteRt.so";
                    harness = new EeHarness(new File(dir, "bundle").getPath(), litert, 1);
                    basePolicy = info.getInt("policy");
                    JSONArray th = info.getJSONArray("thresholds");
                    baseThresholds = new float[th.length()];
                    for (int i = 0; i < th.length(); i++) baseThresholds[i] = (float) th.getDouble(i);
                    post(new Runnable() {
                        @Override
                        public void run() {
                            ready();
                        }
                    });
                } catch (final Throwable t) {
                    show("Cannot start: " + t.getMessage());
                }
            }
        });
    }

    @Override
    protected void onDestroy() {
        worker.execute(new Runnable() {
            @Override
            public void run() {
                if (harness != null) harness.close();
            }
        });
        worker.shutdown();
        super.onDestroy();
    }

    private void buildUi() {
        LinearLayout col = new LinearLayout(this);
        col.setOrientation(LinearLayout.VERTICAL);
        int pad = dp(12);
        col.setPadding(pad, pad, pad, pad);
        header = new TextView(this);
        header.setTextSize(18);
        col.addView(header);

        LinearLayout row = new LinearLayout(this);
        Button prev = button("<", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                pick(current - 1);
            }
        });
        sampleLabel = new TextView(this);
        sampleLabel.setPadding(pad, 0, pad, 0);
        Button next = button(">", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                pick(current + 1);
            }
        });
        row.addView(prev);
        row.addView(sampleLabel);
        row.addView(next);
        col.addView(row);

        draw = new DrawView(this);
        col.addView(draw, new LinearLayout.LayoutParams(dp(224), dp(224)));

        LinearLayout actions = new LinearLayout(this);
        actions.addView(button("Run", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                runOne();
            }
        }));
        actions.addView(button("Clear (draw)", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                draw.clear();
                sampleLabel.setText("drawn");
            }
        }));
        actions.addView(button("Run all samples", new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                runAll();
            }
        }));
        col.addView(actions);

        sliderLabel = new TextView(this);
        col.addView(sliderLabel);
        slider = new SeekBar(this);
        slider.setOnSeekBarChangeListener(new SeekBar.OnSeekBarChangeListener() {
            @Override
            public void onProgressChanged(SeekBar s, int p, boolean fromUser) {
                if (fromUser) applyPoint(p);
            }

            @Override
            public void onStartTrackingTouch(SeekBar s) {
            }

            @Override
            public void onStopTrackingTouch(SeekBar s) {
            }
        });
        col.addView(slider);

        output = new TextView(this);
        output.setTypeface(Typeface.MONOSPACE);
        output.setTextSize(12);
        col.addView(output);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(col, new ViewGroup.LayoutParams(ViewGroup.LayoutParams.MATCH_PARENT,
                ViewGroup.LayoutParams.WRAP_CONTENT));
        setContentView(scroll);
    }

    private void ready() {
        try {
            header.setText(String.format(Locale.US, "%s  %s  %d exits", info.getString("name"),
                    info.getString("target"), info.getInt("n_stages")));
            JSONObject in = info.getJSONObject("input");
            draw.configure(in, samples);
            int points = frontier != null ? frontier.length() : 20;
            slider.setMax(points - 1);
            slider.setProgress(frontier != null ? Assets.chosenPoint(frontier) : points - 1);
            applyPoint(slider.getProgress());
            pick(0);
            output.setText("Ready: " + samples.count + " labelled samples.");
        } catch (Exception e) {
            output.setText("Bad bundle description: " + e.getMessage());
        }
    }

    /** Frontier point p (or, uncalibrated, a global threshold between the policy's ends). */
    private void applyPoint(final int p) {
        try {
            final int policy;
            final float[] th;
            final boolean[] kept;
            String label;
            if (frontier != null) {
                JSONObject pt = frontier.getJSONObject(p);
                JSONObject rule = pt.getJSONObject("rule");
                policy = Assets.policyCode(rule.getString("policy"));
                th = Assets.floats(rule.getJSONArray("thresholds"));
                kept = Assets.bools(rule.getJSONArray("kept"));
                label = String.format(Locale.US, "Pareto point %d/%d: accuracy %.2f%% (target drop %.2f pts), %.1f us",
                        p + 1, frontier.length(), 100 * pt.getDouble("accuracy"), pt.getDouble("target_drop_pts"),
                        pt.getJSONObject("cost").optDouble("latency", Double.NaN));
            } else {
                policy = EeHarness.POLICY_MAX_PROB;
                th = new float[baseThresholds.length];
                float t = 0.5f + 0.5f * p / Math.max(1, slider.getMax());
                for (int i = 0; i < th.length; i++) th[i] = Math.min(t, 1.0f);
                kept = null;
                label = String.format(Locale.US, "not calibrated: max-prob threshold %.3f at every exit", t);
            }
            sliderLabel.setText(label);
            worker.execute(new Runnable() {
                @Override
                public void run() {
                    try {
                        if (kept != null) harness.setKept(kept);
                        harness.setPolicy(policy, th);
                    } catch (RuntimeException e) {
                        show("Rule rejected: " + e.getMessage());
                    }
                }
            });
        } catch (Exception e) {
            sliderLabel.setText("Bad Pareto table: " + e.getMessage());
        }
    }

    private void pick(int i) {
        if (samples == null || samples.count == 0) return;
        current = (i % samples.count + samples.count) % samples.count;
        draw.showSample(samples.sample(current));
        sampleLabel.setText(String.format(Locale.US, "sample %d/%d: %s", current + 1, samples.count,
                samples.className(samples.labels[current])));
    }

    private void runOne() {
        if (harness == null) return;
        final byte[] x = draw.input();
        final int label = draw.isDrawn() ? -1 : samples.labels[current];
        worker.execute(new Runnable() {
            @Override
            public void run() {
                try {
                    EeHarness.Result r = harness.run(x, -1);
                    show(Report.one(r, samples, label));
                } catch (RuntimeException e) {
                    show("Run failed: " + e.getMessage());
                }
            }
        });
    }

    private void runAll() {
        if (harness == null) return;
        show("Running " + samples.count + " samples...");
        worker.execute(new Runnable() {
            @Override
            public void run() {
                try {
                    show(Report.all(harness, samples));
                } catch (RuntimeException e) {
                    show("Run failed: " + e.getMessage());
                }
            }
        });
    }

    private void show(final String text) {
        post(new Runnable() {
            @Override
            public void run() {
                output.setText(text);
            }
        });
    }

    private void post(Runnable r) {
        runOnUiThread(r);
    }

    private Button button(String text, View.OnClickListener l) {
        Button b = new Button(this);
        b.setText(text);
        b.setAllCaps(false);
        b.setOnClickListener(l);
        return b;
    }

    private int dp(int v) {
        return Math.round(v * getResources().getDisplayMetrics().density);
    }
}
