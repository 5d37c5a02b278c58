//! A matrix product with the weights packed once, at load, for the NHWC convolutions of
//! [`crate::nhwc::GemmConv`] on AVX-512 and AVX2 CPUs: `C[m×n] = relu?(A[m×k]·B[k×n] + bias
//! [+ residual])`, with bias, residual and ReLU applied in registers (no separate pass over `C`).
//! The register tiles come in two instruction sets ([`PackedIsa`]) that give the same bits.
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
//! A convolution's `A` is its im2col matrix, which is never formed ([`Lhs::Conv`]): the kernel
//! reads each patch in place from the zero-padded NHWC input, one contiguous run of `kernel·C`
//! values per kernel row, with the tiles of an output row `stride·C` apart. That spares the
//! stem's 7 MB im2col matrix (written, then read back) and made it 2.8× faster in the network
//! (3.5 → 1.25 ms at batch 1, 2 threads).
//!
//! Every output element starts from `bias` (plus the residual) and adds its `k` products one
//! after the other, in order of `k`, with fused multiply-adds; the blocking over `k` ([`KC`])
//! only stores and reloads the exact partial sum. So an element's value depends on its row of
//! `A`, its column of `B` and nothing else: not on the thread count, the task split, or how many
//! rows (images) the call has, nor on the instruction set.
//!
//! On AVX2 (with FMA) a tile runs as sub-tiles of 3 rows × 32 columns (12 accumulators, 3
//! broadcasts and one weight register of the 16), the last ones of 2 rows where 3 + 1 would be
//! left (tiles of 7 rows, the output rows of 7 and 14 pixels: their strided layers ran 4–7 %
//! faster), over the same panels, in the same order. With
//! AVX-512 hidden from the whole process (`cargo xtask bench-backbone --isa avx2`, on the 2-core
//! AVX-512 machine) ResNet-50 runs 1.31–1.36× faster on it than on the `gemm` crate's AVX2
//! kernel (`conv_speed -- 20 resnet-packed`, interleaved).

use rayon::prelude::*;

/// Columns per panel of packed weights: two AVX-512 registers of `f32`.
pub(crate) const NR: usize = 32;
/// Rows per register tile (12 × 2 accumulators, plus the two weight registers).
const MR: usize = 12;
/// Depth of one pass over a panel: `KC × NR` weights (16 KiB) come into L1 for a tile, the
/// tile's `A` rows (6 KiB) stay there across the panels.
const KC: usize = 128;
/// The longest pass: a rest of at most `KC / 4` values of `k` joins the last full pass rather
/// than making a pass of its own, which would store and reload the whole output for a few
/// products. That is the stem (k = 147: one pass, not 128 + 19; 3–4 % faster at batch 1 and 8,
/// in turns on the 2-core Zen 4 machine).
const KC_MAX: usize = KC + KC / 4;
/// Rows per task.
const MC: usize = 96;
/// Rows of `A` a multiple of this many values (4 KiB) apart fall into the same sets of the L1
/// cache (8-way, 4 KiB a way), so a tile's 12 rows evict each other at every step of `k`: the
/// 1×1 convolutions with 1024 or 2048 input channels. The AVX-512 tile copies such rows, a pass
/// at a time, into rows [`COPY_LD`] apart (the same values, so the same bits). On the 2-core
/// Zen 4 machine that made 1024→256 at 14² 1.27× faster, 1024→512 at 14² 1.39× and 2048→512
/// at 7² 1.22× (one process, in turns); ResNet-50 1.035–1.075× faster.
const ALIASED: usize = 1024;
/// Row stride of `A`'s rows when copied (see [`ALIASED`]): a pass's values and 16 more.
const COPY_LD: usize = KC_MAX + 16;

/// The registers the kernel's tiles live in. Both run the same products in the same order
/// (fused multiply-adds from the bias up, in order of `k`), so they give every value the same
/// bits: AVX2 machines compute what AVX-512 ones do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PackedIsa {
    /// A tile of up to [`MR`] rows × [`NR`] columns in 24 AVX-512 registers.
    Avx512,
    /// The same tile as sub-tiles of 3 (or 2) rows × [`NR`] columns in 12 AVX2 registers (with
    /// FMA).
    Avx2,
}

impl PackedIsa {
    /// Whether this CPU runs it.
    pub(crate) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                PackedIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                PackedIsa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// What the CPU needs, for messages.
    pub(crate) fn needs(self) -> &'static str {
        match self {
            PackedIsa::Avx512 => "AVX-512F",
            PackedIsa::Avx2 => "AVX2 and FMA",
        }
    }

    /// Every one this CPU runs; says that the calling test is skipped when there is none.
    #[cfg(test)]
    pub(crate) fn available_or_skip() -> Vec<Self> {
        let isas: Vec<Self> = [PackedIsa::Avx512, PackedIsa::Avx2].into_iter().filter(|i| i.supported()).collect();
        if isas.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512F nor AVX2 with FMA (the packed kernel is not used here)");
        }
        isas
    }
}

/// `B[k×n]` packed as panels of [`NR`] columns, `[panel][k][NR]`, the last one zero-padded, for
/// the kernel on `isa`.
pub(crate) struct PackedWeights {
    isa: PackedIsa,
    k: usize,
    n: usize,
    panels: usize,
    data: Vec<f32>,
}

/// A raw output pointer, shared by tasks that write disjoint parts of the output: the tiles of
/// one product (see `run`), or the interleaved rows of Winograd's 16 products.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub *mut f32);
// SAFETY: every user shares it only among tasks that write disjoint values (see above).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }

    /// The pointer `offset` values in.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The im2col matrix of a square convolution, never formed: the kernel reads its rows in place
