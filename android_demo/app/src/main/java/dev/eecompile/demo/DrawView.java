package dev.eecompile.demo;

import android.content.Context;
import android.graphics.Bitmap;
import android.graphics.Canvas;
import android.graphics.Paint;
import android.graphics.Rect;
import android.view.MotionEvent;
import android.view.View;

import org.json.JSONArray;
import org.json.JSONObject;

/**
 * Shows the current sample (dequantized, one channel as grey or three as RGB) and lets the
 * user draw one: finger strokes paint the model's input grid directly (values in [0, 1],
 * quantized with the bundle's input parameters). Drawing is offered for one-channel inputs.
 */
final class DrawView extends View {
    private int h = 1, w = 1, c = 1;
    private float scale = 1f / 255f;
    private int zeroPoint = 0;
    private boolean int8 = true;
    private float[] pixels = new float[1]; // h * w * c, in [0, 1] for display and drawing
    private boolean drawn;
    private final Paint paint = new Paint();
    private Bitmap bitmap;

    DrawView(Context ctx) {
        super(ctx);
        paint.setFilterBitmap(false);
    }

    void configure(JSONObject input, Samples s) throws Exception {
        JSONArray shape = input.getJSONArray("shape");
        int rank = shape.length();
        h = rank >= 3 ? shape.getInt(1) : 1;
        w = rank >= 3 ? shape.getInt(2) : shape.getInt(rank - 1);
        c = rank >= 4 ? shape.getInt(3) : 1;
        int8 = "int8".equals(input.getString("dtype"));
        scale = (float) input.optDouble("scale", 1.0);
        zeroPoint = input.optInt("zero_point", 0);
        pixels = new float[h * w * c];
        bitmap = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888);
    }

    void showSample(byte[] raw) {
        drawn = false;
        for (int i = 0; i < pixels.length; i++) {
            float v = int8 ? scale * (raw[i] - zeroPoint) : Float.intBitsToFloat((raw[4 * i] & 0xff)
                    | (raw[4 * i + 1] & 0xff) << 8 | (raw[4 * i + 2] & 0xff) << 16 | (raw[4 * i + 3] & 0xff) << 24);
            pixels[i] = v;
        }
        invalidate();
    }

    void clear() {
        java.util.Arrays.fill(pixels, 0f);
        drawn = true;
        invalidate();
    }

    boolean isDrawn() {
        return drawn;
    }

    /** The model input for what is shown: quantized with the bundle's parameters when int8. */
    byte[] input() {
        byte[] out = new byte[pixels.length * (int8 ? 1 : 4)];
        for (int i = 0; i < pixels.length; i++) {
            if (int8) {
                long q = Math.round(pixels[i] / scale) + zeroPoint;
                out[i] = (byte) Math.max(-128, Math.min(127, q));
            } else {
                int bits = Float.floatToIntBits(pixels[i]);
                for (int j = 0; j < 4; j++) out[4 * i + j] = (byte) (bits >>> (8 * j));
            }
        }
        return out;
    }

    @Override
    public boolean onTouchEvent(MotionEvent e) {
        if (c != 1) return false;
        if (!drawn) clear();
        int x = (int) (e.getX() * w / getWidth()), y = (int) (e.getY() * h / getHeight());
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int xx = x + dx, yy = y + dy;
                if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
                float v = dx == 0 && dy == 0 ? 1f : 0.6f;
                pixels[yy * w + xx] = Math.max(pixels[yy * w + xx], v);
            }
        invalidate();
        return true;
    }

    @Override
    protected void onDraw(Canvas canvas) {
        if (bitmap == null) return;
        float lo = Float.MAX_VALUE, hi = -Float.MAX_VALUE;
        for (float v : pixels) {
            lo = Math.min(lo, v);
            hi = Math.max(hi, v);
        }
        float span = hi > lo ? hi - lo : 1f;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int[] rgb = new int[3];
                for (int ch = 0; ch < 3; ch++) {
                    float v = pixels[(y * w + x) * c + Math.min(ch, c - 1)];
                    rgb[ch] = Math.round(255 * (v - lo) / span);
                }
                bitmap.setPixel(x, y, 0xff000000 | rgb[0] << 16 | rgb[1] << 8 | rgb[2]);
            }
        canvas.drawBitmap(bitmap, null, new Rect(0, 0, getWidth(), getHeight()), paint);
    }
}
