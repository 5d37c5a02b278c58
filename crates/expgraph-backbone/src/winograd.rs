//! Winograd F(2×2, 3×3) convolution (Lavin & Gray 2016) for 3×3, stride-1, pad-1 layers on NHWC
//! `f32` activations, with bias fused into the output transform and an optional ReLU of the input
//! fused into the input transform.
//!
//! The output is cut into 2×2 tiles; each reads a 4×4 input patch. With the transforms
//! `V = Bᵀ d B` (input patch, per channel), `U = G g Gᵀ` (weights, prepared once at load, in f64)
//! and `Y = Aᵀ M A` (output tile), the convolution becomes 16 independent matrix products
//! `M_ξ[C_out × T] = U_ξᵀ[C_out × C_in] · V_ξ[C_in × T]` over the T tiles, one per position ξ of
//! the 4×4 transformed tile: 2.25× fewer multiplications than direct convolution. F(2,3) (not
//! F(4,3)) keeps the extra rounding small: the transforms only add and subtract (and halve, in the
//! weights), so the error stays within a few times that of direct convolution.
//!
//! Two schedules, both parallel on the rayon pool, chosen by layer shape ([`Schedule::for_shape`]):
//! * [`Schedule::Fused`] (narrow layers, C_in + C_out ≤ 256): tasks over blocks of about 128
//!   tiles; each task transforms its block's input into a cache-sized scratch buffer, runs the
//!   16 products, and writes its output rows. Nothing layer-sized is materialized.
//! * [`Schedule::Banded`] (wide layers): bands of about 256 tiles; the band's input transform
//!   (parallel over tile rows), then the products (parallel over blocks of 64 output channels, so
//!   each task streams only its part of the weights), then the output transform (parallel over
//!   tile rows).
//!
//! Every product is one single-threaded `gemm` call whose shape depends only on the layer's shape,
//! never on the thread count, and no reduction is split across tasks: the result is bit-identical
//! for every rayon pool size.
//!
//! With a packed kernel ([`Winograd3x3::with_kernel`], ResNet's default on AVX-512 and AVX2 CPUs)
//! the 16 products run [`crate::packed`] instead, on `U_ξ` packed once at load (the `gemm` crate
//! packs the weights on every call, and inside a forward pass they are no longer in cache: 16 MB
//! per call in ResNet-50's `layer4`). There every value depends only on its own tile and channel,
//! so a batch runs in one call and each image still gets the bits it gets alone; the weights are
//! then read once per batch, not once per image. Inside ResNet-50, timed layer by layer in turns
//! with the `gemm` crate's products, at batch 1: `layer4` −21 %, `layer3` −11 %, `layer2` −9 %,
//! `layer1` +5 %; at batch 8: −26 to −40 %. VGG-16 keeps the `gemm` crate ([`Winograd3x3::new`]):
//! it is already ahead of ONNX Runtime, and its features keep their bits.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::nhwc::GemmKernel;
use crate::packed::{Lhs, OutPtr, PackedWeights};

/// Channels handled per vector step in the transforms (one AVX-512 register of f32).
const LANES: usize = 16;
/// Target number of tiles per task of [`Schedule::Fused`].
const FUSED_TILES: usize = 128;
/// Widest layer (C_in + C_out) run with [`Schedule::Fused`].
const FUSED_MAX_CHANNELS: usize = 256;
/// Target number of tiles per band of [`Schedule::Banded`].
const BAND_TILES: usize = 256;
/// Output channels per block: the weights are stored, and the products computed, per block of
/// this many output channels (one row panel of gemm's AVX-512 kernel).
const C_OUT_BLOCK: usize = 64;

/// How a [`Winograd3x3`] call is split into tasks (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Tasks over blocks of tile rows, each doing the whole pipeline in a scratch buffer.
    Fused,
    /// Bands of tile rows; per band, three parallel phases.
    Banded,
}

impl Schedule {
    /// The schedule [`Winograd3x3::forward`] uses for a layer with these channel counts.
    pub fn for_shape(c_in: usize, c_out: usize) -> Self {
        if c_in + c_out <= FUSED_MAX_CHANNELS {
            Schedule::Fused
        } else {
            Schedule::Banded
        }
    }
}