/// from the NHWC input. Row `(b, oy, ox)` holds the patch in (ky, kx, c) order; for one `ky` its
/// `kernel·c` values are one contiguous run of the input (the input is zero-padded already), and
/// the runs of neighbouring pixels of an output row lie `stride·c` apart.
#[derive(Clone, Copy)]
pub(crate) struct ConvLhs<'a> {
    /// NHWC `[images, height, width, c]`, its zero padding included.
    pub x: &'a [f32],
    pub images: usize,
    pub height: usize,
    pub width: usize,
    pub c: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl ConvLhs<'_> {
    /// Output rows and columns (`None` if the kernel does not fit or the stride is 0).
    fn out_size(&self) -> Option<(usize, usize)> {
        if self.stride == 0 {
            return None;
        }
        let side = |n: usize| Some(n.checked_sub(self.kernel)? / self.stride + 1);
        Some((side(self.height)?, side(self.width)?))
    }
}

/// The lhs `A` (`m × k`) of [`PackedWeights::product`], read in place.
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    /// `m` rows of `k` values, row `i` at `a[i·lda..]` (`lda ≥ k`; `lda = k`: row-major).
    Rows { a: &'a [f32], m: usize, lda: usize },
    /// A convolution's im2col matrix (`k = kernel²·c`), rows in NHWC output order.
    Conv(ConvLhs<'a>),
}

/// One register tile's rows: the first output row, the height, and where its `A` block starts.
struct TileRows {
    r0: usize,
    height: usize,
    a: usize,
}

impl<'a> Lhs<'a> {
    /// The values `A` is read from.
    fn data(&self) -> &'a [f32] {
        match self {
            Lhs::Rows { a, .. } => a,
            Lhs::Conv(conv) => conv.x,
        }
    }

    /// Rows of `A`.
    fn m(&self) -> usize {
        match self {
            Lhs::Rows { m, .. } => *m,
            Lhs::Conv(conv) => conv.out_size().map_or(0, |(oh, ow)| conv.images * oh * ow),
        }
    }

    /// How far apart the rows of a tile lie.
    fn lda(&self) -> usize {
        match self {
            Lhs::Rows { lda, .. } => *lda,
            Lhs::Conv(conv) => conv.stride * conv.c,
        }
    }

    /// Tasks split the rows into `units` (row blocks of whole register tiles; output rows of a
    /// convolution, whose tiles must not straddle two of them), `per_chunk` of them per chunk.
    /// Returns (units, per_chunk).
    fn units(&self) -> (usize, usize) {
        match self {
            Lhs::Rows { m, .. } => (m.div_ceil(MR), m.div_ceil(m.div_ceil(MC).max(1)).div_ceil(MR)),
            Lhs::Conv(conv) => {
                let (oh, ow) = conv.out_size().unwrap_or((0, 1));
                let lines = conv.images * oh;
                let want = (MC / ow).max(1);
                (lines, lines.div_ceil(lines.div_ceil(want).max(1)).max(1))
            }
        }
    }

    /// The register tiles of units `units` (see [`Lhs::units`]).
    fn tiles(&self, units: std::ops::Range<usize>, out: &mut Vec<TileRows>) {
        out.clear();
        match self {
            Lhs::Rows { m, lda, .. } => {
                for r0 in (units.start * MR..(units.end * MR).min(*m)).step_by(MR) {
                    out.push(TileRows { r0, height: (m - r0).min(MR), a: r0 * lda });
                }
            }
            Lhs::Conv(conv) => {
                let Some((oh, ow)) = conv.out_size() else { return };
                // Even heights (112 = 8 × 11 + 2 × 12, 14 = 7 + 7), not full tiles and a sliver.
                let count = ow.div_ceil(MR);
                for line in units {
                    let (b, oy) = (line / oh, line % oh);
                    let mut ox = 0;
                    for t in 0..count {
                        let height = ow / count + usize::from(t < ow % count);
                        let a = ((b * conv.height + oy * conv.stride) * conv.width + ox * conv.stride) * conv.c;
                        out.push(TileRows { r0: line * ow + ox, height, a });
                        ox += height;
                    }
                }
            }
        }
    }

    /// The pieces of `k0..k1` that are contiguous in every row: (offset from a row's start, length).
    fn pieces(&self, k0: usize, k1: usize, out: &mut Vec<(usize, usize)>) {
        out.clear();
        match self {
            Lhs::Rows { .. } => out.push((k0, k1 - k0)),
            Lhs::Conv(conv) => {
                let run = conv.kernel * conv.c;
                if run == 0 {
                    return;
                }
                for ky in k0 / run..k1.div_ceil(run) {
                    let (lo, hi) = (k0.max(ky * run), k1.min((ky + 1) * run));
                    out.push((ky * conv.width * conv.c + lo - ky * run, hi - lo));
                }
            }
        }
    }
}

impl PackedWeights {
    /// Packs the row-major `b` (`k × n`) for the kernel on `isa` (which [`PackedWeights::product`]
    /// checks the CPU has).
    pub(crate) fn new(b: &[f32], k: usize, n: usize, isa: PackedIsa) -> candle_core::Result<Self> {
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
        Ok(Self { isa, k, n, panels, data })
    }

    /// The kernel these weights are packed for.
    pub(crate) fn isa(&self) -> PackedIsa {
        self.isa
    }

