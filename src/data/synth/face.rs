//! Drawing one synthetic face: head, hair, ears, eyes, brows, nose and mouth
//! in a local frame whose unit is the head's half-height (v points down).
//! Expression lives in the mouth's curvature and opening, the brows' angle
//! and height, and the eyes' opening; identity in the geometry.

use super::raster::{Canvas, Frame, bezier};
use crate::data::kdef::Expression;
use crate::rng::Rng;

/// What stays the same across every picture of one person.
#[derive(Clone, Debug)]
pub struct IdentityLook {
    /// Head width / height.
    pub aspect: f32,
    pub skin: f32,
    pub hair: f32,
    /// 0 short, 1 long, 2 bald.
    pub hair_style: u8,
    pub eye_dx: f32,
    pub eye_y: f32,
    pub eye_size: f32,
    pub iris: f32,
    pub brow_thickness: f32,
    pub brow_gap: f32,
    pub nose_length: f32,
    pub mouth_y: f32,
    pub mouth_width: f32,
    pub lip: f32,
    /// The person's resting mouth: some people look a little sad or happy
    /// when neutral, which makes expressions harder to read.
    pub mouth_bias: f32,
    pub brow_bias: f32,
    pub glasses: bool,
}

impl IdentityLook {
    pub fn new(rng: &mut Rng, difficulty: f32) -> IdentityLook {
        IdentityLook {
            aspect: rng.range(0.68, 0.86),
            skin: rng.range(0.42, 0.82),
            hair: if rng.chance(0.75) { rng.range(0.05, 0.35) } else { rng.range(0.55, 0.85) },
            hair_style: rng.index(3) as u8,
            eye_dx: rng.range(0.26, 0.36),
            eye_y: rng.range(-0.16, -0.04),
            eye_size: rng.range(0.85, 1.2),
            iris: rng.range(0.05, 0.35),
            brow_thickness: rng.range(0.03, 0.05),
            brow_gap: rng.range(0.13, 0.19),
            nose_length: rng.range(0.22, 0.34),
            mouth_y: rng.range(0.42, 0.54),
            mouth_width: rng.range(0.22, 0.32),
            lip: rng.range(0.15, 0.4),
            mouth_bias: rng.normal() * (0.01 + 0.03 * difficulty),
            brow_bias: rng.normal() * (0.005 + 0.02 * difficulty),
            glasses: rng.chance(0.15),
        }
    }
}

/// How one picture shows the expression.
#[derive(Clone, Copy, Debug)]
pub struct Pose {
    pub expression: Expression,
    /// 0 = barely visible, 1 = full.
    pub intensity: f32,
    /// Head yaw in [-1, 1] (KDEF angles; see `Angle::yaw`).
    pub yaw: f32,
    /// Happy mouths are open (teeth showing) in some pictures.
    pub open_smile: bool,
}

/// Expression shape parameters, at full intensity.
struct ExpressionShape {
    /// Mouth corners' vertical offset (negative = up).
    corners: f32,
    /// Mouth centre's vertical offset.
    middle: f32,
    /// Mouth width factor.
    width: f32,
    /// Opening (0 closed) as a height in local units.
    open: f32,
    /// Brows: inner-end and outer-end vertical offsets (negative = up).
    brow_inner: f32,
    brow_outer: f32,
    /// Eye opening factor.
    eye_open: f32,
    /// Disgust raises one side of the upper lip.
    asymmetry: f32,
}

fn shape_of(e: Expression) -> ExpressionShape {
    let base = ExpressionShape { corners: 0.0, middle: 0.0, width: 1.0, open: 0.0, brow_inner: 0.0, brow_outer: 0.0, eye_open: 1.0, asymmetry: 0.0 };
    match e {
        Expression::Neutral => base,
        Expression::Happy => ExpressionShape { corners: -0.15, middle: 0.06, width: 1.15, brow_inner: -0.01, brow_outer: -0.015, eye_open: 0.75, ..base },
        Expression::Sad => ExpressionShape { corners: 0.13, middle: -0.05, width: 0.95, brow_inner: -0.09, brow_outer: 0.03, eye_open: 0.85, ..base },
        Expression::Angry => ExpressionShape { corners: 0.03, middle: 0.0, width: 0.85, brow_inner: 0.08, brow_outer: -0.025, eye_open: 0.8, ..base },
        Expression::Surprised => {
            ExpressionShape { corners: 0.0, middle: 0.0, width: 0.55, open: 0.14, brow_inner: -0.08, brow_outer: -0.07, eye_open: 1.45, ..base }
        }
        Expression::Afraid => {
            ExpressionShape { corners: 0.03, middle: 0.0, width: 1.05, open: 0.06, brow_inner: -0.07, brow_outer: -0.02, eye_open: 1.3, ..base }
        }
        Expression::Disgusted => {
            ExpressionShape { corners: 0.03, middle: -0.02, width: 0.9, brow_inner: 0.04, brow_outer: 0.0, eye_open: 0.7, asymmetry: 0.05, ..base }
        }
    }
}

