//! Local evidence of every candidate (spec §1.6 step 3, the code's `prior`): the activations of
//! the node's window smoothed by the kernel with its floor, at the 36 sub-pixel candidates.
//!
//! The kernel is `floor + (G − floor)` inside the cut-off circle and `floor` beyond, so the
//! evidence splits exactly into
//! * the floor part, `floor · Σ_window max(x, 0)`, one summed-area-table lookup per node, and
//! * the Gaussian part, `Σ (G(d) − floor) · x` over (unit, candidate) pairs closer than the
//!   cut-off. Only units with `x > 0` contribute (`max(x, 0)` is 0 elsewhere), so it is
//!   accumulated from the window's positive units alone, found through a per-row bit set of the
//!   map. With `G = peak · e(d_h) · e(d_w)` the 1-D factors `e` come from per-row and per-column
//!   tables of the node, built once per node and image.
//!
//! Units are visited row by row, column by column, so each candidate's sum runs in a fixed order
//! whatever the thread count.

use crate::estep::{arr, EStepConfig, EStepScratch, NodeSetup};
use crate::fast_exp::fast_exp;
use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::isa::{store_candidates, Six, CANDIDATE_LANES};
use crate::kernel::SmoothingKernel;
use crate::reference::reference_evidence;
use crate::settings::{CANDIDATES, CANDIDATES_PER_AXIS};

const NC: usize = CANDIDATES_PER_AXIS;

/// For one window row (or column) `k`: the candidates of the node's axis within the kernel
/// cut-off of it, as the grid-index range `lo..hi`, with their squared distances and 1-D
/// kernel factors. Outside the range the distance is +∞ and the factor 0, so that a masked
/// loop over all 6 candidates adds exactly nothing there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AxisCells {
    lo: usize,
    hi: usize,
    d2: [f64; NC],
    e: [f64; NC],
}

impl Default for AxisCells {
    fn default() -> Self {
        Self { lo: 0, hi: 0, d2: [f64::INFINITY; NC], e: [0.0; NC] }
    }
}

/// Per-map buffers: the summed-area table of `max(x, 0)` and the bit set of positive units.
#[derive(Debug, Default, Clone)]
pub(crate) struct MapIndex {
    sat: Vec<f64>,
    bits: Vec<u64>,
    words_per_row: usize,
}

impl MapIndex {
    /// Indexes one `h × w` map.
    #[inline(always)]
    fn build(&mut self, map: &[f32], h: usize, w: usize) {
        self.words_per_row = w.div_ceil(64);
        self.bits.clear();
        self.bits.resize(h * self.words_per_row, 0);
        self.sat.clear();
        self.sat.resize((h + 1) * (w + 1), 0.0);
        for r in 0..h {
            let mut row = 0.0;
            for (c, &x) in map[r * w..(r + 1) * w].iter().enumerate() {
                if x > 0.0 {
                    row += f64::from(x);
                    self.bits[r * self.words_per_row + c / 64] |= 1 << (c % 64);
                }
                self.sat[(r + 1) * (w + 1) + c + 1] = self.sat[r * (w + 1) + c + 1] + row;
            }
        }
    }

    /// `Σ max(x, 0)` over the inclusive cell ranges `[r0, r1] × [c0, c1]`.
    #[inline(always)]
    fn sum(&self, w: usize, r0: usize, r1: usize, c0: usize, c1: usize) -> f64 {
        let s = |r: usize, c: usize| self.sat[r * (w + 1) + c];
        s(r1 + 1, c1 + 1) - s(r0, c1 + 1) - s(r1 + 1, c0) + s(r0, c0)
    }

    /// Whether the inclusive cell ranges `[r0, r1] × [c0, c1]` hold a positive unit.
    #[inline(always)]
    fn any(&self, r0: usize, r1: usize, c0: usize, c1: usize) -> bool {
        (r0..=r1).any(|r| (c0 / 64..=c1 / 64).any(|word| self.masked_word(r, word, c0, c1) != 0))
    }

