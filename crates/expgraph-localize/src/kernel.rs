//! Vote kernels κ (spec §4.1) and their accumulation into a vote map.

use serde::{Deserialize, Serialize};

use crate::{LocalizeError, Result};

/// The kernel κ that spreads one vote over nearby pixels (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kernel {
    /// The AOG kernel `exp(−‖d‖/scale)` minus its minimum over the square `‖d‖∞ ≤ half_width`
    /// (the corner value `exp(−√2·half_width/scale)`), zero outside the square.
    /// AOG values: scale = ‖(35, 35)‖ ≈ 49.5 px, half_width = round(0.3·224/6) = 11 px.
    Laplacian {
        /// Decay length in pixels.
        scale: f64,
        /// Half side of the square support in pixels.
        half_width: f64,
    },
    /// `exp(−‖d‖²/(2σ²))` on the square `‖d‖∞ ≤ truncate·σ`, zero outside.
    Gaussian {
        /// σ in pixels.
        sigma: f64,
        /// Support half side in units of σ.
        truncate: f64,
    },
}

impl Kernel {
    /// The AOG kernel with its published constants (scale 35√2 px, ±11 px).
    pub fn aog() -> Self {
        Kernel::Laplacian { scale: 35.0 * std::f64::consts::SQRT_2, half_width: 11.0 }
    }

    /// A Gaussian with σ = 35 px, truncated at 3σ.
    pub fn gaussian() -> Self {
        Kernel::Gaussian { sigma: 35.0, truncate: 3.0 }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |name, value: f64| LocalizeError::InvalidParam {
            name,
            value: value.to_string(),
            reason: "must be a positive finite number",
        };
        let ok = |v: f64| v.is_finite() && v > 0.0;
        match *self {
            Kernel::Laplacian { scale, half_width } => {
                if !ok(scale) {
                    return Err(bad("kernel.scale", scale));
                }
                if !ok(half_width) {
                    return Err(bad("kernel.half_width", half_width));
                }
            }
            Kernel::Gaussian { sigma, truncate } => {
                if !ok(sigma) {
                    return Err(bad("kernel.sigma", sigma));
                }
                if !ok(truncate) {
                    return Err(bad("kernel.truncate", truncate));
                }
            }
        }
        Ok(())
    }

    /// Half side of the square support, pixels.
    pub fn support_radius(&self) -> f64 {
        match *self {
            Kernel::Laplacian { half_width, .. } => half_width,
            Kernel::Gaussian { sigma, truncate } => sigma * truncate,
        }
    }

    /// κ(d) for an offset `d = (dh, dw)` in pixels.
    pub fn value(&self, dh: f64, dw: f64) -> f64 {
        let r = self.support_radius();
        if dh.abs() > r || dw.abs() > r {
            return 0.0;
        }
        match *self {
            Kernel::Laplacian { scale, half_width } => {
                let floor = (-std::f64::consts::SQRT_2 * half_width / scale).exp();
                ((-(dh * dh + dw * dw).sqrt() / scale).exp() - floor).max(0.0)
            }
            Kernel::Gaussian { sigma, .. } => (-(dh * dh + dw * dw) / (2.0 * sigma * sigma)).exp(),
        }
    }

