//! Run-time choice of the vector instruction set of the learner's hot loops.
//!
//! A hot loop (the co-movement similarity of `expgraph-cliques`, spec §2.2) is written once as
//! portable Rust and compiled a second time with AVX2 enabled ([`isa_dispatch!`](crate::isa_dispatch)),
//! or written with explicit vectors ([`fast_exp_avx512`](crate::fast_exp_avx512), [`fast_exp_avx2`](crate::fast_exp_avx2));
//! [`Isa::detect`] picks the widest the CPU has. No fused multiply-add is used and Rust never
//! contracts `a * b + c` on its own, so every vector lane performs the same IEEE operations, in
//! the same order, as the portable code: results are bit-identical whatever the ISA (tests
//! compare them). The E-step gained nothing from merely recompiling its loops for wider vectors;
//! its AVX-512 paths are written out instead, with a node's six candidates of one axis in the
//! lanes of one register: the evidence's kernel tables and its 36 sums held in registers over
//! the window (`evidence.rs`), and the siblings' Gaussian factors and the 36 mixture
//! normalizers likewise (`estep.rs`). Its AVX2 paths do the same with the six candidates in two
//! registers ([`Six`]), a blend standing for each masked operation.

/// The lanes of an AVX-512 register of `f64` that hold a node's six candidates on one axis.
#[cfg(target_arch = "x86_64")]
pub(crate) const CANDIDATE_LANES: std::arch::x86_64::__mmask8 = (1 << crate::settings::CANDIDATES_PER_AXIS) - 1;

/// Writes lanes 0..6 of `v` to `out`, lanes where `keep` is clear as +0.0. Two plain stores
/// (four lanes and two), not a masked one: a load of `out` soon after can then be served from
/// the store buffer (a masked store stalls it).
///
/// # Safety
/// The CPU must have AVX-512 F and DQ.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
pub(crate) unsafe fn store_candidates(
    out: &mut [f64; crate::settings::CANDIDATES_PER_AXIS],
    keep: std::arch::x86_64::__mmask8,
    v: std::arch::x86_64::__m512d,
) {
    use std::arch::x86_64::*;
    let v = _mm512_maskz_mov_pd(keep, v);
    // SAFETY: `out` holds 6 values: 4 at 0 and 2 at 4.
    unsafe {
        _mm256_storeu_pd(out.as_mut_ptr(), _mm512_castpd512_pd256(v));
        _mm_storeu_pd(out.as_mut_ptr().add(4), _mm512_extractf64x2_pd::<2>(v));
    }
}

/// A node's six candidates on one axis in two AVX2 registers, the E-step's counterpart of an
/// AVX-512 register's lanes 0..6 ([`CANDIDATE_LANES`]): lanes 0..4 in the first, 4..6 in the
/// second, whose upper two lanes are never stored (and never reach [`Six::bits`]). Every method
/// performs one IEEE operation per lane, as the portable code does per candidate.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Six([std::arch::x86_64::__m256d; 2]);