    /// `relu?(A·B + bias [+ residual])`, row-major `m × n`, for `A` = `lhs` (`m × k`) and
    /// `residual` (if any) `m × n`. Parallel on the rayon pool. Errors when the CPU lacks the
    /// instructions of [`PackedWeights::isa`] or a size does not match. A convolution's
    /// [`Lhs::Conv`] gives bit for bit what its formed im2col matrix gives as [`Lhs::Rows`] (the
    /// same products, added in the same order).
    pub(crate) fn product(
        &self,
        lhs: Lhs<'_>,
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> candle_core::Result<Vec<f32>> {
        let (m, n) = (self.check(lhs, bias, residual)?, self.n);
        let len = m * n;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return Ok(out);
        }
        // SAFETY: checked above (sizes, the CPU); `out` has room for m rows of n values, row
        // stride n, and nothing else accesses it.
        unsafe { self.run(lhs, bias, residual, relu, OutPtr(out.as_mut_ptr()), n, true) };
        // SAFETY: `run` writes all m×n values (see there).
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// [`PackedWeights::product`] without a residual, on the calling thread only, writing row
    /// `i` of the result to `c[i·ldc..i·ldc + n]` (for results interleaved with others', like
    /// Winograd's 16 products); the same values.
    ///
    /// # Safety
    /// `c + i·ldc + j` is valid for writes for every `i < m`, `j < n`, and nothing else reads or
    /// writes those values while this runs.
    pub(crate) unsafe fn product_into(
        &self,
        lhs: Lhs<'_>,
        bias: &[f32],
        relu: bool,
        c: *mut f32,
        ldc: usize,
    ) -> candle_core::Result<()> {
        let m = self.check(lhs, bias, None)?;
        if ldc < self.n {
            candle_core::bail!("packed matmul: output rows of {ldc} values for {} columns", self.n)
        }
        if m * self.n > 0 {
            // SAFETY: checked above, and the caller's contract on `c`.
            unsafe { self.run(lhs, bias, None, relu, OutPtr(c), ldc, false) };
        }
        Ok(())
    }

    /// Checks the operands' sizes and the CPU; returns `m`.
    fn check(&self, lhs: Lhs<'_>, bias: &[f32], residual: Option<&[f32]>) -> candle_core::Result<usize> {
        let (k, n, m) = (self.k, self.n, lhs.m());
        let a = lhs.data();
        let lhs_ok = match lhs {
            Lhs::Rows { m, lda, .. } => lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k),
            Lhs::Conv(conv) => {
                conv.out_size().is_some()
                    && a.len() == conv.images * conv.height * conv.width * conv.c
                    && conv.kernel * conv.kernel * conv.c == k
            }
        };
        if !lhs_ok || bias.len() != n || residual.is_some_and(|r| r.len() != m * n) {
            candle_core::bail!(
                "packed matmul: sizes do not match (a {} for {m}×{k}, bias {} for {n}, residual {:?})",
                a.len(),
                bias.len(),
                residual.map(<[f32]>::len)
            )
        }
        if !self.isa.supported() {
            candle_core::bail!("packed matmul: this CPU lacks {} (packed for {:?})", self.isa.needs(), self.isa)
        }
        Ok(m)
    }

