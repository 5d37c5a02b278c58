//! A branch-free `e^x` the compiler can inline and vectorize, for the learner's hot loops: the
//! E-step's kernel and sibling factors (spec §1.6, §2.3) and the co-movement similarity of
//! parent selection (spec §2.2, one exponential per child × candidate × image). Reference-compat
//! arithmetic keeps [`f64::exp`].

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

/// `e^x` for `x ≤ 709`, within 3 ulp of [`f64::exp`]; exactly 0 below −708 (where `e^x` is
/// below 3.3e-308 and [`f64::exp`] would give a subnormal). Cody–Waite reduction
/// `x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, and the degree-13 Taylor polynomial of `e^r` (truncation
/// error below 1e-17 relative); `2^k` is built from the exponent bits.
#[inline(always)]
pub fn fast_exp(x: f64) -> f64 {
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

/// [`fast_exp`] of 8 lanes with AVX-512: the same IEEE operations in the same order per lane
/// (no fused multiply-add), so every lane is bit-identical to [`fast_exp`] of it.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn fast_exp_avx512(x: std::arch::x86_64::__m512d) -> std::arch::x86_64::__m512d {
    use std::arch::x86_64::*;
    let c = |v: f64| _mm512_set1_pd(v);
    let magic = c(MAGIC);
    let t = _mm512_add_pd(_mm512_mul_pd(x, c(std::f64::consts::LOG2_E)), magic);
    let k = _mm512_sub_pd(t, magic);
    let r = _mm512_sub_pd(_mm512_sub_pd(x, _mm512_mul_pd(k, c(LN2_HI))), _mm512_mul_pd(k, c(LN2_LO)));
    let r2 = _mm512_mul_pd(r, r);
    let r4 = _mm512_mul_pd(r2, r2);
    let r8 = _mm512_mul_pd(r4, r4);
    let q = |i: usize| _mm512_add_pd(c(C[i]), _mm512_mul_pd(c(C[i + 1]), r));
    let low = _mm512_add_pd(
        _mm512_add_pd(q(0), _mm512_mul_pd(q(2), r2)),
        _mm512_mul_pd(_mm512_add_pd(q(4), _mm512_mul_pd(q(6), r2)), r4),
    );
    let high = _mm512_add_pd(_mm512_add_pd(q(8), _mm512_mul_pd(q(10), r2)), _mm512_mul_pd(q(12), r4));
    let p = _mm512_add_pd(low, _mm512_mul_pd(high, r8));
    let bits = _mm512_sub_epi64(_mm512_castpd_si512(t), _mm512_set1_epi64(MAGIC.to_bits() as i64));
    let scale = _mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_add_epi64(bits, _mm512_set1_epi64(1023))));
    let below = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, c(-708.0));
    _mm512_mask_blend_pd(below, _mm512_mul_pd(p, scale), _mm512_setzero_pd())
}

/// [`fast_exp`] of 4 lanes with AVX2, as [`fast_exp_avx512`] of 8: the same IEEE operations in
/// the same order per lane (no fused multiply-add), so every lane is bit-identical to
/// [`fast_exp`] of it.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub unsafe fn fast_exp_avx2(x: std::arch::x86_64::__m256d) -> std::arch::x86_64::__m256d {
    use std::arch::x86_64::*;
    let c = |v: f64| _mm256_set1_pd(v);
    let magic = c(MAGIC);
    let t = _mm256_add_pd(_mm256_mul_pd(x, c(std::f64::consts::LOG2_E)), magic);
    let k = _mm256_sub_pd(t, magic);
    let r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(k, c(LN2_HI))), _mm256_mul_pd(k, c(LN2_LO)));
    let r2 = _mm256_mul_pd(r, r);
    let r4 = _mm256_mul_pd(r2, r2);
    let r8 = _mm256_mul_pd(r4, r4);
    let q = |i: usize| _mm256_add_pd(c(C[i]), _mm256_mul_pd(c(C[i + 1]), r));
    let low = _mm256_add_pd(
        _mm256_add_pd(q(0), _mm256_mul_pd(q(2), r2)),
        _mm256_mul_pd(_mm256_add_pd(q(4), _mm256_mul_pd(q(6), r2)), r4),
    );
    let high = _mm256_add_pd(_mm256_add_pd(q(8), _mm256_mul_pd(q(10), r2)), _mm256_mul_pd(q(12), r4));
    let p = _mm256_add_pd(low, _mm256_mul_pd(high, r8));
    let bits = _mm256_sub_epi64(_mm256_castpd_si256(t), _mm256_set1_epi64x(MAGIC.to_bits() as i64));
    let scale = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(bits, _mm256_set1_epi64x(1023))));
    let below = _mm256_cmp_pd::<_CMP_LT_OQ>(x, c(-708.0));
    _mm256_blendv_pd(_mm256_mul_pd(p, scale), _mm256_setzero_pd(), below)
}

