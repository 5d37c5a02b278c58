//! Search window and candidate grid of a node (spec §1.6 steps 1–2, `getBasicSettings.m`).

/// Candidates per axis (`positionCandNum = 6`): a node is scored at 6 × 6 sub-pixel points.
pub(crate) const CANDIDATES_PER_AXIS: usize = 6;
/// Candidates per node (36), ordered with the h offset varying fastest: `c = i_w · 6 + i_h`.
pub const CANDIDATES: usize = CANDIDATES_PER_AXIS * CANDIDATES_PER_AXIS;

/// Search half-range `h = round(min(max_range · H / 2, deform_ratio · σ))` in map cells
/// (spec §1.6 step 1). Rounds half away from zero, like MATLAB.
pub fn half_range(sigma: f64, map_size: usize, max_range: f64, deform_ratio: f64) -> usize {
    let h = (max_range * map_size as f64 / 2.0).min(deform_ratio * sigma).round();
    if h.is_finite() && h > 0.0 {
        h as usize
    } else {
        0
    }
}

/// The 6 candidate offsets of half-range `h`: midpoints of 6 equal bins of `[-h, h]`
/// (spec §1.6 step 2), e.g. `h = 2` → `±1/3, ±1, ±5/3`.
pub fn candidate_offsets(h: usize) -> [f64; CANDIDATES_PER_AXIS] {
    let h = h as f64;
    let n = CANDIDATES_PER_AXIS;
    // Same arithmetic as Octave's linspace(-h, h, 7), which is built symmetrically from both
    // ends (and 0 in the middle), then the bin midpoints: the offsets are exactly symmetric, and
    // reference-compat runs see bit-identical values.
    let delta = (h - -h) / n as f64;
    let edge = |i: usize| {
        if i == 0 {
            -h
        } else if i == n {
            h
        } else if 2 * i == n {
            0.0
        } else if 2 * i < n {
            -h + i as f64 * delta
        } else {
            h - (n - i) as f64 * delta
        }
    };
    std::array::from_fn(|i| (edge(i) + edge(i + 1)) / 2.0)
}

/// Spacing of the candidate grid of half-range `h` (`2h / 6`), the `unit` of the σ update.
pub fn grid_spacing(h: usize) -> f64 {
    2.0 * h as f64 / CANDIDATES_PER_AXIS as f64
}

/// 1-D normal density `g(x; σ) = exp(-x² / 2σ²) / (√(2π) σ)`.
pub(crate) fn normal_pdf(x: f64, sigma: f64) -> f64 {
    (-x * x / (2.0 * sigma * sigma)).exp() / (SQRT_2PI * sigma)
}

/// `√(2π)`.
pub(crate) const SQRT_2PI: f64 = 2.506_628_274_631_000_7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_range_matches_the_spec_examples() {
        // Initial σ = 0.15·H: conv4 (28) → 4, conv5 (14) → 2; the 0.3·H/2 cap binds for wide σ.
        assert_eq!(half_range(4.2, 28, 0.3, 3.0), 4);
        assert_eq!(half_range(2.1, 14, 0.3, 3.0), 2);
        assert_eq!(half_range(10.0, 28, 0.3, 3.0), 4);
        // Narrow σ: 3 · 0.45 = 1.35 → 1; 3 · 0.5 = 1.5 → 2 (half away from zero).
        assert_eq!(half_range(0.45, 28, 0.3, 3.0), 1);
        assert_eq!(half_range(0.5, 28, 0.3, 3.0), 2);
    }

    #[test]
    fn offsets_are_bin_midpoints() {
        let o = candidate_offsets(4);
        let want = [-10.0 / 3.0, -2.0, -2.0 / 3.0, 2.0 / 3.0, 2.0, 10.0 / 3.0];
        for (a, b) in o.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{o:?}");
        }
        for h in 1..6 {
            let o = candidate_offsets(h);
            assert!((0..6).all(|i| o[i] == -o[5 - i]), "exactly symmetric: {o:?}");
        }
        let o = candidate_offsets(2);
        let want = [-5.0 / 3.0, -1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0, 5.0 / 3.0];
        for (a, b) in o.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{o:?}");
        }
        assert!((grid_spacing(4) - 4.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn normal_pdf_by_hand() {
        assert!((normal_pdf(0.0, 1.0) - 0.398_942_280_401_432_7).abs() < 1e-15);
        assert!((normal_pdf(2.0, 2.0) - 0.120_985_362_259_571_6).abs() < 1e-15);
    }
}