/// A 3×3, stride-1, pad-1 convolution with bias, computed with Winograd F(2×2, 3×3); the weights
/// are transformed once, in [`Winograd3x3::new`].
pub struct Winograd3x3 {
    c_in: usize,
    c_out: usize,
    /// `U` in blocks of [`C_OUT_BLOCK`] output channels: block `c0..c0 + cb` starts at
    /// `16·C_in·c0` and is `[16][C_in][cb]`: position ξ = 4·i + j of the transformed 4×4 kernel,
    /// then the input channel, then the output channel (contiguous).
    weight: Vec<f32>,
    /// The output channel blocks `(c0, cb)`.
    c_blocks: Vec<(usize, usize)>,
    /// `[C_out]`.
    bias: Vec<f32>,
    /// With a packed kernel: `U_ξ` (`C_in × C_out`) packed for [`crate::packed`], one per
    /// position ξ, and `weight` is empty (one block, `c_blocks = [(0, C_out)]`).
    packed: Option<Packed>,
}

/// The products' weights for a packed kernel.
struct Packed {
    /// `U_ξ`, ξ = 0 … 15.
    u: Vec<PackedWeights>,
    /// `C_out` zeros: the products start from 0 (the bias is added in the output transform).
    zeros: Vec<f32>,
}

/// An output value, written once.
type Out = MaybeUninit<f32>;

/// The shape of one call: batch, input height and width, tile rows and columns per image.
#[derive(Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    /// Tile rows per image, ⌈H/2⌉.
    th: usize,
    /// Tiles per tile row, ⌈W/2⌉.
    tw: usize,
}

impl Geometry {
    /// The first output row (over the whole batch) of global tile row `r` (image `r / th`).
    fn first_row(&self, r: usize) -> usize {
        (r / self.th) * self.h + 2 * (r % self.th)
    }

    /// One past the last output row of global tile row `r`.
    fn end_row(&self, r: usize) -> usize {
        (r / self.th) * self.h + (2 * (r % self.th) + 2).min(self.h)
    }
}

thread_local! {
    /// Per-thread scratch of [`Schedule::Fused`] tasks (reused across calls).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` values: the thread's cached one when it is free, else a
/// fresh one. The contents are arbitrary: `f` must write every value before reading it.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Splits `data` into consecutive pieces of the given lengths (which must sum to at most its length).
fn split_lengths<T>(mut data: &mut [T], lengths: impl IntoIterator<Item = usize>) -> Vec<&mut [T]> {
    let mut parts = Vec::new();
    for len in lengths {
        let (head, tail) = std::mem::take(&mut data).split_at_mut(len);
        parts.push(head);
        data = tail;
    }
    parts
}

#[inline(always)]
#[allow(clippy::needless_range_loop)] // plain loops inline and vectorize under `target_feature`
fn lanes_sub<const L: usize>(a: &[f32; L], b: &[f32; L]) -> [f32; L] {
    let mut out = [0f32; L];
    for l in 0..L {
        out[l] = a[l] - b[l];
    }
    out
}

#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn lanes_add<const L: usize>(a: &[f32; L], b: &[f32; L]) -> [f32; L] {
    let mut out = [0f32; L];
    for l in 0..L {
        out[l] = a[l] + b[l];
    }
    out
}

/// `Y = Aᵀ M A + bias` for `L` channels: the 2×2 outputs in (row, column) order.
#[inline(always)]
fn output_transform<const L: usize>(m: &[[f32; L]; 16], bias: &[f32; L]) -> [[f32; L]; 4] {
    // Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]], applied to the rows...
    let mut s = [[0f32; L]; 8];
    for j in 0..4 {
        let (m0, m1, m2, m3) = (&m[j], &m[4 + j], &m[8 + j], &m[12 + j]);
        s[j] = lanes_add(&lanes_add(m0, m1), m2);
        s[4 + j] = lanes_sub(&lanes_sub(m1, m2), m3);
    }
    // ... then to the columns, plus the bias.
    let mut y = [[0f32; L]; 4];
    for i in 0..2 {
        let (s0, s1, s2, s3) = (&s[4 * i], &s[4 * i + 1], &s[4 * i + 2], &s[4 * i + 3]);
        y[2 * i] = lanes_add(&lanes_add(&lanes_add(s0, s1), s2), bias);
        y[2 * i + 1] = lanes_add(&lanes_sub(&lanes_sub(s1, s2), s3), bias);
    }
    y
}

/// The weight transform `U = G g Gᵀ` of one 3×3 kernel `g` (row-major), in f64.
fn weight_transform(g: &[f64; 9]) -> [f64; 16] {
    // G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]].
    let rows = |a: f64, b: f64, c: f64| [a, (a + b + c) / 2.0, (a - b + c) / 2.0, c];
    let mut gg = [[0f64; 3]; 4]; // G g: 4×3
    for col in 0..3 {
        let r = rows(g[col], g[3 + col], g[6 + col]);
        for (i, v) in r.into_iter().enumerate() {
            gg[i][col] = v;
        }
    }
    let mut u = [0f64; 16];
    for i in 0..4 {
        let r = rows(gg[i][0], gg[i][1], gg[i][2]);
        u[4 * i..4 * i + 4].copy_from_slice(&r);
    }
    u
}