    /// Add `weight · κ(p − centre)` to every integer pixel `p` (1-based) of the `size × size`
    /// row-major `map` within the kernel's support. Inner loops run over contiguous row slices
    /// (vectorizable); the values equal [`value`](Self::value) up to rounding.
    pub(crate) fn accumulate(&self, map: &mut [f64], size: usize, centre: [f64; 2], weight: f64) {
        let radius = self.support_radius();
        let (Some(rows), Some(cols)) = (window(centre[0], radius, size), window(centre[1], radius, size)) else {
            return;
        };
        let (first_col, end_col) = (*cols.start() - 1, *cols.end());
        let span = |h: usize| (h - 1) * size + first_col..(h - 1) * size + end_col;
        match *self {
            Kernel::Laplacian { scale, half_width } => {
                let floor = (-std::f64::consts::SQRT_2 * half_width / scale).exp();
                let inv_scale = 1.0 / scale;
                let dw2: Vec<f64> = cols.map(|w| (w as f64 - centre[1]).powi(2)).collect();
                for h in rows {
                    let dh2 = (h as f64 - centre[0]).powi(2);
                    for (m, d2) in map[span(h)].iter_mut().zip(&dw2) {
                        *m += weight * ((-(dh2 + d2).sqrt() * inv_scale).exp() - floor).max(0.0);
                    }
                }
            }
            Kernel::Gaussian { sigma, .. } => {
                // Separable: κ(d) = g(dh)·g(dw).
                let k = -1.0 / (2.0 * sigma * sigma);
                let col_factors: Vec<f64> = cols.map(|w| ((w as f64 - centre[1]).powi(2) * k).exp()).collect();
                for h in rows {
                    let a = weight * ((h as f64 - centre[0]).powi(2) * k).exp();
                    for (m, f) in map[span(h)].iter_mut().zip(&col_factors) {
                        *m += a * f;
                    }
                }
            }
        }
    }
}

/// Integer pixels `p ∈ [1, size]` with `|p − c| ≤ r`, or `None` when there are none.
fn window(c: f64, r: f64, size: usize) -> Option<std::ops::RangeInclusive<usize>> {
    let lo = (c - r).ceil().max(1.0);
    let hi = (c + r).floor().min(size as f64);
    (lo <= hi).then_some(lo as usize..=hi as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aog_kernel_matches_hand_computed_values() {
        let k = Kernel::aog();
        let scale = 35.0 * 2f64.sqrt(); // 49.4975
        let floor = (-(11.0 * 2f64.sqrt()) / scale).exp(); // exp(-11/35) = 0.730310
        assert!((floor - (-11.0f64 / 35.0).exp()).abs() < 1e-12);
        // centre: 1 - 0.730310 = 0.269690
        assert!((k.value(0.0, 0.0) - 0.269_690).abs() < 1e-6);
        // r = 5 (3-4-5): exp(-5/49.4975) - 0.730310 = 0.903919 - 0.730310 = 0.173609
        assert!((k.value(3.0, 4.0) - 0.173_609).abs() < 1e-6);
        // corner of the square is exactly zero, outside is zero
        assert!(k.value(11.0, 11.0).abs() < 1e-12);
        assert_eq!(k.value(11.5, 0.0), 0.0);
        // edge midpoint: exp(-11/49.4975) - 0.730310 = 0.800728 - 0.730310 = 0.070418
        assert!((k.value(0.0, -11.0) - 0.070_418).abs() < 1e-6);
    }

    #[test]
    fn gaussian_kernel_matches_hand_computed_values() {
        let k = Kernel::gaussian();
        assert_eq!(k.value(0.0, 0.0), 1.0);
        // d = 35 along one axis: exp(-1/2)
        assert!((k.value(35.0, 0.0) - (-0.5f64).exp()).abs() < 1e-12);
        // d = (21, 28), r = 35: exp(-0.5)
        assert!((k.value(21.0, -28.0) - (-0.5f64).exp()).abs() < 1e-12);
        assert_eq!(k.value(105.1, 0.0), 0.0);
    }

    #[test]
    fn accumulate_matches_value_and_clips_at_the_border() {
        for k in [Kernel::aog(), Kernel::gaussian()] {
            let size = 40;
            let mut map = vec![0.0; size * size];
            let c = [2.3, 30.6];
            k.accumulate(&mut map, size, c, 2.0);
            for h in 1..=size {
                for w in 1..=size {
                    let want = 2.0 * k.value(h as f64 - c[0], w as f64 - c[1]);
                    let got = map[(h - 1) * size + (w - 1)];
                    assert!((got - want).abs() < 1e-12, "{k:?} at ({h},{w}): {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn votes_far_outside_the_frame_touch_nothing() {
        let mut map = vec![0.0; 16];
        Kernel::aog().accumulate(&mut map, 4, [-50.0, 2.0], 1.0);
        Kernel::aog().accumulate(&mut map, 4, [2.0, 80.0], 1.0);
        assert!(map.iter().all(|&v| v == 0.0));
    }
}
