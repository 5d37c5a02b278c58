//! A matrix product with the weights packed once, at load, for the NHWC convolutions of
//! [`crate::nhwc::GemmConv`] on AVX-512 CPUs: `C[m×n] = relu?(A[m×k]·B[k×n] + bias [+ residual])`,
//! with bias, residual and ReLU applied in registers (no separate pass over `C`).
//!
//! Why not the `gemm` crate, as before: it packs `B` on every call, and in a whole forward pass
//! the weights are no longer in cache when a layer runs. A ResNet's deep layers have few rows (49
//! output pixels per image in `layer4`) and megabytes of weights each, so those calls were bound
//! by streaming the weights: on the 2-core AVX-512 machine ResNet-50's `layer4` 1×1 convolutions
//! ran at 40–80 GFLOP/s inside the network, while the register tile below reaches about 175 on
//! one core with its operands in L1. Here
//! `B` is stored once as panels of [`NR`] columns (`[panel][k][NR]`, zero-padded), which the
//! kernel reads in order while prefetching the next panel; `A` (the activations, or their im2col
//! matrix) is read in place. Those layers now run 1.6–2.6× faster (timed layer by layer inside
//! the network, in turns with the `gemm` crate's path).
//!
//! Every output element starts from `bias` (plus the residual) and adds its `k` products one
//! after the other, in order of `k`, with fused multiply-adds; the blocking over `k` ([`KC`])
//! only stores and reloads the exact partial sum. So an element's value depends on its row of
//! `A`, its column of `B` and nothing else: not on the thread count, the task split, or how many
//! rows (images) the call has.

use rayon::prelude::*;

/// Columns per panel of packed weights: two AVX-512 registers of `f32`.
pub(crate) const NR: usize = 32;
/// Rows per register tile (12 × 2 accumulators, plus the two weight registers).
const MR: usize = 12;
/// Depth of one pass over a panel: `KC × NR` weights (16 KiB) stay in L1 across the row tiles.
const KC: usize = 128;
/// Rows per task.
const MC: usize = 96;

/// `B[k×n]` packed as panels of [`NR`] columns, `[panel][k][NR]`, the last one zero-padded.
pub(crate) struct PackedWeights {
    k: usize,
    n: usize,
    panels: usize,
    data: Vec<f32>,
}