impl Winograd3x3 {
    /// From an OIHW `weight` `[C_out, C_in, 3, 3]` and a `[C_out]` `bias` (f32, any device); the
    /// products run the `gemm` crate ([`GemmKernel::Portable`]).
    pub fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        Self::with_kernel(weight, bias, GemmKernel::Portable)
    }

    /// [`Winograd3x3::new`] with the products on `kernel`. With a packed kernel (an error on a
    /// CPU without its instructions) the transformed weights are packed once here, and every output
    /// value depends only on its own pixel and channel: bit-identical for any thread count, any
    /// schedule and any batch (an image gets the bits it gets alone). The `gemm` crate's values
    /// do not depend on the threads or the schedule either, but its blocking may depend on the
    /// number of tiles, so a batch must then run image by image to give each image its own bits.
    pub fn with_kernel(weight: &Tensor, bias: &Tensor, kernel: GemmKernel) -> Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if (kh, kw) != (3, 3) || c_in == 0 || c_out == 0 {
            bail!("Winograd3x3: needs a 3×3 kernel and channels ≥ 1, got {c_out}×{c_in}×{kh}×{kw}")
        }
        let g = weight.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != c_out {
            bail!("Winograd3x3: {} biases for {c_out} output channels", bias.len())
        }
        // The packed products take all output channels at once: one block.
        let block = if kernel.is_packed() { c_out } else { C_OUT_BLOCK };
        let c_blocks: Vec<(usize, usize)> = (0..c_out).step_by(block).map(|c0| (c0, block.min(c_out - c0))).collect();
        let mut u = vec![0f32; 16 * c_in * c_out];
        for (o, kernels) in g.chunks_exact(c_in * 9).enumerate() {
            let (c0, cb) = (o / block * block, block.min(c_out - o / block * block));
            for (i, kernel) in kernels.chunks_exact(9).enumerate() {
                let k: [f64; 9] = std::array::from_fn(|t| f64::from(kernel[t]));
                for (xi, v) in weight_transform(&k).into_iter().enumerate() {
                    // Rounded once, from f64.
                    u[16 * c_in * c0 + (xi * c_in + i) * cb + (o - c0)] = v as f32;
                }
            }
        }
        let packed = if kernel.is_packed() {
            // One block: U_ξ is the row-major C_in × C_out matrix at 16·C_in·0 + ξ·C_in·C_out.
            let u = u.chunks_exact(c_in * c_out).map(|u_xi| kernel.pack("Winograd3x3", u_xi, c_in, c_out));
            u.collect::<Result<Option<Vec<_>>>>()?.map(|u| Packed { u, zeros: vec![0.0; c_out] })
        } else {
            None
        };
        let weight = if packed.is_some() { Vec::new() } else { u };
        Ok(Self { c_in, c_out, weight, c_blocks, bias, packed })
    }

    /// The kernel of the products.
    pub fn gemm_kernel(&self) -> GemmKernel {
        match &self.packed {
            Some(packed) => GemmKernel::packed(packed.u[0].isa()),
            None => GemmKernel::Portable,
        }
    }

    /// Input channels.
    pub fn c_in(&self) -> usize {
        self.c_in
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.c_out
    }

    /// `conv(relu?(x)) + bias` of an NHWC `[N, H, W, C_in]` f32 CPU tensor (ReLU of the input
    /// with `relu_input`), NHWC `[N, H, W, C_out]`, with [`Schedule::for_shape`].
    pub fn forward(&self, x: &Tensor, relu_input: bool) -> Result<Tensor> {
        self.forward_with(x, relu_input, false, Schedule::for_shape(self.c_in, self.c_out))
    }

    /// [`Winograd3x3::forward`] with a ReLU of the output too (`relu_output`: `relu(conv + bias)`)
    /// and a given schedule (both schedules give bit-identical results).
    pub fn forward_with(&self, x: &Tensor, relu_input: bool, relu_output: bool, schedule: Schedule) -> Result<Tensor> {
        x.apply_op1_no_bwd(&ApplyWinograd { conv: self, relu_input, relu_output, schedule })
    }

    /// The NHWC output of the contiguous NHWC `src` of shape `dims`.
    fn compute(
        &self,
        src: &[f32],
        (n, h, w, c): (usize, usize, usize, usize),
        (relu, relu_out): (bool, bool),
        schedule: Schedule,
    ) -> Result<Vec<f32>> {
        if c != self.c_in {
            bail!("winograd3x3: input has {c} channels, the convolution expects {}", self.c_in)
        }
        if src.len() != n * h * w * c {
            bail!("winograd3x3: {} input values for shape {n}×{h}×{w}×{c}", src.len())
        }
        let len = n * h * w * self.c_out;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return Ok(out);
        }
        // Written once, without a zero-fill first (see the SAFETY note at the end).
        let spare = &mut out.spare_capacity_mut()[..len];
        let g = Geometry { h, w, th: h.div_ceil(2), tw: w.div_ceil(2) };
        let rows = n * g.th;
        let row_len = w * self.c_out;
        match schedule {
            Schedule::Fused => {
                let per_block = (FUSED_TILES / g.tw).max(1);
                let blocks: Vec<(usize, usize)> =
                    (0..rows).step_by(per_block).map(|r0| (r0, (r0 + per_block).min(rows))).collect();
                let chunks = split_lengths(
                    spare,
                    blocks.iter().map(|&(r0, r1)| (g.end_row(r1 - 1) - g.first_row(r0)) * row_len),
                );
                chunks.into_par_iter().zip(blocks).try_for_each(|(chunk, (r0, r1))| {
                    let tiles = (r1 - r0) * g.tw;
                    with_scratch(tiles * 16 * (self.c_in + self.c_out), |scratch| -> Result<()> {
                        let (v, m) = scratch.split_at_mut(tiles * 16 * self.c_in);
                        for (r, v) in (r0..r1).zip(v.chunks_exact_mut(g.tw * 16 * self.c_in)) {
                            self.input_row(src, g, r, relu, v);
                        }
                        let m_blocks = split_lengths(m, self.c_blocks.iter().map(|&(_, cb)| tiles * 16 * cb));
                        for (m, &(c0, cb)) in m_blocks.into_iter().zip(&self.c_blocks) {
                            self.products(v, tiles, m, c0, cb, false)?;
                            let base = g.first_row(r0);
                            for (r, m) in (r0..r1).zip(m.chunks_exact(g.tw * 16 * cb)) {
                                let at = (g.first_row(r) - base) * row_len;
                                self.output_row(m, (c0, cb), relu_out, g, r, &mut chunk[at..]);
                            }
                        }
                        Ok(())
                    })
                })?;
            }
            Schedule::Banded => {
                let per_band = BAND_TILES.div_ceil(g.tw).max(1);
                let c_blocks = &self.c_blocks;
                let max_tiles = per_band.min(rows) * g.tw;
                with_scratch(max_tiles * 16 * (self.c_in + self.c_out), |scratch| -> Result<()> {
                    let (v, m) = scratch.split_at_mut(max_tiles * 16 * self.c_in);
                    for r0 in (0..rows).step_by(per_band) {
                        let r1 = (r0 + per_band).min(rows);
                        let tiles = (r1 - r0) * g.tw;
                        let v = &mut v[..tiles * 16 * self.c_in];
                        v.par_chunks_mut(g.tw * 16 * self.c_in)
                            .zip(r0..r1)
                            .for_each(|(v, r)| self.input_row(src, g, r, relu, v));
                        if self.packed.is_some() {
                            // One block; the 16 products run in parallel.
                            self.products(v, tiles, m, 0, self.c_out, true)?;
                        } else {
                            split_lengths(&mut *m, c_blocks.iter().map(|&(_, cb)| tiles * 16 * cb))
                                .into_par_iter()
                                .zip(c_blocks)
                                .try_for_each(|(m, &(c0, cb))| self.products(v, tiles, m, c0, cb, false))?;
                        }
                        let out_rows = &mut spare[g.first_row(r0) * row_len..g.end_row(r1 - 1) * row_len];
                        let row_chunks =
                            split_lengths(out_rows, (r0..r1).map(|r| (g.end_row(r) - g.first_row(r)) * row_len));
                        let m = &m[..tiles * 16 * self.c_out];
                        row_chunks.into_par_iter().zip(r0..r1).for_each(|(chunk, r)| {
                            let mut offset = 0;
                            for &(c0, cb) in c_blocks {
                                let block = &m[offset..offset + tiles * 16 * cb];
                                offset += tiles * 16 * cb;
                                let row = &block[(r - r0) * g.tw * 16 * cb..][..g.tw * 16 * cb];
                                self.output_row(row, (c0, cb), relu_out, g, r, chunk);
                            }
                        });
                    }
                    Ok(())
                })?;
            }
        }
        // SAFETY: both schedules split the first `len` values into the output rows of all tile
        // rows 0..N·⌈H/2⌉ (these cover the N·H image rows of W·C_out values), and `output_row`
        // writes every pixel of every tile of its row (the 2×2 tile clipped to the image) for every
        // channel block of `c_blocks`, whose blocks tile 0..C_out, every channel of a block
        // (`LANES` at a time, then one by one): all `len` values are initialized.
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// Input transform of global tile row `r` into `v` (`[tw][16][C_in]`).
    fn input_row(&self, src: &[f32], g: Geometry, r: usize, relu: bool, v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { self.input_row_avx512(src, g, r, relu, v) };
        }
        self.input_row_impl(src, g, r, relu, v)
    }

    /// [`Winograd3x3::input_row`] compiled for AVX-512 (the crate's baseline target is SSE2; the
    /// values are the same: no operation is fused or reordered).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn input_row_avx512(&self, src: &[f32], g: Geometry, r: usize, relu: bool, v: &mut [f32]) {
        self.input_row_impl(src, g, r, relu, v)
    }

    #[inline(always)]
    fn input_row_impl(&self, src: &[f32], g: Geometry, r: usize, relu: bool, v: &mut [f32]) {
        let c = self.c_in;
        let (b, ty) = (r / g.th, r % g.th);
        // First pixel of each of the 4 input rows of the tile row's patches, `None` outside.
        let rows: [Option<usize>; 4] = std::array::from_fn(|i| {
            let sy = (2 * ty + i).checked_sub(1).filter(|&sy| sy < g.h)?;
            Some((b * g.h + sy) * g.w)
        });
        let mut c0 = 0;
        while c0 + LANES <= c {
            transform_in_row::<LANES>(src, &rows, (c0, c, g.w), relu, v);
            c0 += LANES;
        }
        for c0 in c0..c {
            transform_in_row::<1>(src, &rows, (c0, c, g.w), relu, v);
        }
    }

    /// Output transform of global tile row `r` for output channels `c0..c0 + cb`: `m` is
    /// `[tw][16][cb]`, `out` starts at the tile row's first output row.
    /// `relu_out`: `max(y, 0)` of the result.
    fn output_row(&self, m: &[f32], block: (usize, usize), relu_out: bool, g: Geometry, r: usize, out: &mut [Out]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { self.output_row_avx512(m, block, relu_out, g, r, out) };
        }
        self.output_row_impl(m, block, relu_out, g, r, out)
    }

    /// [`Winograd3x3::output_row`] compiled for AVX-512 (same values, see `input_row_avx512`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn output_row_avx512(
        &self,
        m: &[f32],
        block: (usize, usize),
        relu_out: bool,
        g: Geometry,
        r: usize,
        out: &mut [Out],
    ) {
        self.output_row_impl(m, block, relu_out, g, r, out)
    }

    #[inline(always)]
    fn output_row_impl(
        &self,
        m: &[f32],
        (c0, cb): (usize, usize),
        relu_out: bool,
        g: Geometry,
        r: usize,
        out: &mut [Out],
    ) {
        let c_out = self.c_out;
        let rows = g.end_row(r) - g.first_row(r);
        for (tx, m) in m.chunks_exact(16 * cb).enumerate() {
            let cols = (g.w - 2 * tx).min(2);
            let mut k = 0;
            while k + LANES <= cb {
                transform_out::<LANES>(m, &self.bias, (k, c0, cb, c_out), relu_out, (rows, cols, tx, g.w), out);
                k += LANES;
            }
            for k in k..cb {
                transform_out::<1>(m, &self.bias, (k, c0, cb, c_out), relu_out, (rows, cols, tx, g.w), out);
            }
        }
    }

    /// The 16 products `M_ξ = U_ξᵀ V_ξ` of `tiles` tiles for the output channel block
    /// `c0..c0 + cb` (one of `c_blocks`): `v` is `[tiles][16][C_in]`, `m` is `[tiles][16][cb]`.
    /// With `parallel` (the packed kernel only), the 16 products are tasks on the rayon pool.
    fn products(&self, v: &[f32], tiles: usize, m: &mut [f32], c0: usize, cb: usize, parallel: bool) -> Result<()> {
        let c_in = self.c_in;
        if let Some(packed) = &self.packed {
            if v.len() < tiles * 16 * c_in || m.len() < tiles * 16 * cb || (c0, cb) != (0, self.c_out) {
                bail!("winograd products: buffer sizes")
            }
            if tiles == 0 {
                return Ok(());
            }
            // Row t of M_ξ (C_out values) at m[(16·t + ξ)·C_out..]: the 16 products write
            // interleaved rows, disjoint from each other's.
            let out = OutPtr(m.as_mut_ptr());
            let product = |xi: usize| {
                let lhs = Lhs::Rows { a: &v[xi * c_in..], m: tiles, lda: 16 * c_in };
                // SAFETY: `m` has ≥ 16·tiles·C_out values (checked), so row t < tiles of M_ξ,
                // `m[(16·t + ξ)·C_out..][..C_out]`, is inside it; product ξ alone writes those
                // values (the rows of different ξ are disjoint), and `m` is borrowed uniquely.
                unsafe { packed.u[xi].product_into(lhs, &packed.zeros, false, out.at(xi * cb), 16 * cb) }
            };
            return if parallel {
                (0..16).into_par_iter().try_for_each(product)
            } else {
                (0..16).try_for_each(product)
            };
        }
        assert!(
            v.len() >= tiles * 16 * c_in && m.len() >= tiles * 16 * cb && self.weight.len() >= 16 * c_in * (c0 + cb),
            "winograd products: buffer sizes"
        );
        let u = &self.weight[16 * c_in * c0..16 * c_in * (c0 + cb)];
        if tiles == 0 {
            return Ok(());
        }
        let n = tiles;
        for xi in 0..16 {
            // SAFETY: with the asserted sizes, every element gemm touches is in bounds (o < cb,
            // i < C_in, t < n = tiles): dst (o, t) at xi·cb + t·16·cb + o < 16·cb·n of `m`;
            // lhs (o, i) at xi·C_in·cb + i·cb + o < 16·C_in·cb = `u.len()`; rhs (i, t) at
            // xi·C_in + t·16·C_in + i < 16·C_in·n of `v`. `m` is a unique borrow, so the
            // destination overlaps neither operand; gemm runs on this thread only.
            unsafe {
                gemm::gemm(
                    cb,
                    n,
                    c_in,
                    m.as_mut_ptr().add(xi * cb),
                    (16 * cb) as isize,
                    1,
                    false,
                    u.as_ptr().add(xi * c_in * cb),
                    cb as isize,
                    1,
                    v.as_ptr().add(xi * c_in),
                    (16 * c_in) as isize,
                    1,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        Ok(())
    }
}

/// The row stage of `Bᵀ d B` for input column `x1 − 1` (x1 = 0 … W + 1; zero outside the
/// image), channels `c0..c0 + L`, for the 4 input rows `rows`.
#[inline(always)]
fn column_stage<const L: usize>(
    src: &[f32],
    rows: &[Option<usize>; 4],
    (x1, c0, c, w): (usize, usize, usize, usize),
    relu: bool,
) -> [[f32; L]; 4] {
    let mut d = [[0f32; L]; 4];
    if let Some(x) = x1.checked_sub(1).filter(|&x| x < w) {
        for (lanes, row) in d.iter_mut().zip(rows) {
            if let Some(p) = row {
                let at = (p + x) * c + c0;
                lanes.copy_from_slice(&src[at..at + L]);
                if relu {
                    lanes.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            }
        }
    }
    [lanes_sub(&d[0], &d[2]), lanes_add(&d[1], &d[2]), lanes_sub(&d[2], &d[1]), lanes_sub(&d[1], &d[3])]
}

/// Input transform of channels `c0..c0 + L` of a whole tile row into `v` (`[tw][16][c]`):
/// `rows` are the first pixels of the 4 input rows (`None` outside the image). `V = Bᵀ d B` with
/// `Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`: the row stage (`Bᵀ d`,
/// [`column_stage`]) is computed once per input column and shared by the two tiles that read it,
/// then the column stage (`· B`) gives the 16 values ξ = 4·i + j of each tile.
#[inline(always)]
fn transform_in_row<const L: usize>(
    src: &[f32],
    rows: &[Option<usize>; 4],
    (c0, c, w): (usize, usize, usize),
    relu: bool,
    v: &mut [f32],
) {
    let column = |x1: usize| column_stage::<L>(src, rows, (x1, c0, c, w), relu);
    let (mut t0, mut t1) = (column(0), column(1));
    for (tx, v) in v.chunks_exact_mut(16 * c).enumerate() {
        let (t2, t3) = (column(2 * tx + 2), column(2 * tx + 3));
        for i in 0..4 {
            let out = [
                lanes_sub(&t0[i], &t2[i]),
                lanes_add(&t1[i], &t2[i]),
                lanes_sub(&t2[i], &t1[i]),
                lanes_sub(&t1[i], &t3[i]),
            ];
            for (j, lanes) in out.iter().enumerate() {
                let at = (4 * i + j) * c + c0;
                v[at..at + L].copy_from_slice(lanes);
            }
        }
        (t0, t1) = (t2, t3);
    }
}

/// Output transform of channels `k..k + L` of a tile's `m` (`[16][cb]`, channel block starting
/// at `c0`), written to the tile's `rows × cols` pixels in `out` (rows of `w` pixels of `c_out`),
/// through a ReLU with `relu`.
#[inline(always)]
fn transform_out<const L: usize>(
    m: &[f32],
    bias: &[f32],
    (k, c0, cb, c_out): (usize, usize, usize, usize),
    relu: bool,
    (rows, cols, tx, w): (usize, usize, usize, usize),
    out: &mut [Out],
) {
    let mut mt = [[0f32; L]; 16];
    for (xi, lanes) in mt.iter_mut().enumerate() {
        lanes.copy_from_slice(&m[xi * cb + k..xi * cb + k + L]);
    }
    let mut b = [0f32; L];
    b.copy_from_slice(&bias[c0 + k..c0 + k + L]);
    let mut y = output_transform(&mt, &b);
    if relu {
        y.iter_mut().flatten().for_each(|v| *v = v.max(0.0));
    }
    for dy in 0..rows {
        for dx in 0..cols {
            let at = (dy * w + 2 * tx + dx) * c_out + c0 + k;
            out[at..at + L].iter_mut().zip(&y[2 * dy + dx]).for_each(|(o, &v)| {
                o.write(v);
            });
        }
    }
}

/// [`Winograd3x3`] as a candle op.
struct ApplyWinograd<'a> {
    conv: &'a Winograd3x3,
    relu_input: bool,
    relu_output: bool,
    schedule: Schedule,
}

impl CustomOp1 for ApplyWinograd<'_> {
    fn name(&self) -> &'static str {
        "winograd3x3-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = crate::nhwc::contiguous_f32(self.name(), storage, layout)?;
        let dims = layout.shape().dims4()?;
        let out = self.conv.compute(src, dims, (self.relu_input, self.relu_output), self.schedule)?;
        Ok((CpuStorage::F32(out), Shape::from((dims.0, dims.1, dims.2, self.conv.c_out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::{Rng, SeedableRng};

    /// Direct 3×3/pad-1 convolution in f64 of NHWC `x` with OIHW `w`.
    fn direct(x: &[f32], (n, h, wd, c): (usize, usize, usize, usize), w: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
        let c_out = b.len();
        let mut out = vec![0f32; n * h * wd * c_out];
        for bi in 0..n {
            for y in 0..h {
                for xx in 0..wd {
                    for o in 0..c_out {
                        let mut acc = f64::from(b[o]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (Some(sy), Some(sx)) = ((y + ky).checked_sub(1), (xx + kx).checked_sub(1)) else {
                                    continue;
                                };
                                if sy >= h || sx >= wd {
                                    continue;
                                }
                                for i in 0..c {
                                    let mut v = x[((bi * h + sy) * wd + sx) * c + i];
                                    if relu {
                                        v = v.max(0.0);
                                    }
                                    acc += f64::from(v) * f64::from(w[((o * c + i) * 3 + ky) * 3 + kx]);
                                }
                            }
                        }
                        out[((bi * h + y) * wd + xx) * c_out + o] = acc as f32;
                    }
                }
            }
        }
        out
    }

    fn random(len: usize, scale: f32, rng: &mut impl Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-scale..scale)).collect()
    }

    /// Both schedules of every kernel against the direct convolution, on awkward shapes.
    #[test]
    fn matches_direct_convolution() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let shapes = [
            (1, 1, 1, 1, 1),
            (1, 5, 7, 3, 2),
            (2, 6, 5, 17, 19),
            (3, 9, 4, 16, 33),
            (1, 13, 11, 40, 70),
            (2, 4, 30, 20, 64),
        ];
        for (n, h, w, c, c_out) in shapes {
            let x = random(n * h * w * c, 2.0, &mut rng);
            let wt = random(c_out * c * 9, 0.5, &mut rng);
            let b = random(c_out, 1.0, &mut rng);
            let xt = Tensor::from_vec(x.clone(), (n, h, w, c), &Device::Cpu).unwrap();
            for kernel in GemmKernel::available() {
                let conv = Winograd3x3::with_kernel(
                    &Tensor::from_vec(wt.clone(), (c_out, c, 3, 3), &Device::Cpu).unwrap(),
                    &Tensor::from_vec(b.clone(), c_out, &Device::Cpu).unwrap(),
                    kernel,
                )
                .unwrap();
                assert_eq!(conv.gemm_kernel(), kernel);
                for relu in [false, true] {
                    let want = direct(&x, (n, h, w, c), &wt, &b, relu);
                    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let mut results = Vec::new();
                    for schedule in [Schedule::Fused, Schedule::Banded] {
                        let got = conv.forward_with(&xt, relu, false, schedule).unwrap();
                        assert_eq!(got.dims(), &[n, h, w, c_out]);
                        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        assert!(
                            err <= 1e-5 * scale.max(1.0),
                            "{n}×{h}×{w}×{c}→{c_out} relu={relu} {kernel:?} {schedule:?}: {err}"
                        );
                        results.push(got);
                    }
                    assert!(
                        results[0].iter().zip(&results[1]).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "schedules differ"
                    );
                    // ReLU of the output: exactly the ReLU of the plain result.
                    let relu_out = conv.forward_with(&xt, relu, true, Schedule::for_shape(c, c_out)).unwrap();
                    let relu_out = relu_out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    assert!(relu_out.iter().zip(&results[0]).all(|(a, b)| a.to_bits() == b.max(0.0).to_bits()));
                }
            }
        }
    }

    #[test]
    fn bit_identical_across_thread_counts() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (n, h, w, c, c_out) = (2, 30, 27, 48, 200);
        let x = Tensor::from_vec(random(n * h * w * c, 1.0, &mut rng), (n, h, w, c), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(random(c_out * c * 9, 0.2, &mut rng), (c_out, c, 3, 3), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(random(c_out, 0.1, &mut rng), c_out, &Device::Cpu).unwrap();
        for kernel in GemmKernel::available() {
            let conv = Winograd3x3::with_kernel(&wt, &b, kernel).unwrap();
            for schedule in [Schedule::Fused, Schedule::Banded] {
                let runs: Vec<Vec<u32>> = [1, 2, 3]
                    .iter()
                    .map(|&threads| {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        let y = pool.install(|| conv.forward_with(&x, true, false, schedule)).unwrap();
                        y.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
                    })
                    .collect();
                assert!(runs.windows(2).all(|p| p[0] == p[1]), "{kernel:?} {schedule:?}");
            }
        }
    }

    /// With the packed products an image gets the bits it gets alone, in any batch and with
    /// either schedule (the `gemm` crate's blocking may depend on the number of tiles).
    #[test]
    fn packed_products_give_each_image_its_own_bits_in_a_batch() {
        for kernel in GemmKernel::available().into_iter().filter(|k| k.is_packed()) {
            packed_batch_bits(kernel);
        }
    }

    fn packed_batch_bits(kernel: GemmKernel) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (n, h, w, c, c_out) = (3, 14, 13, 40, 70);
        let x = Tensor::from_vec(random(n * h * w * c, 1.0, &mut rng), (n, h, w, c), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(random(c_out * c * 9, 0.2, &mut rng), (c_out, c, 3, 3), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(random(c_out, 0.1, &mut rng), c_out, &Device::Cpu).unwrap();
        let conv = Winograd3x3::with_kernel(&wt, &b, kernel).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
        };
        for schedule in [Schedule::Fused, Schedule::Banded] {
            let batch = bits(&conv.forward_with(&x, true, true, schedule).unwrap());
            let alone: Vec<u32> = (0..n)
                .flat_map(|i| {
                    bits(&conv.forward_with(&x.narrow(0, i, 1).unwrap(), true, true, Schedule::Fused).unwrap())
                })
                .collect();
            assert!(batch == alone, "{kernel:?} {schedule:?}: a batch of {n} differs from its images alone");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = Tensor::zeros((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let conv = Winograd3x3::new(&w, &b).unwrap();
        let x = Tensor::zeros((1, 4, 4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(conv.forward(&x, false).is_err());
        let w5 = Tensor::zeros((4, 3, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(Winograd3x3::new(&w5, &b).is_err());
        assert!(Winograd3x3::new(&w, &Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap()).is_err());
        let empty = Tensor::zeros((0, 4, 4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(conv.forward(&empty, false).unwrap().dims(), &[0, 4, 4, 4]);
    }
}