/// Draws a face in `frame` (unit = head half-height).
pub fn draw_face(canvas: &mut Canvas, frame: &Frame, look: &IdentityLook, pose: &Pose) {
    let s = shape_of(pose.expression);
    let k = pose.intensity;
    let yaw = pose.yaw;
    let aspect = look.aspect * (1.0 - 0.12 * yaw.abs());
    // Features slide toward the side the head turns to.
    let shift = yaw * 0.45 * aspect;
    let skin = look.skin;

    // Hair behind the head, ears, head.
    if look.hair_style != 2 {
        let long = if look.hair_style == 1 { 0.35 } else { 0.0 };
        canvas.ellipse(frame, (-shift * 0.3, -0.12 + long * 0.5), (aspect * 1.08, 1.0 + long * 0.5), 0.0, look.hair, 1.0);
    }
    for side in [-1.0f32, 1.0] {
        let visible = 1.0 - (yaw * side).max(0.0);
        if visible > 0.2 {
            canvas.ellipse(frame, (side * aspect * 0.98 - shift * 0.5, 0.05), (0.11 * visible, 0.19), 0.0, skin * 0.9, 1.0);
        }
    }
    let shade = skin;
    canvas.paint(
        frame,
        [-aspect - 0.05, -1.05, aspect + 0.05, 1.05],
        1.0,
        |u, v| super::raster::ellipse_sdf(u, v, aspect, 1.0),
        move |u, v| shade * (1.0 - 0.12 * (u * u + v * v)),
    );
    if look.hair_style != 2 {
        // The fringe: hair over the top of the head.
        canvas.ellipse(frame, (-shift * 0.3, -0.82), (aspect * 0.95, 0.32), 0.0, look.hair, 1.0);
    }

    // Eyes: the far eye narrows as the head turns and vanishes in profile.
    let eye_y = look.eye_y;
    let eye_w = 0.13 * look.eye_size;
    let eye_h = 0.06 * look.eye_size * (1.0 + (s.eye_open - 1.0) * k);
    for side in [-1.0f32, 1.0] {
        let squeeze = (1.0 - (yaw * side).max(0.0) * 1.1).max(0.0);
        if squeeze < 0.15 {
            continue;
        }
        let ex = side * look.eye_dx * aspect / 0.78 * (1.0 - 0.3 * yaw.abs()) + shift;
        canvas.ellipse(frame, (ex, eye_y), (eye_w * squeeze, eye_h), 0.0, 0.9, 1.0);
        canvas.ellipse(frame, (ex + 0.02 * yaw, eye_y), (0.05 * look.eye_size * squeeze.max(0.4), eye_h.min(0.05 * look.eye_size)), 0.0, look.iris, 1.0);
        if look.glasses {
            canvas.ring(frame, (ex, eye_y), (eye_w * 1.5 * squeeze, 0.11), 0.012, 0.1, 0.9);
        }
        // Brow: inner end toward the nose.
        let inner = (ex - side * eye_w * 0.9 * squeeze, eye_y - look.brow_gap + (s.brow_inner * k) + look.brow_bias);
        let outer = (ex + side * eye_w * 1.2 * squeeze, eye_y - look.brow_gap + (s.brow_outer * k) + 0.01);
        let mid = ((inner.0 + outer.0) / 2.0, (inner.1 + outer.1) / 2.0 - 0.02 - if pose.expression == Expression::Surprised { 0.03 * k } else { 0.0 });
        canvas.stroke(frame, &bezier(inner, mid, outer, 6), look.brow_thickness, look.hair.min(0.3), 1.0);
    }
    if look.glasses && yaw.abs() < 0.6 {
        canvas.stroke(frame, &[(shift - 0.08, eye_y - 0.02), (shift + 0.08, eye_y - 0.02)], 0.012, 0.1, 0.9);
    }

    // Nose: a bridge line and nostrils; in profile it points sideways.
    let nose_top = (shift, eye_y + 0.06);
    let tip = (shift + yaw * 0.18, eye_y + 0.06 + look.nose_length);
    canvas.stroke(frame, &[nose_top, tip, (tip.0 - 0.05 * (1.0 - yaw.abs()), tip.1 + 0.03)], 0.018, skin * 0.68, 1.0);
    for side in [-1.0f32, 1.0] {
        canvas.ellipse(frame, (tip.0 + side * 0.05 * (1.0 - 0.6 * yaw.abs()), tip.1 + 0.03), (0.025, 0.015), 0.0, skin * 0.45, 1.0);
    }

    // Mouth: corners, middle and opening from the expression.
    let my = look.mouth_y;
    let mw = look.mouth_width * (1.0 + (s.width - 1.0) * k) * (1.0 - 0.35 * yaw.abs());
    let corner_dy = s.corners * k + look.mouth_bias;
    let middle_dy = s.middle * k - look.mouth_bias * 0.5;
    let left = (shift - mw, my + corner_dy - s.asymmetry * k);
    let right = (shift + mw, my + corner_dy + s.asymmetry * k * 0.3);
    // A quadratic Bezier passes the midpoint of (corner mean, control); aim the control so the curve's middle lands at my + middle_dy.
    let control = (shift, 2.0 * (my + middle_dy) - (left.1 + right.1) / 2.0);
    let open = s.open * k + if pose.open_smile && pose.expression == Expression::Happy { 0.06 * k } else { 0.0 };
    if open > 0.01 {
        let lower_control = (shift, control.1 + open * 2.0);
        let upper = bezier(left, control, right, 12);
        let lower = bezier(left, lower_control, right, 12);
        let inside = if pose.expression == Expression::Happy { 0.85 } else { 0.08 };
        // Fill between the lips column by column as thin strokes.
        for (a, b) in upper.iter().zip(&lower) {
            canvas.stroke(frame, &[*a, *b], 0.02, inside, 1.0);
        }
        canvas.stroke(frame, &upper, 0.03, look.lip, 1.0);
        canvas.stroke(frame, &lower, 0.035, look.lip, 1.0);
    } else {
        canvas.stroke(frame, &bezier(left, control, right, 12), 0.045, look.lip, 1.0);
    }
}