    /// Calls `f(c)` for every positive unit `(r, c)`, `c` in `c0..=c1`, in increasing `c`.
    /// (`#[inline(always)]`: a closure written in an AVX-512 function is compiled for it too.)
    #[inline(always)]
    fn each_positive(&self, r: usize, c0: usize, c1: usize, mut f: impl FnMut(usize)) {
        for word in c0 / 64..=c1 / 64 {
            let mut bits = self.masked_word(r, word, c0, c1);
            while bits != 0 {
                f(word * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
    }

    /// The bit set of positive units of row `r`, word `word` (columns `64·word ..`), masked to
    /// columns `c0..=c1`.
    #[inline(always)]
    fn masked_word(&self, r: usize, word: usize, c0: usize, c1: usize) -> u64 {
        let mut bits = self.bits[r * self.words_per_row + word];
        let first = word * 64;
        if c0 > first {
            bits &= !0u64 << (c0 - first);
        }
        if c1 < first + 63 {
            bits &= !0u64 >> (63 - (c1 - first));
        }
        bits
    }
}

/// The [`AxisCells`] of window cells `lo..=hi` of one axis, for candidates `base + offsets`.
/// Distances are taken as in the reference: the offset minus the cell's offset from the base.
///
/// The factors run down the cells by the exact recurrence `e(d − 1) = e(d) · ρ`,
/// `ρ = exp((2d − 1) / 2σ²)`, whose ratio `ρ` itself shrinks by `exp(−1/σ²)` per cell: two
/// exponentials per candidate instead of one per (cell, candidate). Where a starting factor or
/// ratio could leave the f64 range (far candidates, a very narrow kernel), every factor is
/// evaluated directly.
#[inline(always)]
fn axis_cells(
    kernel: &SmoothingKernel,
    base: f64,
    offsets: &[f64; NC],
    lo: usize,
    hi: usize,
    out: &mut Vec<AxisCells>,
) {
    out.clear();
    let inv = 1.0 / (2.0 * kernel.sigma * kernel.sigma);
    let first = arr(|i| offsets[i] - (lo as f64 - base));
    let recur = first.iter().all(|d| d * d * inv < 600.0) && ((hi - lo) as f64 + 1.0) * inv < 300.0;
    let mut e = arr(|i| fast_exp(-first[i] * first[i] * inv));
    let mut ratio = arr(|i| fast_exp((2.0 * first[i] - 1.0) * inv));
    let shrink = fast_exp(-2.0 * inv);
    for k in lo..=hi {
        let rel = k as f64 - base;
        let mut cells = AxisCells { lo: NC, ..AxisCells::default() };
        for i in 0..NC {
            let d = offsets[i] - rel;
            // Offsets increase, so the candidates within the cut-off are a contiguous range.
            if d * d < kernel.cutoff_sq {
                cells.lo = cells.lo.min(i);
                cells.hi = i + 1;
                cells.d2[i] = d * d;
                cells.e[i] = if recur { e[i] } else { fast_exp(-d * d * inv) };
            }
            e[i] *= ratio[i];
            ratio[i] *= shrink;
        }
        cells.lo = cells.lo.min(cells.hi);
        out.push(cells);
    }
}

/// Local evidence (`prior`, spec §1.6 step 3) of all nodes' 36 candidates in one image.
///
/// `maps` is `[C, H, W]`; `shifts[v]` is the image-specific mean shift `Δμ_V(I)`; `out` gets
/// `nodes × 36` values, candidate order `i_w · 6 + i_h`.
pub fn evidence(
    cfg: &EStepConfig,
    nodes: &[NodeSetup],
    maps: &[f32],
    shifts: &[[f64; 2]],
    out: &mut [f64],
    scratch: &mut EStepScratch,
) {
    evidence_with(Isa::detect(), cfg, nodes, maps, shifts, out, scratch)
}

/// [`evidence`] with the Gaussian part's vector ISA given (the same bits for every ISA; tests
/// compare them).
pub(crate) fn evidence_with(
    isa: Isa,
    cfg: &EStepConfig,
    nodes: &[NodeSetup],
    maps: &[f32],
    shifts: &[[f64; 2]],
    out: &mut [f64],
    scratch: &mut EStepScratch,
) {
    let (h, w, k) = (cfg.height, cfg.width, cfg.nodes_per_filter);
    for (f, map) in maps.chunks_exact(h * w).enumerate() {
        if !cfg.reference_arithmetic {
            scratch.map_index.build(map, h, w);
        }
        for v in f * k..(f + 1) * k {
            let node = &nodes[v];
            let centre = [node.mu[0] + shifts[v][0] - 1.0, node.mu[1] + shifts[v][1] - 1.0];
            let (rc, cc) = (centre[0].round() as i64, centre[1].round() as i64);
            let prior = &mut out[v * CANDIDATES..(v + 1) * CANDIDATES];
            if cfg.reference_arithmetic {
                reference_evidence(cfg, node, rc, cc, map, prior, &mut scratch.templates);
                continue;
            }
            let win = node.window as i64;
            let (r_lo, r_hi) = ((rc - win).max(0), (rc + win).min(h as i64 - 1));
            let (c_lo, c_hi) = ((cc - win).max(0), (cc + win).min(w as i64 - 1));
            if r_lo > r_hi || c_lo > c_hi {
                prior.fill(0.0);
                continue;
            }
            let (r_lo, r_hi, c_lo, c_hi) = (r_lo as usize, r_hi as usize, c_lo as usize, c_hi as usize);
            let base = if cfg.rounded_window_centre { [rc as f64, cc as f64] } else { centre };
            let window = [r_lo, r_hi, c_lo, c_hi];
            if !scratch.map_index.any(r_lo, r_hi, c_lo, c_hi) {
                // No positive unit: the Gaussian part is +0.0 at every candidate, as the loops
                // below would leave it (their kernel tables are not needed).
                prior.fill(0.0);
            } else if cfg!(target_arch = "x86_64") && isa == Isa::Avx512 {
                // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`: the CPU has AVX-512
                // F/DQ/VL.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    gaussian_part_avx512(cfg, node, map, base, window, prior, scratch)
                };
            } else if cfg!(target_arch = "x86_64") && isa == Isa::Avx2 {
                // SAFETY: `isa` comes from `Isa::detect`/`Isa::available`: the CPU has AVX2.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    gaussian_part_avx2(cfg, node, map, base, window, prior, scratch)
                };
            } else {
                gaussian_part(cfg, node, map, base, window, prior, scratch);
            }
            let floor_part = cfg.kernel.floor * scratch.map_index.sum(w, r_lo, r_hi, c_lo, c_hi);
            for p in prior.iter_mut() {
                *p += floor_part;
            }
        }
    }
}

/// `Σ (G − floor) · x` of every candidate over the window `[r_lo, r_hi, c_lo, c_hi]`'s positive
/// units within the cut-off, into `prior` (overwritten).
#[inline(always)]
fn gaussian_part(
    cfg: &EStepConfig,
    node: &NodeSetup,
    map: &[f32],
    base: [f64; 2],
    [r_lo, r_hi, c_lo, c_hi]: [usize; 4],
    prior: &mut [f64],
    scratch: &mut EStepScratch,
) {
    let kern = &cfg.kernel;
    let (peak, floor, cut) = (kern.peak(), kern.floor, kern.cutoff_sq);
    axis_cells(kern, base[0], &node.offsets, r_lo, r_hi, &mut scratch.row_cells);
    axis_cells(kern, base[1], &node.offsets, c_lo, c_hi, &mut scratch.col_cells);
    prior.fill(0.0);
    let (rows, cols, index) = (&scratch.row_cells, &scratch.col_cells, &scratch.map_index);
    for (r, rt) in (r_lo..=r_hi).zip(rows) {
        if rt.lo == rt.hi {
            continue;
        }
        let line = &map[r * cfg.width..(r + 1) * cfg.width];
        index.each_positive(r, c_lo, c_hi, |c| {
            let ct = &cols[c - c_lo];
            let x = f64::from(line[c]);
            let floor_x = floor * x;
            for iw in ct.lo..ct.hi {
                let (limit, ew) = (cut - ct.d2[iw], peak * ct.e[iw] * x);
                let out: &mut [f64; NC] =
                    (&mut prior[iw * NC..(iw + 1) * NC]).try_into().expect("a column of candidates");
                // All 6 rows, masked by the cut-off circle (+∞ distance outside the row
                // range): branch-free, so it vectorizes. Outside the circle the mask makes
                // the addend +0.0, as `if d2 < limit { e · ew − floor_x } else { 0.0 }`.
                for ((o, d2), e) in out.iter_mut().zip(&rt.d2).zip(&rt.e) {
                    let mask = u64::from(*d2 < limit).wrapping_neg();
                    *o += f64::from_bits((e * ew - floor_x).to_bits() & mask);
                }
            }
        });
    }
}

/// [`gaussian_part`] with the 36 sums held in six 512-bit registers (one per candidate column
/// `i_w`, lanes `i_h`, two lanes unused) for the whole window. Every lane performs the portable
/// loop's operations in its order: `(peak · e_w) · x`, `e_h · ew − floor · x`, added where
/// `d2_h < cut − d2_w`. The portable loop visits only the columns `ct.lo..ct.hi`; outside them
/// `d2_w = +∞`, so `cut − d2_w = −∞` and the mask adds nothing here either. An unmasked lane
/// keeps its value, as the portable `+ 0.0` does (a sum never holds `−0.0`: it starts at `+0.0`
/// and every addend is `e·ew − floor·x` with `floor·x > 0` or exactly 0). Bit-identical results.
///
/// # Safety
/// The CPU must have AVX-512 F, DQ and VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
unsafe fn gaussian_part_avx512(
    cfg: &EStepConfig,
    node: &NodeSetup,
    map: &[f32],
    base: [f64; 2],
    [r_lo, r_hi, c_lo, c_hi]: [usize; 4],
    prior: &mut [f64],
    scratch: &mut EStepScratch,
) {
    use std::arch::x86_64::*;
    let kern = &cfg.kernel;
    let (peak, floor, cut) = (kern.peak(), kern.floor, kern.cutoff_sq);
    // SAFETY (both): the caller guarantees AVX-512 F/DQ/VL.
    unsafe {
        axis_cells_avx512(kern, base[0], &node.offsets, r_lo, r_hi, &mut scratch.row_cells);
        axis_cells_avx512(kern, base[1], &node.offsets, c_lo, c_hi, &mut scratch.col_cells);
    }
    let (rows, cols, index) = (&scratch.row_cells, &scratch.col_cells, &scratch.map_index);
    assert_eq!(prior.len(), CANDIDATES, "36 candidates");
    let mut acc = [_mm512_setzero_pd(); NC];
    for (r, rt) in (r_lo..=r_hi).zip(rows) {
        if rt.lo == rt.hi {
            continue;
        }
        // SAFETY: `d2` and `e` hold NC = 6 values; the masks read lanes 0..6 only.
        let (d2_h, e_h) = unsafe {
            (
                _mm512_mask_loadu_pd(_mm512_set1_pd(f64::INFINITY), CANDIDATE_LANES, rt.d2.as_ptr()),
                _mm512_maskz_loadu_pd(CANDIDATE_LANES, rt.e.as_ptr()),
            )
        };
        let line = &map[r * cfg.width..(r + 1) * cfg.width];
        index.each_positive(r, c_lo, c_hi, |c| {
            let ct = &cols[c - c_lo];
            let x = f64::from(line[c]);
            let floor_x = _mm512_set1_pd(floor * x);
            for (iw, acc) in acc.iter_mut().enumerate() {
                let limit = _mm512_set1_pd(cut - ct.d2[iw]);
                let ew = _mm512_set1_pd(peak * ct.e[iw] * x);
                let add = _mm512_sub_pd(_mm512_mul_pd(e_h, ew), floor_x);
                let inside = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(d2_h, limit);
                *acc = _mm512_mask_add_pd(*acc, inside, *acc, add);
            }
        });
    }
    for (column, acc) in prior.chunks_exact_mut(NC).zip(acc) {
        let column: &mut [f64; NC] = column.try_into().expect("6 candidates per column");
        // SAFETY: AVX-512, as the caller guarantees.
        unsafe { store_candidates(column, CANDIDATE_LANES, acc) };
    }
}

/// [`axis_cells`] with the 6 candidates in the lanes of one register, and
/// [`fast_exp_avx512`](crate::fast_exp_avx512), which is lane for lane [`fast_exp`]: each lane
/// performs the portable loop's operations in its order, so the cells are bit-identical. The
/// candidates within the cut-off are the set lanes of a mask (contiguous, as there).
///
/// # Safety
/// The CPU must have AVX-512 F, DQ and VL.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512dq,avx512vl")]
unsafe fn axis_cells_avx512(
    kernel: &SmoothingKernel,
    base: f64,
    offsets: &[f64; NC],
    lo: usize,
    hi: usize,
    out: &mut Vec<AxisCells>,
) {
    use crate::fast_exp::fast_exp_avx512 as exp;
    use std::arch::x86_64::*;
    out.clear();
    let inv = 1.0 / (2.0 * kernel.sigma * kernel.sigma);
    let (inv_v, cut) = (_mm512_set1_pd(inv), _mm512_set1_pd(kernel.cutoff_sq));
    // `-x` flips the sign bit, as Rust's negation does.
    let neg = |x: __m512d| _mm512_xor_pd(x, _mm512_set1_pd(-0.0));
    // SAFETY: `offsets` holds NC = 6 values; the mask reads lanes 0..6 only.
    let off = unsafe { _mm512_maskz_loadu_pd(CANDIDATE_LANES, offsets.as_ptr()) };
    let first = _mm512_sub_pd(off, _mm512_set1_pd(lo as f64 - base));
    let near =
        _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_mul_pd(_mm512_mul_pd(first, first), inv_v), _mm512_set1_pd(600.0));
    let recur = near & CANDIDATE_LANES == CANDIDATE_LANES && ((hi - lo) as f64 + 1.0) * inv < 300.0;
    // SAFETY (the exponentials): AVX-512 F, as the caller guarantees.
    let mut e = unsafe { exp(_mm512_mul_pd(_mm512_mul_pd(neg(first), first), inv_v)) };
    let two_first = _mm512_mul_pd(_mm512_set1_pd(2.0), first);
    let mut ratio = unsafe { exp(_mm512_mul_pd(_mm512_sub_pd(two_first, _mm512_set1_pd(1.0)), inv_v)) };
    let shrink = _mm512_set1_pd(fast_exp(-2.0 * inv));
    for k in lo..=hi {
        let d = _mm512_sub_pd(off, _mm512_set1_pd(k as f64 - base));
        let d2 = _mm512_mul_pd(d, d);
        let inside = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(d2, cut) & CANDIDATE_LANES;
        // SAFETY: AVX-512 F, as the caller guarantees.
        let factor = if recur { e } else { unsafe { exp(_mm512_mul_pd(_mm512_mul_pd(neg(d), d), inv_v)) } };
        let mut cells = AxisCells::default();
        if inside != 0 {
            cells.lo = inside.trailing_zeros() as usize;
            cells.hi = 8 - inside.leading_zeros() as usize;
        }
        // Outside the cut-off: distance +∞ and factor +0.0, as in `AxisCells::default`.
        let d2 = _mm512_mask_blend_pd(inside, _mm512_set1_pd(f64::INFINITY), d2);
        // SAFETY (both): AVX-512, as the caller guarantees.
        unsafe {
            store_candidates(&mut cells.d2, CANDIDATE_LANES, d2);
            store_candidates(&mut cells.e, inside, factor);
        }
        e = _mm512_mul_pd(e, ratio);
        ratio = _mm512_mul_pd(ratio, shrink);
        out.push(cells);
    }
}