/// 1.5 · 2^23: [`MAGIC`] for `f32`.
const MAGIC_F32: f32 = 12_582_912.0;
/// ln 2 split for `f32` (Cody–Waite): the high part has 9 significant bits, so `k · LN2_HI_F32`
/// is exact for every `k` the domain needs (|k| ≤ 128).
#[allow(clippy::excessive_precision)] // the exact value (355 / 512)
const LN2_HI_F32: f32 = 0.693_359_375;
#[allow(clippy::excessive_precision)]
const LN2_LO_F32: f32 = -2.121_944_400_5e-4;

/// An upper bound of `|fast_exp_f32(x) / e^x − 1|` for `−87 ≤ x ≤ 0`, with headroom: the test
/// `fast_exp_f32_is_within_its_bound` measures the worst error of a dense sweep of that domain
/// (2.5e-7) and fails above a quarter of this bound.
pub const FAST_EXP_F32_MAX_REL_ERROR: f64 = 4e-6;

/// `e^x` in `f32` for screening, not for results: within [`FAST_EXP_F32_MAX_REL_ERROR`] of `e^x`
/// (relative) on `[−87, 0]`, exactly 0 below −87, NaN for NaN. Cody–Waite reduction
/// `x = k·ln 2 + r` and the degree-6 Taylor polynomial of `e^r` (truncation error below 1.3e-7
/// relative); branch-free, so loops over it vectorize (8 lanes per AVX2 register).
#[inline(always)]
pub fn fast_exp_f32(x: f32) -> f32 {
    let t = x * std::f32::consts::LOG2_E + MAGIC_F32;
    let k = t - MAGIC_F32;
    let r = (x - k * LN2_HI_F32) - k * LN2_LO_F32;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t and MAGIC_F32 share an exponent, so their bit patterns differ by k (two's complement).
    let scale = f32::from_bits(t.to_bits().wrapping_sub(MAGIC_F32.to_bits()).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// [`fast_exp_f32`] of 8 lanes with AVX2 and fused multiply-adds (so not bit-identical to it,
/// but within the same [`FAST_EXP_F32_MAX_REL_ERROR`] on `[−87, 0]`, tested likewise): exactly 0
/// below −87, NaN for NaN.
///
/// # Safety
/// The CPU must support AVX2 and FMA (callers inside an `avx2,fma` function need no `unsafe`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn fast_exp_f32_avx2(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = |v: f32| _mm256_set1_ps(v);
    let magic = c(MAGIC_F32);
    let t = _mm256_fmadd_ps(x, c(std::f32::consts::LOG2_E), magic);
    let k = _mm256_sub_ps(t, magic);
    let r = _mm256_fnmadd_ps(k, c(LN2_LO_F32), _mm256_fnmadd_ps(k, c(LN2_HI_F32), x));
    let mut p = c(1.0 / 720.0);
    for a in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, c(a));
    }
    let bits = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(MAGIC_F32.to_bits() as i32));
    let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(bits, _mm256_set1_epi32(127))));
    let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, c(-87.0));
    _mm256_andnot_ps(below, _mm256_mul_ps(p, scale))
}

