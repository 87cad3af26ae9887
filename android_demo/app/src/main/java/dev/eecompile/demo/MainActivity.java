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

import org.json.JSONObject;

import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

import dev.eecompile.EeHarness;

/**
 * One screen: pick a bundled labelled sample (or draw one), run it through the early-exit
 * harness, see the class, the exit taken, each checked exit's confidence and per-stage latency;
 * a slider moves along the calibration's Pareto frontier (or scales a global max-prob threshold
 * when the bundle was not calibrated), one position of it being the bundle's own rule, where it
 * starts (nothing is set until the slider moves); "run all samples" reports accuracy, the exit
 * histogram and the mean latency. All inference runs on one background thread; the controls
 * are enabled once the harness is ready.
 */
public final class MainActivity extends Activity {
    private static final int N_THRESHOLDS = 20; // uncalibrated: max-prob thresholds from 0.5 to 1
    private final ExecutorService worker = Executors.newSingleThreadExecutor();
    private final List<View> controls = new ArrayList<View>();
    private EeHarness harness;
    private Samples samples;
    private JSONObject info;
    private Pareto pareto;        // calibration Pareto points with their rules; null: none
    private int basePolicy;       // the bundle's own rule (compiled into the library)
    private float[] baseThresholds;
    private boolean[] baseKept;
    private int bundlePosition;   // the slider position of the bundle's own rule
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
                    pareto = Pareto.load(dir);
                    basePolicy = info.getInt("policy");
                    baseThresholds = Assets.floats(info.getJSONArray("thresholds"));
                    baseKept = Assets.bools(info.getJSONArray("kept"));
                    String litert = getApplicationInfo().nativeLibraryDir + "/libLiteRt.so";
                    harness = new EeHarness(new File(dir, "bundle").getPath(), litert, 1);
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
        controls.add(draw);
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
        controls.add(slider);
        col.addView(slider);

        output = new TextView(this);
        output.setTypeface(Typeface.MONOSPACE);
        output.setTextSize(12);
        col.addView(output);
        ScrollView scroll = new ScrollView(this);
        scroll.addView(col, new ViewGroup.LayoutParams(ViewGroup.LayoutParams.MATCH_PARENT,
                ViewGroup.LayoutParams.WRAP_CONTENT));
        setContentView(scroll);
        setControlsEnabled(false);
    }

    private void setControlsEnabled(boolean on) {
        for (View v : controls) v.setEnabled(on);
    }

    private void ready() {
        try {
            header.setText(String.format(Locale.US, "%s  %s  %d exits", info.getString("name"),
                    info.getString("target"), info.getInt("n_stages")));
            draw.configure(info.getJSONObject("input"));
        } catch (Exception e) {
            output.setText("Bad bundle description: " + e.getMessage());
            return;
        }
        int chosen = pareto != null ? pareto.chosen() : -1;
        int positions = pareto != null ? pareto.points.length : N_THRESHOLDS;
        bundlePosition = chosen >= 0 ? chosen : positions; // else one more position, after the others
        slider.setMax(chosen >= 0 ? positions - 1 : positions);
        slider.setProgress(bundlePosition);
        sliderLabel.setText(label(bundlePosition)); // the harness runs the bundle's rule already
        pick(0);
        setControlsEnabled(true);
        output.setText("Ready: " + samples.count + " labelled samples.");
    }

    /** Slider position p: a frontier point, the bundle's own rule, or a global max-prob threshold. */
    private void applyPoint(final int p) {
        final int policy;
        final float[] th;
        final boolean[] kept;
        if (p == bundlePosition) {
            policy = basePolicy;
            th = baseThresholds;
            kept = baseKept;
        } else if (pareto != null) {
            Pareto.Point pt = pareto.points[p];
            policy = pt.policy;
            th = pt.thresholds;
            kept = pt.kept;
        } else {
            policy = EeHarness.POLICY_MAX_PROB;
            th = new float[baseThresholds.length];
            java.util.Arrays.fill(th, threshold(p));
            kept = baseKept;
        }
        worker.execute(new Runnable() {
            @Override
            public void run() {
                try {
                    harness.setKept(kept);
                    harness.setPolicy(policy, th);
                } catch (RuntimeException e) {
                    show("Rule rejected: " + e.getMessage());
                }
            }
        });
        sliderLabel.setText(label(p));
    }

    private static float threshold(int p) {
        return Math.min(1f, 0.5f + 0.5f * p / (N_THRESHOLDS - 1));
    }

    private String label(int p) {
        if (pareto != null && p < pareto.points.length) return pareto.label(p);
        if (p == bundlePosition) {
            StringBuilder b = new StringBuilder("the bundle's rule: ").append(Assets.policyName(basePolicy))
                    .append(", early exits at");
            for (int k = 0; k + 1 < baseThresholds.length; k++)
                b.append(baseKept[k] ? String.format(Locale.US, " %.3f", baseThresholds[k]) : " -");
            return b.append(" (-: dropped)").toString();
        }
        return String.format(Locale.US, "not calibrated: max-prob threshold %.3f at every exit", threshold(p));
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
        controls.add(b);
        return b;
    }

    private int dp(int v) {
        return Math.round(v * getResources().getDisplayMetrics().density);
    }
}