/// [`gaussian_part_avx512`] in AVX2 registers: the 36 sums in six [`Six`] (one per candidate
/// column `i_w`) for the whole window, each lane performing the portable loop's operations in
/// its order and a blend standing for AVX-512's masked add. Bit-identical results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gaussian_part_avx2(
    cfg: &EStepConfig,
    node: &NodeSetup,
    map: &[f32],
    base: [f64; 2],
    [r_lo, r_hi, c_lo, c_hi]: [usize; 4],
    prior: &mut [f64],
    scratch: &mut EStepScratch,
) {
    let kern = &cfg.kernel;
    let (peak, floor, cut) = (kern.peak(), kern.floor, kern.cutoff_sq);
    axis_cells_avx2(kern, base[0], &node.offsets, r_lo, r_hi, &mut scratch.row_cells);
    axis_cells_avx2(kern, base[1], &node.offsets, c_lo, c_hi, &mut scratch.col_cells);
    let (rows, cols, index) = (&scratch.row_cells, &scratch.col_cells, &scratch.map_index);
    assert_eq!(prior.len(), CANDIDATES, "36 candidates");
    let mut acc = [Six::splat(0.0); NC];
    for (r, rt) in (r_lo..=r_hi).zip(rows) {
        if rt.lo == rt.hi {
            continue;
        }
        let (d2_h, e_h) = (Six::load(&rt.d2), Six::load(&rt.e));
        let line = &map[r * cfg.width..(r + 1) * cfg.width];
        index.each_positive(r, c_lo, c_hi, |c| {
            let ct = &cols[c - c_lo];
            let x = f64::from(line[c]);
            let floor_x = Six::splat(floor * x);
            for (iw, acc) in acc.iter_mut().enumerate() {
                let add = e_h.mul(Six::splat(peak * ct.e[iw] * x)).sub(floor_x);
                *acc = acc.add_where(d2_h.lt(Six::splat(cut - ct.d2[iw])), add);
            }
        });
    }
    for (column, acc) in prior.chunks_exact_mut(NC).zip(acc) {
        acc.store(column);
    }
}