    /// Computes all m×n values into `c` (row `i` at `c + i·ldc`), on the rayon pool if
    /// `parallel`, else on this thread.
    ///
    /// # Safety
    /// [`PackedWeights::check`] passed for these operands; `c + i·ldc + j` is valid for writes
    /// for every `i < m`, `j < n` (`ldc ≥ n`), and nothing else accesses those values meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        &self,
        lhs: Lhs<'_>,
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
        dst: OutPtr,
        ldc: usize,
        parallel: bool,
    ) {
        // Tasks: chunks of rows (about MC, whole register tiles or whole output rows) × groups
        // of panels, enough of them to keep every thread busy when there are few rows. The split
        // only schedules; it changes no value.
        let (units, per_chunk) = lhs.units();
        let chunks = units.div_ceil(per_chunk);
        let wanted = if parallel { 4 * rayon::current_num_threads() } else { 1 };
        let groups = if chunks >= wanted { 1 } else { wanted.div_ceil(chunks).min(self.panels) };
        let per_group = self.panels.div_ceil(groups);
        let groups = self.panels.div_ceil(per_group);
        let task = |task: usize| {
            let (chunk, group) = (task / groups, task % groups);
            let units = chunk * per_chunk..(chunk * per_chunk + per_chunk).min(units);
            let panels = group * per_group..(group * per_group + per_group).min(self.panels);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the instructions of `isa` and `lhs`, `bias`, `residual` have
            // their sizes (the function's contract); this task writes only the rows of `units` ×
            // the columns of `panels` of the output, a tile no other task touches, and reads back
            // only what it wrote itself.
            unsafe {
                let args = (lhs, bias, residual, units, panels, relu, (dst.get(), ldc));
                match self.isa {
                    PackedIsa::Avx512 => self.task_avx512(args),
                    PackedIsa::Avx2 => self.task_avx2(args),
                }
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (units, panels, dst, ldc); // unreachable: `supported()` is false there
        };
        // The chunks' units cover rows 0..m (each row in one tile of one unit) × panels
        // 0..panels (groups), each (row, panel) once, and a task writes every row of its tiles
        // and every column of its panels below n (masked stores), on its first pass over k (or
        // with k = 0, its only one): all m×n values are written.
        if parallel {
            (0..chunks * groups).into_par_iter().for_each(task);
        } else {
            (0..chunks * groups).for_each(task);
        }
    }

    /// [`PackedWeights::task`] on AVX-512.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn task_avx512(&self, args: TaskArgs<'_>) {
        // SAFETY: the caller's contract, and AVX-512F is enabled here.
        unsafe { self.task::<Avx512>(args) }
    }

    /// [`PackedWeights::task`] on AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn task_avx2(&self, args: TaskArgs<'_>) {
        // SAFETY: the caller's contract, and AVX2 and FMA are enabled here.
        unsafe { self.task::<Avx2>(args) }
    }

    /// One task: the tiles of `units` (see [`Lhs::units`]) × panels `panels` of the output
    /// `(c, ldc)` (row `i` at `c + i·ldc`; the residual's rows are `n` apart), with the register
    /// tiles of `T`.
    ///
    /// Each pass over `KC` values of `k` (see [`passes`]) walks blocks of
    /// [`TileKernel::PANEL_BLOCK`] panels, in each block tile by tile and, for a tile, panel by
    /// panel: the tile's rows of `A` stay in L1 while the block's weights (128 KiB for 8 panels)
    /// come from L2, the next panel prefetched into L2 (see [`Tile::next`]). While a tile
    /// computes, the next tile's rows of `A` are fetched into L2 (where rows are copied, see
    /// [`ALIASED`], the tile's own rows of the next pass), and the output rows
    /// the next call writes (and its rows of the residual) into L1. At batch 8 `A`, the output
    /// and the residual no longer fit in the cache, and without those fetches each tile waited
    /// for them. (The residual's: ResNet-50 at batch 8 1.017–1.033× faster on the AVX2 tiles, 5
    /// runs in turns on the Zen 4 machine; on AVX-512 within ±1.5 %.)
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn task<T: TileKernel>(&self, (lhs, bias, residual, units, panels, relu, (c, ldc)): TaskArgs<'_>) {
        let (k, n) = (self.k, self.n);
        let (a, lda) = (lhs.data(), lhs.lda());
        let (mut tiles, mut pieces) = (Vec::new(), Vec::new());
        lhs.tiles(units, &mut tiles);
        let copy = T::COPY_ALIASED_ROWS && lda % ALIASED == 0;
        let mut copied: Vec<f32> = if copy { vec![0f32; tiles.len() * MR * COPY_LD] } else { Vec::new() };
        // Where the output and the residual tile of rows from `r0`, panel `p`, start.
        let out_at = |r0: usize, p: usize| c.wrapping_add(r0 * ldc + p * NR);
        let residual_at = |r0: usize, p: usize| residual.map(|r| r.as_ptr().wrapping_add(r0 * n + p * NR));
        let passes = passes(k);
        // A pass's first value of `k` and its length.
        let span = |pass: usize| (pass * KC, if pass + 1 == passes { k - pass * KC } else { KC });
        let mut next_pieces = Vec::new();
        for pass in 0..passes {
            let (k0, kc) = span(pass);
            lhs.pieces(k0, k0 + kc, &mut pieces);
            if copy {
                copy_pass(a, lda, &tiles, &pieces, &mut copied);
                if pass + 1 < passes {
                    let (k1, kc1) = span(pass + 1);
                    lhs.pieces(k1, k1 + kc1, &mut next_pieces);
                }
            }
            let whole = [(0, kc)];
            // What the tiles read: the copied rows as one run, or `A` in place.
            let (tile_lda, tile_pieces): (usize, &[(usize, usize)]) =
                if copy { (COPY_LD, &whole) } else { (lda, &pieces) };
            let last = pass + 1 == passes;
            for start in panels.clone().step_by(T::PANEL_BLOCK) {
                let block = start..(start + T::PANEL_BLOCK).min(panels.end);
                for (t, rows) in tiles.iter().enumerate() {
                    // Fetched into L2 while the tile computes its first block: read in place,
                    // the next tile's rows of this pass; copied, the tile's own rows of the
                    // next pass, which the next copy would otherwise wait for (they come from
                    // L3 or memory at batch 8, the input written by a layer before: 1024→256 at
                    // 14² 2–6 % faster, 1024→512 2–3 %, 2048→512 2–5 %; one process, in turns,
                    // on the 2-core Zen 4 machine).
                    let ahead = match (block.start == panels.start, copy) {
                        (false, _) => None,
                        (true, false) => tiles.get(t + 1).map(|following| (following, &pieces)),
                        (true, true) => (pass + 1 < passes).then_some((rows, &next_pieces)),
                    };
                    if let Some((ahead_rows, ahead_pieces)) = ahead {
                        prefetch_rows(a, lda, ahead_rows, ahead_pieces);
                    }
                    for p in block.clone() {
                        let cols = (n - p * NR).min(NR);
                        let mask: u32 = if cols == NR { u32::MAX } else { (1u32 << cols) - 1 };
                        let b = self.data.as_ptr().wrapping_add((p * k + k0) * NR);
                        // The same rows of the next panel, fetched while this one computes.
                        let next = if p + 1 < self.panels {
                            self.data.as_ptr().wrapping_add(((p + 1) * k + k0) * NR)
                        } else {
                            b
                        };
                        // The tile and panel of the next call, on the first pass (which writes
                        // the output; later passes read back what this task wrote).
                        let following = if pass > 0 {
                            None
                        } else if p + 1 < block.end {
                            Some((rows, p + 1))
                        } else {
                            tiles.get(t + 1).map(|f| (f, block.start))
                        };
                        let (r0, height) = (rows.r0, rows.height);
                        let tile = Tile {
                            a: if copy {
                                copied.as_ptr().wrapping_add(t * MR * COPY_LD)
                            } else {
                                a.as_ptr().wrapping_add(rows.a)
                            },
                            lda: tile_lda,
                            pieces: tile_pieces,
                            b,
                            next,
                            c: out_at(r0, p),
                            ldc,
                            ldr: n,
                            init: (pass == 0).then(|| (bias.as_ptr().wrapping_add(p * NR), residual_at(r0, p))),
                            relu: relu && last,
                            mask,
                            next_output: following.map(|(f, q)| NextTile {
                                c: out_at(f.r0, q),
                                residual: residual_at(f.r0, q),
                                rows: f.height,
                            }),
                        };
                        // SAFETY: the caller's contract (sizes, the CPU) covers every tile of
                        // rows × panels: `height` rows from r0 < m, whose pieces of k0..k0+kc
                        // lie inside `a` (a row-major matrix, or a padded input the kernel fits
                        // in) or were copied from there, the panel's columns below n (the mask),
                        // and the padded panel of `b`/`next`.
                        unsafe {
                            match height {
                                12 => T::run::<12>(&tile),
                                11 => T::run::<11>(&tile),
                                10 => T::run::<10>(&tile),
                                9 => T::run::<9>(&tile),
                                8 => T::run::<8>(&tile),
                                7 => T::run::<7>(&tile),
                                6 => T::run::<6>(&tile),
                                5 => T::run::<5>(&tile),
                                4 => T::run::<4>(&tile),
                                3 => T::run::<3>(&tile),
                                2 => T::run::<2>(&tile),
                                _ => T::run::<1>(&tile),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How many passes over `k` a product makes: the first ones of [`KC`] values, the last one of
/// at most [`KC_MAX`] (and at least one pass, which with `k = 0` writes the bias).
#[cfg(target_arch = "x86_64")]
fn passes(k: usize) -> usize {
    if k > KC && k % KC <= KC_MAX - KC {
        k / KC
    } else {
        k.div_ceil(KC).max(1)
    }
}

/// Copies this pass's values (`pieces`) of the rows of `tiles` from `a` (rows `lda` apart) into
/// `copied`, tile `t`'s row `r` at `(t·MR + r)·COPY_LD` (see [`ALIASED`]).
#[cfg(target_arch = "x86_64")]
fn copy_pass(a: &[f32], lda: usize, tiles: &[TileRows], pieces: &[(usize, usize)], copied: &mut [f32]) {
    for (t, rows) in tiles.iter().enumerate() {
        for r in 0..rows.height {
            let mut row = &mut copied[(t * MR + r) * COPY_LD..];
            for &(offset, len) in pieces {
                row[..len].copy_from_slice(&a[rows.a + r * lda + offset..][..len]);
                row = &mut row[len..];
            }
        }
    }
}

/// Fetches this pass's values (`pieces`) of the rows of `tile` from `a` (rows `lda` apart) into
/// L2, a cache line at a time.
#[cfg(target_arch = "x86_64")]
fn prefetch_rows(a: &[f32], lda: usize, tile: &TileRows, pieces: &[(usize, usize)]) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    for r in 0..tile.height {
        for &(offset, len) in pieces {
            let from = a.as_ptr().wrapping_add(tile.a + r * lda + offset);
            for at in (0..len).step_by(16) {
                // SAFETY: a prefetch (of values inside `a`) has no effect but on the cache; SSE
                // is part of x86_64.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(from.wrapping_add(at) as *const i8) };
            }
        }
    }
}

/// One register tile: up to [`MR`] rows × one panel, over `kc` values of `k`.
#[cfg(target_arch = "x86_64")]
struct Tile<'p> {
    /// Row `r` of the tile's `A` block starts at `a + r·lda`.
    a: *const f32,
    lda: usize,
    /// This pass's values of `k`, in order, as runs that are contiguous in every row: (offset
    /// from the row's start, length); `kc` is the sum of the lengths.
    pieces: &'p [(usize, usize)],
    /// The panel's `[kc][NR]` weights.
    b: *const f32,
    /// What to prefetch while computing: the next panel's weights, into L2 only. Into L1, this
    /// panel's 16 KiB and the next one's filled the 32 KiB L1 and evicted the tile's rows of
    /// `A`. Timed in one process, in turns, on the 2-core Zen 4 machine: the L2 fetch made
    /// 2048→512 at 7² 4–10 % faster and 512→1024 stride 2 at 28² 2–5 % (no prefetch at all:
    /// 4–6 % slower than L1 on three of five shapes); ResNet-50 at batch 1 1.03–1.06× faster
    /// on the AVX-512 tiles and 1.04–1.07× on the AVX2 ones (6 runs each), at batch 8
    /// 0.96–1.07× (level).
    next: *const f32,
    /// Row `r` of the output tile starts at `c + r·ldc`.
    c: *mut f32,
    ldc: usize,
    /// Row `r` of the residual tile starts `r·ldr` after its first.
    ldr: usize,
    /// On the first pass over `k`: the panel's bias and the residual tile (row stride `ldr`);
    /// later passes start from what `c` holds.
    init: Option<(*const f32, Option<*const f32>)>,
    /// `max(·, 0)` before storing (the last pass).
    relu: bool,
    /// The panel's columns below `n`.
    mask: u32,
    /// The output tile of the next call (and its residual tile), fetched while this one
    /// computes.
    next_output: Option<NextTile>,
}

/// Where the next call's output tile (rows `ldc` apart) and residual tile (rows `ldr` apart)
/// start, and their rows.
#[cfg(target_arch = "x86_64")]
struct NextTile {
    c: *mut f32,
    residual: Option<*const f32>,
    rows: usize,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// Fetches the output and residual tiles of the next call ([`Tile::next_output`]) into L1.
    #[inline(always)]
    fn fetch_next_output(&self) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let Some(next) = &self.next_output else { return };
        // A panel's row of the tile: 32 values, two cache lines.
        let fetch = |row: *const f32| {
            // SAFETY: a prefetch has no effect but on the cache; SSE is part of x86_64.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(16) as *const i8);
            }
        };
        for r in 0..next.rows {
            fetch(next.c.wrapping_add(r * self.ldc));
            if let Some(residual) = next.residual {
                fetch(residual.wrapping_add(r * self.ldr));
            }
        }
    }
}

/// The arguments of one task: `lhs`, `bias`, `residual`, the units and panels it computes,
/// `relu`, and the output `(c, ldc)`.
#[cfg(target_arch = "x86_64")]
type TaskArgs<'a> =
    (Lhs<'a>, &'a [f32], Option<&'a [f32]>, std::ops::Range<usize>, std::ops::Range<usize>, bool, (*mut f32, usize));

/// How one register tile is computed, per instruction set.
#[cfg(target_arch = "x86_64")]
trait TileKernel {
    /// Computes the `R`-row tile.
    ///
    /// # Safety
    /// The CPU has the instructions (and the caller enables them); `R` rows of the pieces of
    /// `a`, `kc × NR` of `b` and `next`, and `R` rows of the masked columns of `c` (and of the
    /// residual) are valid.
    unsafe fn run<const R: usize>(tile: &Tile<'_>);

    /// Panels per block of a pass (see [`PackedWeights::task`]). 1 on AVX2, whose sub-tiles
    /// read a panel's weights 4 times per tile: from L1 they must come (timed on the Zen 4
    /// machine with AVX2 tiles: blocks of 8 were 4–7 % slower on 1024→256 and 256→1024 at 14²).
    const PANEL_BLOCK: usize;

    /// Whether rows of `A` a multiple of [`ALIASED`] values apart are copied first. Not on AVX2,
    /// whose sub-tiles read 3 rows at a time, fewer than the ways of a cache set (there the copy
    /// made 1024→256 at 14² and 2048→512 at 7² 3–8 % slower).
    const COPY_ALIASED_ROWS: bool;
}

/// The tile in AVX-512 registers.
#[cfg(target_arch = "x86_64")]
struct Avx512;

/// The tile in AVX2 registers, 3 (or 2) rows at a time.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl TileKernel for Avx512 {
    const PANEL_BLOCK: usize = 8;
    const COPY_ALIASED_ROWS: bool = true;
    #[inline(always)]
    unsafe fn run<const R: usize>(tile: &Tile<'_>) {
        // SAFETY: the function's contract.
        unsafe {
            use std::arch::x86_64::*;
            let (m0, m1) = (tile.mask as u16, (tile.mask >> 16) as u16);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            match tile.init {
                Some((bias, residual)) => {
                    let (b0, b1) = (_mm512_maskz_loadu_ps(m0, bias), _mm512_maskz_loadu_ps(m1, bias.add(16)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        *acc = match residual {
                            Some(res) => {
                                let row = res.add(r * tile.ldr);
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
                        let row = tile.c.add(r * tile.ldc);
                        *acc = [_mm512_maskz_loadu_ps(m0, row), _mm512_maskz_loadu_ps(m1, row.add(16))];
                    }
                }
            }
            tile.fetch_next_output();
            let (mut b, mut next) = (tile.b, tile.next);
            for &(offset, len) in tile.pieces {
                let a = tile.a.add(offset);
                for kk in 0..len {
                    _mm_prefetch::<_MM_HINT_T1>(next.add(kk * NR) as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(next.add(kk * NR + 16) as *const i8);
                    let b0 = _mm512_loadu_ps(b.add(kk * NR));
                    let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*a.add(r * tile.lda + kk));
                        acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
                    }
                }
                b = b.add(len * NR);
                next = next.add(len * NR);
            }
            let zero = _mm512_setzero_ps();
            for (r, acc) in acc.iter().enumerate() {
                let [mut x0, mut x1] = *acc;
                if tile.relu {
                    x0 = _mm512_max_ps(x0, zero);
                    x1 = _mm512_max_ps(x1, zero);
                }
                let row = tile.c.add(r * tile.ldc);
                _mm512_mask_storeu_ps(row, m0, x0);
                _mm512_mask_storeu_ps(row.add(16), m1, x1);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl TileKernel for Avx2 {
    const PANEL_BLOCK: usize = 1;
    const COPY_ALIASED_ROWS: bool = false;
    #[inline(always)]
    unsafe fn run<const R: usize>(tile: &Tile<'_>) {
        // SAFETY: the function's contract, for rows r0..r0 + H of the tile.
        unsafe {
            // Sub-tiles of 3 rows, the last two of 2 rows rather than 3 + 1: a single row has
            // only 4 accumulators, fewer than the FMA latency × throughput (4 × 2), and would
            // wait on them.
            let mut r0 = 0;
            let threes = if R % 3 == 1 && R > 1 { R / 3 - 1 } else { R / 3 };
            for _ in 0..threes {
                avx2_rows::<3>(tile, r0);
                r0 += 3;
            }
            match R - r0 {
                4 => {
                    avx2_rows::<2>(tile, r0);
                    avx2_rows::<2>(tile, r0 + 2);
                }
                2 => avx2_rows::<2>(tile, r0),
                1 => avx2_rows::<1>(tile, r0),
                _ => {}
            }
        }
    }
}

/// Rows `r0..r0 + H` (H ≤ 3) of an AVX2 tile: `H × 4` accumulators of 8 columns, `H`
/// broadcasts and one weight register; the first rows prefetch the next panel.
///
/// # Safety
/// As [`TileKernel::run`], for these rows, with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn avx2_rows<const H: usize>(tile: &Tile<'_>, r0: usize) {
    // SAFETY: the function's contract.
    unsafe {
        use std::arch::x86_64::*;
        // The panel's columns below n: all 32 (plain loads and stores), or the first `cols`.
        let cols = tile.mask.count_ones() as i32;
        let full = cols == NR as i32;
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut masks = [_mm256_setzero_si256(); 4];
        for (j, mask) in masks.iter_mut().enumerate() {
            *mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8 * j as i32), lanes);
        }
        let load = |p: *const f32, j: usize| if full { _mm256_loadu_ps(p) } else { _mm256_maskload_ps(p, masks[j]) };
        let mut acc = [[_mm256_setzero_ps(); 4]; H];
        match tile.init {
            Some((bias, residual)) => {
                let mut b = [_mm256_setzero_ps(); 4];
                for (j, b) in b.iter_mut().enumerate() {
                    *b = load(bias.add(8 * j), j);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = match residual {
                            Some(res) => _mm256_add_ps(load(res.add((r0 + r) * tile.ldr + 8 * j), j), b[j]),
                            None => b[j],
                        };
                    }
                }
            }
            None => {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = load(tile.c.add((r0 + r) * tile.ldc + 8 * j), j);
                    }
                }
            }
        }
        let prefetch = r0 == 0;
        if prefetch {
            tile.fetch_next_output();
        }
        let (mut b, mut next) = (tile.b, tile.next);
        for &(offset, len) in tile.pieces {
            let a = tile.a.add(offset + r0 * tile.lda);
            for kk in 0..len {
                if prefetch {
                    _mm_prefetch::<_MM_HINT_T1>(next.add(kk * NR) as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(next.add(kk * NR + 16) as *const i8);
                }
                let mut x = [_mm256_setzero_ps(); H];
                for (r, x) in x.iter_mut().enumerate() {
                    *x = _mm256_broadcast_ss(&*a.add(r * tile.lda + kk));
                }
                for j in 0..4 {
                    let w = _mm256_loadu_ps(b.add(kk * NR + 8 * j));
                    for (acc, &x) in acc.iter_mut().zip(&x) {
                        acc[j] = _mm256_fmadd_ps(x, w, acc[j]);
                    }
                }
            }
            b = b.add(len * NR);
            next = next.add(len * NR);
        }
        let zero = _mm256_setzero_ps();
        for (r, acc) in acc.iter().enumerate() {
            for (j, &v) in acc.iter().enumerate() {
                let v = if tile.relu { _mm256_max_ps(v, zero) } else { v };
                let at = tile.c.add((r0 + r) * tile.ldc + 8 * j);
                if full {
                    _mm256_storeu_ps(at, v);
                } else {
                    _mm256_maskstore_ps(at, masks[j], v);
                }
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

    /// Shapes `(m, k, n)` on the edges of every blocking: rows (MR, MC, AVX2's sub-tiles of 3
    /// rows, and of 2 where 3 + 1 would be left: tiles of 4 and 10 rows), columns (NR, masks, two
    /// panel blocks with the last ragged: n = 300), depth (KC, k = 0, a rest joined to the last
    /// pass: k = 130 and 257, or a pass of its own: k = 300), and rows 4 KiB apart (k = 1024:
    /// copied on AVX-512, see `ALIASED`).
    const RAGGED: [(usize, usize, usize); 9] = [
        (1, 1, 1),
        (13, 300, 33),
        (97, 257, 64),
        (49, 512, 70),
        (200, 0, 5),
        (12, 17, 31),
        (30, 1024, 300),
        (22, 130, 40),
        (4, 64, 32),
    ];

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
        for isa in PackedIsa::available_or_skip() {
            for (m, k, n) in RAGGED {
                let (a, b, bias, res) = (values(m * k, 1), values(k * n, 2), values(n, 3), values(m * n, 4));
                let packed = PackedWeights::new(&b, k, n, isa).unwrap();
                for (residual, relu) in [(None, false), (Some(&res[..]), true), (Some(&res[..]), false), (None, true)] {
                    let ours = packed.product(Lhs::Rows { a: &a, m, lda: k }, &bias, residual, relu).unwrap();
                    let want = reference(&a, &b, (m, k, n), &bias, residual, relu);
                    let worst = ours.iter().zip(&want).map(|(&o, &w)| (f64::from(o) - w).abs()).fold(0.0, f64::max);
                    assert!(worst <= 1e-5 * (k as f64 + 1.0).sqrt(), "{isa:?} {m}×{k}×{n}: max|Δ| = {worst}");
                    if relu {
                        assert!(ours.iter().all(|&v| v >= 0.0), "{isa:?} {m}×{k}×{n}: a negative value after ReLU");
                    }
                }
            }
        }
    }

    /// AVX2 and AVX-512 tiles give the same bits (the same fused multiply-adds in the same
    /// order), on every edge of the blocking, with and without residual and ReLU, and for a
    /// convolution read in place.
    #[test]
    fn avx2_and_avx512_give_the_same_bits() {
        if !(PackedIsa::Avx512.supported() && PackedIsa::Avx2.supported()) {
            eprintln!("skipped: this CPU lacks AVX-512F or AVX2 with FMA (one of the two kernels)");
            return;
        }
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        for (m, k, n) in RAGGED {
            let (a, b, bias, res) = (values(m * k, 21), values(k * n, 22), values(n, 23), values(m * n, 24));
            let (p512, p2) = (
                PackedWeights::new(&b, k, n, PackedIsa::Avx512).unwrap(),
                PackedWeights::new(&b, k, n, PackedIsa::Avx2).unwrap(),
            );
            for (residual, relu) in [(None, false), (Some(&res[..]), true)] {
                let lhs = Lhs::Rows { a: &a, m, lda: k };
                let (x, y) = (
                    p512.product(lhs, &bias, residual, relu).unwrap(),
                    p2.product(lhs, &bias, residual, relu).unwrap(),
                );
                assert!(bits(x) == bits(y), "{m}×{k}×{n}, residual {}, relu {relu}", residual.is_some());
            }
        }
        let (images, h, w, c, kernel, stride, n) = (2, 37, 35, 3, 7, 2, 64);
        let x = values(images * h * w * c, 25);
        let k = kernel * kernel * c;
        let (b, bias) = (values(k * n, 26), values(n, 27));
        let conv = Lhs::Conv(ConvLhs { x: &x, images, height: h, width: w, c, kernel, stride });
        let run = |isa| bits(PackedWeights::new(&b, k, n, isa).unwrap().product(conv, &bias, None, true).unwrap());
        assert!(run(PackedIsa::Avx512) == run(PackedIsa::Avx2), "the 7×7 stride-2 convolution");
    }

    #[test]
    fn rows_do_not_depend_on_the_row_count_or_the_threads() {
        for isa in PackedIsa::available_or_skip() {
            let (m, k, n) = (150, 600, 96);
            let (a, b, bias) = (values(m * k, 5), values(k * n, 6), values(n, 7));
            let packed = PackedWeights::new(&b, k, n, isa).unwrap();
            let run = |threads: usize, rows: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    packed.product(Lhs::Rows { a: &a[..rows * k], m: rows, lda: k }, &bias, None, true).unwrap()
                })
            };
            let whole = run(1, m);
            for (threads, rows) in [(3, m), (2, 49), (1, 13), (4, 1)] {
                let part = run(threads, rows);
                assert!(
                    part.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{isa:?}, {threads} threads, {rows} rows: not bit-identical to the first rows of 1 thread, {m} rows"
                );
            }
        }
    }

    /// The im2col matrix of an NHWC `[n, h, w, c]` input (already padded) formed by definition:
    /// row (b, oy, ox), values in (ky, kx, c) order.
    fn im2col(x: &[f32], (n, h, w, c): (usize, usize, usize, usize), kernel: usize, stride: usize) -> Vec<f32> {
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        let mut out = Vec::new();
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..kernel {
                        for kx in 0..kernel {
                            let at = ((b * h + oy * stride + ky) * w + ox * stride + kx) * c;
                            out.extend_from_slice(&x[at..at + c]);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_convolution_read_in_place_equals_its_formed_im2col_matrix_bit_for_bit() {
        for isa in PackedIsa::available_or_skip() {
            conv_read_in_place_equals_formed_im2col(isa);
        }
    }

    fn conv_read_in_place_equals_formed_im2col(isa: PackedIsa) {
        // (images, height, width, c, kernel, stride, c_out): the stem (runs of 21 < KC, a pass
        // spanning kernel rows), output rows wider than a tile (30 → 3 tiles) and narrower
        // (2), runs longer than KC (3·130), stride > kernel, 1×1 stride 2, one output pixel,
        // and rows 4 KiB apart (stride 2 × 512 channels: copied on AVX-512, see `ALIASED`) into
        // 9 panels (two blocks, the last ragged), and copied with a last pass longer than KC
        // (stride 32 × 32 channels, k = 800 = 6·128 + 32).
        let cases = [
            (2, 37, 35, 3, 7, 2, 64),
            (1, 9, 31, 512, 3, 2, 260),
            (1, 32, 32, 5, 3, 1, 40),
            (2, 9, 9, 130, 3, 2, 33),
            (1, 11, 13, 4, 2, 3, 7),
            (3, 8, 8, 17, 1, 2, 96),
            (1, 3, 3, 9, 3, 1, 5),
            (1, 9, 70, 32, 5, 32, 8),
        ];
        for (images, h, w, c, kernel, stride, n) in cases {
            let x = values(images * h * w * c, 11);
            let k = kernel * kernel * c;
            let (b, bias, oh, ow) =
                (values(k * n, 12), values(n, 13), (h - kernel) / stride + 1, (w - kernel) / stride + 1);
            let m = images * oh * ow;
            let res = values(m * n, 14);
            let packed = PackedWeights::new(&b, k, n, isa).unwrap();
            let formed = im2col(&x, (images, h, w, c), kernel, stride);
            let conv = ConvLhs { x: &x, images, height: h, width: w, c, kernel, stride };
            for (residual, relu) in [(None, true), (Some(&res[..]), false)] {
                let want = packed.product(Lhs::Rows { a: &formed, m, lda: k }, &bias, residual, relu).unwrap();
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let ours = pool.install(|| packed.product(Lhs::Conv(conv), &bias, residual, relu).unwrap());
                    assert_eq!(ours.len(), m * n);
                    assert!(
                        ours.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa:?} {images}×{h}×{w}×{c}, {kernel}×{kernel}/s{stride} → {n}, {threads} threads: \
                         not bit-identical to the formed im2col matrix"
                    );
                }
            }
            // And the formed matrix is right (so both are).
            let exact = reference(&formed, &b, (m, k, n), &bias, None, true);
            let ours = packed.product(Lhs::Conv(conv), &bias, None, true).unwrap();
            let worst = ours.iter().zip(&exact).map(|(&o, &w)| (f64::from(o) - w).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-5 * (k as f64 + 1.0).sqrt(), "max|Δ| = {worst}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn passes_cover_k_none_longer_than_kc_max() {
        for k in 0..3000 {
            let passes = passes(k);
            let last = k - (passes - 1) * KC;
            assert!(passes >= 1 && (passes - 1) * KC <= k, "k = {k}: {passes} passes");
            // No pass of a few values (KC / 4 or fewer) after a full one.
            assert!(last <= KC_MAX && (k <= KC || last > KC / 4), "k = {k}: a last pass of {last}");
        }
        assert_eq!((passes(147), passes(160), passes(161), passes(1024)), (1, 1, 2, 8));
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let packed = PackedWeights::new(&values(12, 1), 3, 4, PackedIsa::Avx2).unwrap();
        assert!(PackedWeights::new(&values(11, 1), 3, 4, PackedIsa::Avx2).is_err());
        let err = packed
            .product(Lhs::Rows { a: &values(5, 2), m: 2, lda: 3 }, &values(4, 3), None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sizes do not match"), "{err}");
        let err = packed
            .product(Lhs::Rows { a: &values(6, 2), m: 2, lda: 3 }, &values(4, 3), Some(&values(7, 4)), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sizes do not match"), "{err}");
        // A convolution whose kernel does not fit, or whose input or patch size is wrong.
        let x = values(2 * 5 * 5, 5);
        let conv = ConvLhs { x: &x, images: 1, height: 5, width: 5, c: 2, kernel: 6, stride: 1 };
        let packed = PackedWeights::new(&values(72 * 4, 1), 72, 4, PackedIsa::Avx2).unwrap();
        for conv in [conv, ConvLhs { kernel: 3, stride: 0, ..conv }, ConvLhs { height: 6, kernel: 3, ..conv }] {
            let err = packed.product(Lhs::Conv(conv), &values(4, 3), None, false).unwrap_err().to_string();
            assert!(err.contains("sizes do not match"), "{err}");
        }
        let packed = PackedWeights::new(&values(19 * 4, 1), 19, 4, PackedIsa::Avx2).unwrap();
        let conv = ConvLhs { kernel: 3, ..conv };
        assert!(packed.product(Lhs::Conv(conv), &values(4, 3), None, false).is_err(), "18 ≠ 19 values per patch");
    }
}