#[cfg(test)]
mod tests {
    use super::fast_exp as exp;

    /// A dense sweep of `[−720, 10]` and the edge cases, a multiple of 8 values long.
    #[cfg(target_arch = "x86_64")]
    fn sweep() -> Vec<f64> {
        let mut xs: Vec<f64> = (0..=400_000).map(|i| -720.0 + 730.0 * f64::from(i) / 400_000.0).collect();
        xs.extend([0.0, -0.0, -1e-300, -708.0, -708.0000001, 709.0, f64::NAN, f64::NEG_INFINITY, -1e-17]);
        while !xs.len().is_multiple_of(8) {
            xs.push(-0.5);
        }
        xs
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_lanes_are_bit_identical_to_the_scalar_exp() {
        use std::arch::x86_64::*;
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        for chunk in sweep().chunks_exact(8) {
            let mut out = [0.0f64; 8];
            // SAFETY: AVX-512 F checked above; `chunk` and `out` hold 8 values.
            unsafe { _mm512_storeu_pd(out.as_mut_ptr(), super::fast_exp_avx512(_mm512_loadu_pd(chunk.as_ptr()))) };
            for (x, o) in chunk.iter().zip(out) {
                assert_eq!(o.to_bits(), exp(*x).to_bits(), "x = {x}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_lanes_are_bit_identical_to_the_scalar_exp() {
        use std::arch::x86_64::*;
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for chunk in sweep().chunks_exact(4) {
            let mut out = [0.0f64; 4];
            // SAFETY: AVX2 checked above; `chunk` and `out` hold 4 values.
            unsafe { _mm256_storeu_pd(out.as_mut_ptr(), super::fast_exp_avx2(_mm256_loadu_pd(chunk.as_ptr()))) };
            for (x, o) in chunk.iter().zip(out) {
                assert_eq!(o.to_bits(), exp(*x).to_bits(), "x = {x}");
            }
        }
    }

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

    #[test]
    fn fast_exp_f32_is_within_its_bound() {
        assert_f32_exp_within_bound(super::fast_exp_f32);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fast_exp_f32_avx2_is_within_the_same_bound() {
        use std::arch::x86_64::*;
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        assert_f32_exp_within_bound(|x| {
            let mut out = [0.0f32; 8];
            // SAFETY: AVX2 and FMA checked above; `out` holds 8 values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), super::fast_exp_f32_avx2(_mm256_set1_ps(x))) };
            assert!(out.iter().all(|o| o.to_bits() == out[0].to_bits()));
            out[0]
        });
    }

    /// `exp` is within a quarter of [`super::FAST_EXP_F32_MAX_REL_ERROR`] of `e^x` on a dense
    /// sweep of `[−87, 0]`, 0 below −87 and NaN for NaN.
    fn assert_f32_exp_within_bound(exp: impl Fn(f32) -> f32) {
        use super::FAST_EXP_F32_MAX_REL_ERROR;
        let mut worst: f64 = 0.0;
        let mut check = |x: f32| {
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(exp(x)) - want).abs() / want);
        };
        // Every 2^-16 of [−87, 0], every 4099th f32 of [−2^-10, −2^-40], and the ends.
        for i in 0..=(87 << 16) {
            check(-(i as f32) / 65_536.0);
        }
        let mut x = -(2f32.powi(-10));
        while x < -(2f32.powi(-40)) {
            check(x);
            x = f32::from_bits(x.to_bits() - 4099);
        }
        for x in [0.0f32, -0.0, -87.0, -86.999_99, -1e-30, -f32::MIN_POSITIVE] {
            check(x);
        }
        assert!(worst <= FAST_EXP_F32_MAX_REL_ERROR / 4.0, "worst relative error {worst:e}");
        assert_eq!(exp(-87.000_01), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }
}
