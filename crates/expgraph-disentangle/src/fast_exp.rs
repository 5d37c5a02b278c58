//! A branch-free `e^x` the compiler can inline and vectorize, for the learner's hot loops: the
//! E-step's kernel and sibling factors (spec §1.6, §2.3) and the co-movement similarity of
//! parent selection (spec §2.2, one exponential per child × candidate × image). Reference-compat
//! arithmetic keeps [`f64::exp`].

/// `e^x` for `x ≤ 709`, within 3 ulp of [`f64::exp`]; exactly 0 below −708 (where `e^x` is
/// below 3.3e-308 and [`f64::exp`] would give a subnormal). Cody–Waite reduction
/// `x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, and the degree-13 Taylor polynomial of `e^r` (truncation
/// error below 1e-17 relative); `2^k` is built from the exponent bits.
#[inline(always)]
pub fn fast_exp(x: f64) -> f64 {
    /// 1.5 · 2^52: adding it rounds to an integer that sits in the low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    // fdlibm's split of ln 2, digits as published.
    #[allow(clippy::excessive_precision)]
    const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
    #[allow(clippy::excessive_precision)]
    const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
    /// 1/k! for k = 0..=13.
    const C: [f64; 14] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let t = x * std::f64::consts::LOG2_E + MAGIC;
    let k = t - MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Estrin's scheme: a short dependency chain, so consecutive calls overlap in the pipeline.
    let (r2, r4) = (r * r, r * r * (r * r));
    let r8 = r4 * r4;
    let q = |i: usize| C[i] + C[i + 1] * r;
    let low = (q(0) + q(2) * r2) + (q(4) + q(6) * r2) * r4;
    let high = (q(8) + q(10) * r2) + (q(12)) * r4;
    let p = low + high * r8;
    // t and MAGIC share an exponent, so their bit patterns differ by k (two's complement).
    let scale = f64::from_bits(t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(1023) << 52);
    if x < -708.0 {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::fast_exp as exp;

    #[test]
    fn matches_std_exp_within_three_ulp() {
        let mut worst: f64 = 0.0;
        // A dense sweep of the domain the similarity uses (x ≤ 0) and some of x > 0.
        for i in 0..=2_000_000 {
            let x = -708.0 + 717.0 * f64::from(i) / 2_000_000.0;
            let (ours, std) = (exp(x), x.exp());
            let ulp = f64::from_bits(std.to_bits() + 1) - std;
            worst = worst.max((ours - std).abs() / ulp);
        }
        assert!(worst <= 3.0, "worst error {worst} ulp");
        for x in [0.0f64, -0.0, -1e-300, -0.5, -1.0, 1.0, 709.0] {
            let ulp = f64::from_bits(x.exp().to_bits() + 1) - x.exp();
            assert!((exp(x) - x.exp()).abs() <= 3.0 * ulp, "{x}");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-708.5), 0.0);
        assert_eq!(exp(-1e6), 0.0);
    }
}