/// The raw output pointer, shared by tasks that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row chunk × panel group) tiles of the output (see `matmul`).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl PackedWeights {
    /// Whether this CPU runs the packed kernel (AVX-512F).
    pub(crate) fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Packs the row-major `b` (`k × n`).
    pub(crate) fn new(b: &[f32], k: usize, n: usize) -> candle_core::Result<Self> {
        if b.len() != k * n {
            candle_core::bail!("packed weights: {} values for {k}×{n}", b.len())
        }
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for p in 0..panels {
            let cols = (n - p * NR).min(NR);
            for t in 0..k {
                data[(p * k + t) * NR..][..cols].copy_from_slice(&b[t * n + p * NR..][..cols]);
            }
        }
        Ok(Self { k, n, panels, data })
    }

    /// `relu?(a·B + bias [+ residual])`, row-major `m × n`; `a` is row-major `m × k`, `residual`
    /// (if any) `m × n`. Parallel on the rayon pool. Errors when the CPU lacks AVX-512F
    /// ([`PackedWeights::supported`]) or a size does not match.
    pub(crate) fn matmul(
        &self,
        a: &[f32],
        m: usize,
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> candle_core::Result<Vec<f32>> {
        let (k, n) = (self.k, self.n);
        if a.len() != m * k || bias.len() != n || residual.is_some_and(|r| r.len() != m * n) {
            candle_core::bail!(
                "packed matmul: sizes do not match (a {} for {m}×{k}, bias {} for {n}, residual {:?})",
                a.len(),
                bias.len(),
                residual.map(<[f32]>::len)
            )
        }
        if !Self::supported() {
            candle_core::bail!("packed matmul: this CPU has no AVX-512F")
        }
        let len = m * n;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return Ok(out);
        }
        // Tasks: row chunks of about MC rows (as even as whole register tiles allow) × groups of
        // panels, enough of them to keep every thread busy when there are few rows. The split
        // only schedules; it changes no value.
        let chunk_rows = m.div_ceil(m.div_ceil(MC)).next_multiple_of(MR);
        let chunks = m.div_ceil(chunk_rows);
        let wanted = 4 * rayon::current_num_threads();
        let groups = if chunks >= wanted { 1 } else { wanted.div_ceil(chunks).min(self.panels) };
        let per_group = self.panels.div_ceil(groups);
        let groups = self.panels.div_ceil(per_group);
        let dst = OutPtr(out.as_mut_ptr());
        (0..chunks * groups).into_par_iter().for_each(|task| {
            let (chunk, group) = (task / groups, task % groups);
            let rows = chunk * chunk_rows..(chunk * chunk_rows + chunk_rows).min(m);
            let panels = group * per_group..(group * per_group + per_group).min(self.panels);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F is present (checked above). `a` is m×k, `residual` m×n, `bias` n
            // (checked above), the output has capacity m×n; this task writes only rows `rows`
            // × the columns of `panels` of it, a tile no other task touches, and reads back only
            // what it wrote itself.
            unsafe {
                self.task_avx512(a, bias, residual, rows, panels, relu, dst.get())
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, panels, dst); // unreachable: `supported()` is false there
        });
        // SAFETY: the tasks cover rows 0..m (chunks of `chunk_rows`) × panels 0..panels (groups), each
        // (row, panel) once, and a task writes every row of its chunk and every column of its
        // panels below n (masked stores), on its first pass over k (or with k = 0, its only one):
        // all m×n values are initialized.
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// One task: rows `rows` × panels `panels` of the output `c` (row-major, `n` columns).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn task_avx512(
        &self,
        a: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        relu: bool,
        c: *mut f32,
    ) {
        let (k, n) = (self.k, self.n);
        let passes = k.div_ceil(KC).max(1);
        for pass in 0..passes {
            let k0 = pass * KC;
            let kc = (k - k0).min(KC);
            let last = pass + 1 == passes;
            for p in panels.clone() {
                let cols = (n - p * NR).min(NR);
                let mask: u32 = if cols == NR { u32::MAX } else { (1u32 << cols) - 1 };
                let b = self.data.as_ptr().wrapping_add((p * k + k0) * NR);
                // The same rows of the next panel, fetched while this one computes.
                let next =
                    if p + 1 < self.panels { self.data.as_ptr().wrapping_add(((p + 1) * k + k0) * NR) } else { b };
                let mut r0 = rows.start;
                while r0 < rows.end {
                    let tile = Tile {
                        a: a.as_ptr().wrapping_add(r0 * k + k0),
                        lda: k,
                        kc,
                        b,
                        next,
                        c: c.wrapping_add(r0 * n + p * NR),
                        ldc: n,
                        init: (pass == 0).then(|| {
                            (
                                bias.as_ptr().wrapping_add(p * NR),
                                residual.map(|r| r.as_ptr().wrapping_add(r0 * n + p * NR)),
                            )
                        }),
                        relu: relu && last,
                        mask,
                    };
                    let height = (rows.end - r0).min(MR);
                    // SAFETY: the caller's contract (sizes, AVX-512F) covers every tile of
                    // rows × panels: `height` rows from r0 < m, `kc` values of k from k0, the
                    // panel's columns below n (the mask), and the padded panel of `b`/`next`.
                    unsafe {
                        match height {
                            12 => tile.run::<12>(),
                            11 => tile.run::<11>(),
                            10 => tile.run::<10>(),
                            9 => tile.run::<9>(),
                            8 => tile.run::<8>(),
                            7 => tile.run::<7>(),
                            6 => tile.run::<6>(),
                            5 => tile.run::<5>(),
                            4 => tile.run::<4>(),
                            3 => tile.run::<3>(),
                            2 => tile.run::<2>(),
                            _ => tile.run::<1>(),
                        }
                    }
                    r0 += height;
                }
            }
        }
    }
}

