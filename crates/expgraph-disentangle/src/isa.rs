//! Run-time choice of the vector instruction set of the learner's hot loops.
//!
//! A hot loop (the co-movement similarity of `expgraph-cliques`, spec §2.2) is written once as
//! portable Rust and compiled a second time with AVX2 enabled ([`isa_dispatch!`](crate::isa_dispatch)),
//! or written with explicit AVX-512 vectors ([`fast_exp_avx512`](crate::fast_exp_avx512));
//! [`Isa::detect`] picks the widest the CPU has. No fused multiply-add is used and Rust never
//! contracts `a * b + c` on its own, so every vector lane performs the same IEEE operations, in
//! the same order, as the portable code: results are bit-identical whatever the ISA (tests
//! compare them). The E-step gained nothing from merely recompiling its loops for wider vectors;
//! its AVX-512 paths are written out instead, with a node's six candidates of one axis in the
//! lanes of one register: the evidence's kernel tables and its 36 sums held in registers over
//! the window (`evidence.rs`), and the siblings' Gaussian factors and the 36 mixture
//! normalizers likewise (`estep.rs`).

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