/// [`axis_cells_avx512`] in AVX2 registers ([`Six`]): bit-identical cells.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn axis_cells_avx2(
    kernel: &SmoothingKernel,
    base: f64,
    offsets: &[f64; NC],
    lo: usize,
    hi: usize,
    out: &mut Vec<AxisCells>,
) {
    out.clear();
    let inv = 1.0 / (2.0 * kernel.sigma * kernel.sigma);
    let (inv_v, cut) = (Six::splat(inv), Six::splat(kernel.cutoff_sq));
    let off = Six::load(offsets);
    let first = off.sub(Six::splat(lo as f64 - base));
    let near = first.mul(first).mul(inv_v).lt(Six::splat(600.0)).bits();
    let recur = near == 0x3f && ((hi - lo) as f64 + 1.0) * inv < 300.0;
    let mut e = first.neg().mul(first).mul(inv_v).exp();
    let mut ratio = Six::splat(2.0).mul(first).sub(Six::splat(1.0)).mul(inv_v).exp();
    let shrink = Six::splat(fast_exp(-2.0 * inv));
    for k in lo..=hi {
        let d = off.sub(Six::splat(k as f64 - base));
        let d2 = d.mul(d);
        let inside = d2.lt(cut);
        let factor = if recur { e } else { d.neg().mul(d).mul(inv_v).exp() };
        let mut cells = AxisCells::default();
        let bits = inside.bits();
        if bits != 0 {
            cells.lo = bits.trailing_zeros() as usize;
            cells.hi = 8 - bits.leading_zeros() as usize;
        }
        // Outside the cut-off: distance +∞ and factor +0.0, as in `AxisCells::default`.
        Six::select(inside, d2, Six::splat(f64::INFINITY)).store(&mut cells.d2);
        Six::select(inside, factor, Six::splat(0.0)).store(&mut cells.e);
        e = e.mul(ratio);
        ratio = ratio.mul(shrink);
        out.push(cells);
    }
}