/// One register tile: up to [`MR`] rows × one panel, over `kc` values of `k`.
#[cfg(target_arch = "x86_64")]
struct Tile {
    /// Row `r` of the tile's `A` block starts at `a + r·lda`.
    a: *const f32,
    lda: usize,
    kc: usize,
    /// The panel's `[kc][NR]` weights.
    b: *const f32,
    /// What to prefetch while computing (the next panel's weights).
    next: *const f32,
    /// Row `r` of the output tile starts at `c + r·ldc`.
    c: *mut f32,
    ldc: usize,
    /// On the first pass over `k`: the panel's bias and the residual tile (row stride `ldc`);
    /// later passes start from what `c` holds.
    init: Option<(*const f32, Option<*const f32>)>,
    /// `max(·, 0)` before storing (the last pass).
    relu: bool,
    /// The panel's columns below `n`.
    mask: u32,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// Computes the `R`-row tile.
    ///
    /// # Safety
    /// AVX-512F; `R` rows of `kc` values of `a`, `kc × NR` of `b` and `next`, and `R` rows of
    /// the masked columns of `c` (and of the residual) are valid.
    #[inline(always)]
    unsafe fn run<const R: usize>(&self) {
        // SAFETY: the function's contract.
        unsafe {
            use std::arch::x86_64::*;
            let (m0, m1) = (self.mask as u16, (self.mask >> 16) as u16);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            match self.init {
                Some((bias, residual)) => {
                    let (b0, b1) = (_mm512_maskz_loadu_ps(m0, bias), _mm512_maskz_loadu_ps(m1, bias.add(16)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = match residual {
                            Some(res) => {
                                let row = res.add(r * self.ldc);
                                [
                                    _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), b0),
                                    _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), b1),
                                ]
                            }
                            None => [b0, b1],
                        };
                    }
                }
                None => {
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let row = self.c.add(r * self.ldc);
                        *acc = [_mm512_maskz_loadu_ps(m0, row), _mm512_maskz_loadu_ps(m1, row.add(16))];
                    }
                }
            }
            for kk in 0..self.kc {
                _mm_prefetch::<_MM_HINT_T0>(self.next.add(kk * NR) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(self.next.add(kk * NR + 16) as *const i8);
                let b0 = _mm512_loadu_ps(self.b.add(kk * NR));
                let b1 = _mm512_loadu_ps(self.b.add(kk * NR + 16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*self.a.add(r * self.lda + kk));
                    acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
                }
            }
            let zero = _mm512_setzero_ps();
            for (r, acc) in acc.iter().enumerate() {
                let [mut x0, mut x1] = *acc;
                if self.relu {
                    x0 = _mm512_max_ps(x0, zero);
                    x1 = _mm512_max_ps(x1, zero);
                }
                let row = self.c.add(r * self.ldc);
                _mm512_mask_storeu_ps(row, m0, x0);
                _mm512_mask_storeu_ps(row.add(16), m1, x1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1) from a fixed generator.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The product by definition, in f64.
    fn reference(
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        bias: &[f32],
        res: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = f64::from(bias[j]) + res.map_or(0.0, |r| f64::from(r[i * n + j]));
                for t in 0..k {
                    s += f64::from(a[i * k + t]) * f64::from(b[t * n + j]);
                }
                out[i * n + j] = if relu { s.max(0.0) } else { s };
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_ragged_shapes() {
        if !PackedWeights::supported() {
            eprintln!("skipped: this CPU has no AVX-512F (the packed kernel is not used here)");
            return;
        }
        // Edges of every blocking: rows (MR, MC), columns (NR, masks), depth (KC, k = 0).
        for (m, k, n) in [(1, 1, 1), (13, 300, 33), (97, 257, 64), (49, 512, 70), (200, 0, 5), (12, 17, 31)] {
            let (a, b, bias, res) = (values(m * k, 1), values(k * n, 2), values(n, 3), values(m * n, 4));
            let packed = PackedWeights::new(&b, k, n).unwrap();
            for (residual, relu) in [(None, false), (Some(&res[..]), true), (Some(&res[..]), false), (None, true)] {
                let ours = packed.matmul(&a, m, &bias, residual, relu).unwrap();
                let want = reference(&a, &b, (m, k, n), &bias, residual, relu);
                let worst = ours.iter().zip(&want).map(|(&o, &w)| (f64::from(o) - w).abs()).fold(0.0, f64::max);
                assert!(worst <= 1e-5 * (k as f64 + 1.0).sqrt(), "{m}×{k}×{n}: max|Δ| = {worst}");
                if relu {
                    assert!(ours.iter().all(|&v| v >= 0.0), "{m}×{k}×{n}: a negative value after ReLU");
                }
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_the_row_count_or_the_threads() {
        if !PackedWeights::supported() {
            eprintln!("skipped: this CPU has no AVX-512F (the packed kernel is not used here)");
            return;
        }
        let (m, k, n) = (150, 600, 96);
        let (a, b, bias) = (values(m * k, 5), values(k * n, 6), values(n, 7));
        let packed = PackedWeights::new(&b, k, n).unwrap();
        let run = |threads: usize, rows: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| packed.matmul(&a[..rows * k], rows, &bias, None, true).unwrap())
        };
        let whole = run(1, m);
        for (threads, rows) in [(3, m), (2, 49), (1, 13), (4, 1)] {
            let part = run(threads, rows);
            assert!(
                part.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{threads} threads, {rows} rows: not bit-identical to the first rows of 1 thread, {m} rows"
            );
        }
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let packed = PackedWeights::new(&values(12, 1), 3, 4).unwrap();
        assert!(PackedWeights::new(&values(11, 1), 3, 4).is_err());
        let err = packed.matmul(&values(7, 2), 2, &values(4, 3), None, false).unwrap_err().to_string();
        assert!(err.contains("sizes do not match"), "{err}");
        let err = packed.matmul(&values(6, 2), 2, &values(4, 3), Some(&values(7, 4)), false).unwrap_err().to_string();
        assert!(err.contains("sizes do not match"), "{err}");
    }
}
