package dev.eecompile.demo;

import android.content.Context;
import android.graphics.Bitmap;
import android.graphics.Canvas;
import android.graphics.Paint;
import android.graphics.Rect;
import android.view.MotionEvent;
import android.view.View;
import android.view.ViewParent;

import org.json.JSONArray;
import org.json.JSONObject;

/**
 * Shows the current sample (dequantized, one channel as grey or three as RGB) and lets the
 * user draw one: finger strokes paint the model's input grid directly (values in [0, 1],
 * quantized with the bundle's input parameters), every point of a move (its history too)
 * joined to the last. Drawing is offered for one-channel inputs. The view sits in a
 * ScrollView, which is asked not to take a stroke over. Nothing is allocated while drawing or
 * touching: the buffers are made in configure().
 */
final class DrawView extends View {
    private int h = 1, w = 1, c = 1;
    private float scale = 1f / 255f;
    private int zeroPoint = 0;
    private boolean int8 = true;
    private float[] pixels = new float[1]; // h * w * c, in [0, 1] for display and drawing
    private int[] argb = new int[1];       // h * w, what onDraw puts into the bitmap
    private boolean drawn;
    private float lastX = -1, lastY = -1;  // the stroke's last point on the grid; -1: no stroke
    private final Paint paint = new Paint();
    private final Rect dst = new Rect();
    private Bitmap bitmap;

    DrawView(Context ctx) {
        super(ctx);
        paint.setFilterBitmap(false);
    }

    void configure(JSONObject input) throws Exception {
        JSONArray shape = input.getJSONArray("shape");
        int rank = shape.length();
        h = rank >= 3 ? shape.getInt(1) : 1;
        w = rank >= 3 ? shape.getInt(2) : shape.getInt(rank - 1);
        c = rank >= 4 ? shape.getInt(3) : 1;
        int8 = "int8".equals(input.getString("dtype"));
        scale = (float) input.optDouble("scale", 1.0);
        zeroPoint = input.optInt("zero_point", 0);
        pixels = new float[h * w * c];
        argb = new int[h * w];
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
        if (c != 1 || !isEnabled() || bitmap == null) return false;
        ViewParent parent = getParent();
        switch (e.getActionMasked()) {
            case MotionEvent.ACTION_DOWN:
                if (parent != null) parent.requestDisallowInterceptTouchEvent(true);
                if (!drawn) clear();
                lastX = lastY = -1;
                strokeTo(e.getX(), e.getY());
                break;
            case MotionEvent.ACTION_MOVE:
                for (int i = 0; i < e.getHistorySize(); i++) strokeTo(e.getHistoricalX(i), e.getHistoricalY(i));
                strokeTo(e.getX(), e.getY());
                break;
            case MotionEvent.ACTION_UP:
                endStroke(parent);
                performClick();
                return true;
            case MotionEvent.ACTION_CANCEL:
                endStroke(parent);
                return true;
            default:
                return true;
        }
        invalidate();
        return true;
    }

    @Override
    public boolean performClick() {
        return super.performClick();
    }

    private void endStroke(ViewParent parent) {
        if (parent != null) parent.requestDisallowInterceptTouchEvent(false);
        lastX = lastY = -1;
    }

    /** A line of dabs from the stroke's last point to (px, py), in view pixels. */
    private void strokeTo(float px, float py) {
        float gx = px * w / Math.max(1, getWidth()), gy = py * h / Math.max(1, getHeight());
        if (lastX < 0) {
            dab(gx, gy);
        } else {
            int steps = (int) Math.ceil(Math.max(Math.abs(gx - lastX), Math.abs(gy - lastY)));
            for (int s = 1; s <= steps; s++) dab(lastX + (gx - lastX) * s / steps, lastY + (gy - lastY) * s / steps);
        }
        lastX = gx;
        lastY = gy;
    }

    /** A 3x3 dab centred on grid point (gx, gy): 1 at the centre, 0.6 around. */
    private void dab(float gx, float gy) {
        int x = (int) gx, y = (int) gy;
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int xx = x + dx, yy = y + dy;
                if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
                float v = dx == 0 && dy == 0 ? 1f : 0.6f;
                pixels[yy * w + xx] = Math.max(pixels[yy * w + xx], v);
            }
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
        for (int i = 0; i < argb.length; i++) {
            int px = 0xff000000;
            for (int ch = 0; ch < 3; ch++) {
                float v = pixels[i * c + Math.min(ch, c - 1)];
                px |= Math.round(255 * (v - lo) / span) << (16 - 8 * ch);
            }
            argb[i] = px;
        }
        bitmap.setPixels(argb, 0, w, 0, 0, w, h);
        dst.set(0, 0, getWidth(), getHeight());
        canvas.drawBitmap(bitmap, null, dst, paint);
    }
}