#[cfg(target_arch = "x86_64")]
#[allow(clippy::should_implement_trait)]
impl Six {
    /// The six values of `f` (the unused lanes are +0.0).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn load(f: &[f64]) -> Self {
        use std::arch::x86_64::*;
        let f: &[f64; crate::settings::CANDIDATES_PER_AXIS] = f[..6].try_into().expect("six candidates");
        // SAFETY: `f` holds 6 values: 4 at 0, then 2 at 4.
        unsafe { Self([_mm256_loadu_pd(f.as_ptr()), _mm256_zextpd128_pd256(_mm_loadu_pd(f.as_ptr().add(4)))]) }
    }

    /// `x` in every lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn splat(x: f64) -> Self {
        Self([std::arch::x86_64::_mm256_set1_pd(x); 2])
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn zip(
        self,
        o: Self,
        f: impl Fn(std::arch::x86_64::__m256d, std::arch::x86_64::__m256d) -> std::arch::x86_64::__m256d,
    ) -> Self {
        Self([f(self.0[0], o.0[0]), f(self.0[1], o.0[1])])
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn add(self, o: Self) -> Self {
        self.zip(o, |a, b| std::arch::x86_64::_mm256_add_pd(a, b))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn sub(self, o: Self) -> Self {
        self.zip(o, |a, b| std::arch::x86_64::_mm256_sub_pd(a, b))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn mul(self, o: Self) -> Self {
        self.zip(o, |a, b| std::arch::x86_64::_mm256_mul_pd(a, b))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn div(self, o: Self) -> Self {
        self.zip(o, |a, b| std::arch::x86_64::_mm256_div_pd(a, b))
    }

    /// `self.max(o)` per lane with `f64::max`'s NaN rule where `o` is not NaN: `o` when `self`
    /// is NaN.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn max(self, o: Self) -> Self {
        self.zip(o, |a, b| std::arch::x86_64::_mm256_max_pd(a, b))
    }

    /// `-self` (the sign bit flipped, as Rust's negation does).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn neg(self) -> Self {
        self.zip(Self::splat(-0.0), |a, b| std::arch::x86_64::_mm256_xor_pd(a, b))
    }

    /// [`fast_exp`](crate::fast_exp) per lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn exp(self) -> Self {
        use crate::fast_exp::fast_exp_avx2 as exp;
        // SAFETY: AVX2, as this function requires. (Written out: through a closure the calls
        // were not inlined.)
        unsafe { Self([exp(self.0[0]), exp(self.0[1])]) }
    }

    /// The lane mask of `self < o` (ordered: false with a NaN).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn lt(self, o: Self) -> Self {
        self.zip(o, |a, b| std::arch::x86_64::_mm256_cmp_pd::<{ std::arch::x86_64::_CMP_LT_OQ }>(a, b))
    }

    /// The lane mask of `lo ≤ self ≤ hi` (ordered).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn within(self, lo: f64, hi: f64) -> Self {
        use std::arch::x86_64::*;
        let ge = self.zip(Self::splat(lo), |a, b| _mm256_cmp_pd::<_CMP_GE_OQ>(a, b));
        let le = self.zip(Self::splat(hi), |a, b| _mm256_cmp_pd::<_CMP_LE_OQ>(a, b));
        ge.zip(le, |a, b| _mm256_and_pd(a, b))
    }

    /// The six lanes of a mask as the bits 0..6 of a byte, as an AVX-512 mask.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn bits(self) -> u8 {
        use std::arch::x86_64::*;
        ((_mm256_movemask_pd(self.0[0]) | (_mm256_movemask_pd(self.0[1]) << 4)) & 0x3f) as u8
    }

    /// `self + x` where `mask` is set, `self` elsewhere (an AVX-512 masked add).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn add_where(self, mask: Self, x: Self) -> Self {
        Self::select(mask, self.add(x), self)
    }

    /// `if_set` where `mask` is set, `other` elsewhere.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn select(mask: Self, if_set: Self, other: Self) -> Self {
        let pick = |m, a, b| std::arch::x86_64::_mm256_blendv_pd(b, a, m);
        Self([pick(mask.0[0], if_set.0[0], other.0[0]), pick(mask.0[1], if_set.0[1], other.0[1])])
    }

    /// Lanes 0..6 into `out`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn store(self, out: &mut [f64]) {
        use std::arch::x86_64::*;
        let out: &mut [f64; crate::settings::CANDIDATES_PER_AXIS] = (&mut out[..6]).try_into().expect("six candidates");
        // SAFETY: `out` holds 6 values: 4 at 0, then 2 at 4.
        unsafe {
            _mm256_storeu_pd(out.as_mut_ptr(), self.0[0]);
            _mm_storeu_pd(out.as_mut_ptr().add(4), _mm256_castpd256_pd128(self.0[1]));
        }
    }

    /// All eight lanes (six candidates, then the two unused ones).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn lanes(self) -> [f64; 8] {
        let mut out = [0.0; 8];
        // SAFETY: `out` holds 8 values.
        unsafe {
            std::arch::x86_64::_mm256_storeu_pd(out.as_mut_ptr(), self.0[0]);
            std::arch::x86_64::_mm256_storeu_pd(out.as_mut_ptr().add(4), self.0[1]);
        }
        out
    }
}

/// Vector instruction set of a compiled copy of a hot loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The build's baseline (x86-64: SSE2), or any non-x86 target.
    Baseline,
    /// x86-64 with AVX2 (256-bit vectors, 64-bit integer lanes).
    Avx2,
    /// x86-64 with AVX-512 F/DQ/VL (512-bit vectors).
    Avx512,
}

impl Isa {
    /// The widest ISA this CPU supports, capped by the environment variable `EXPGRAPH_ISA`
    /// (`baseline`, `avx2` or `avx512`) when set; cached after the first call.
    #[inline]
    pub fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = Self::supported();
            let cap = match std::env::var("EXPGRAPH_ISA").as_deref() {
                Ok("baseline") => Self::Baseline,
                Ok("avx2") => Self::Avx2,
                _ => Self::Avx512,
            };
            best.min(cap)
        })
    }

    /// The widest ISA this CPU supports.
    fn supported() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx2")
            {
                return Self::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Baseline
    }

    /// Every ISA this CPU can run, narrowest first (for tests that compare them).
    pub fn available() -> Vec<Self> {
        let best = Self::supported();
        [Self::Baseline, Self::Avx2, Self::Avx512].into_iter().filter(|i| *i <= best).collect()
    }
}

impl PartialOrd for Isa {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Isa {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// Defines `$name(isa, args…)`, which runs the `#[inline(always)]` function `$body(args…)`
/// compiled for `isa` (which the caller got from [`Isa::detect`] or [`Isa::available`]).
#[macro_export]
#[doc(hidden)]
macro_rules! isa_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match isa {
                    // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`: the CPU has these
                    // features.
                    $crate::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::Isa::Baseline => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            $body($($arg),*)
        }
    };
}
