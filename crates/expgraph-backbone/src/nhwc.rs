//! Fast CPU building blocks on NHWC activations (docs/cpu-performance.md §4.3): a parallel im2col
//! for 3×3/pad-1 convolutions, feeding one large matmul, and a fused 2×2 max-pool + ReLU (VGG);
//! and [`GemmConv`], a square convolution of any kernel, stride and padding as one `gemm` call
//! that accumulates onto the bias (and a residual), with an optional ReLU (ResNet). With the
//! packed kernel no im2col matrix is formed: it reads every patch in place from the (zero-padded)
//! activations; with the `gemm` crate a 1×1 stride-1 convolution multiplies the activations in
//! place and the others form their im2col matrix.
//!
//! The 3×3, stride-1, pad-1 convolutions of both networks normally run the Winograd kernel of
//! [`crate::winograd`] instead (2–5× faster per layer, no layer-sized im2col buffer); the im2col
//! of this module remains VGG-16's path with `Vgg16::with_winograd(false)`, and [`GemmConv`]
//! ResNet's for every other convolution (and for 3×3 ones that add a residual).
//!
//! The ops are candle custom ops with CPU kernels only; on other devices the stock candle
//! convolution path is used instead (see [`crate::ConvImpl`]).

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::packed::{ConvLhs, Lhs, PackedIsa, PackedWeights};

/// Whether [`on_pool`] keeps the other workers spinning while `f` runs (see there).
static SPIN: AtomicBool = AtomicBool::new(true);

/// Turns on or off the workers that spin, instead of sleeping, while a forward pass runs on the
/// pool (for A/B timing; on by default). Scheduling only: the values do not change.
pub fn set_spinning(on: bool) {
    SPIN.store(on, Ordering::Relaxed);
}

/// Runs `f`, a forward pass of these kernels, on a worker of the rayon pool (the caller waits).
/// Each kernel is a parallel loop; called from outside the pool, every one of them (about a hundred
/// per ResNet-50 forward) would hand its work to sleeping workers and wait to be woken, while on a
/// worker they share it with workers still spinning from the previous one. Interleaved A/B on the
/// 2-core machine: ResNet-50 at batch 1 1.02–1.08× faster over 11 runs; at batch 8, and VGG-16,
/// within the noise (0.92–1.12).
///
/// Rayon puts a worker that found no work for some tens of microseconds to sleep, and on a
/// virtual machine waking it takes 50–80 µs (`perf sched`), about 80 times per ResNet-50 forward:
/// the gaps between the kernels, and the ends of their loops, are long enough. So, called from
/// outside the pool, `f` gets a spinner on each of the other workers, as ONNX Runtime's intra-op
/// threads spin by default: it runs whatever work the pool has ([`rayon::yield_now`], as a
/// waiting worker would, so other work on the pool still gets done) and spins otherwise, until
/// `f` returns or unwinds. Called from inside the pool (nested in other parallel work), `f` just
/// runs. Interleaved A/B: ResNet-50 1.016–1.047× faster at batch 1 (6 runs of 40–60
/// rounds), 1.003–1.015× at batch 8, VGG-16 1.02× at both. Scheduling only: the values do not
/// change.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() || !SPIN.load(Ordering::Relaxed) {
        return rayon::scope(|_| f());
    }
    /// Sets the flag when dropped, so that the spinners stop even if `f` panics.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let home = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| {
                // The worker running `f` only picks a spinner up once `f` waits (or has returned).
                if rayon::current_thread_index() == home {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _done = Done(&done);
        f()
    })
}

/// Borrow the contiguous `f32` data of a CPU storage.
pub(crate) fn contiguous_f32<'a>(op: &'static str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{op}: only f32 tensors are supported, got {:?}", storage.dtype())
    };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("{op}: the input must be contiguous") };
    Ok(&data[start..end])
}

/// im2col of an NHWC `[N, H, W, C]` tensor for a 3×3, stride-1, pad-1 convolution: output
/// `[N·H·W, 9·C]` whose row for pixel (n, y, x) holds the patch in (ky, kx, c) order, zeros outside.
/// With `relu_input`, `max(v, 0)` is applied while gathering (the ReLU of the previous conv).
pub(crate) struct Im2col3x3 {
    pub relu_input: bool,
}

impl CustomOp1 for Im2col3x3 {
    fn name(&self) -> &'static str {
        "im2col3x3-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name(), storage, layout)?;
        let (n, h, w, c) = layout.shape().dims4()?;
        let row = 9 * c;
        let mut out = vec![0f32; n * h * w * row];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((n * h * w, row))));
        }
        let relu = self.relu_input;
        // One task per output image row: W patches of 9·C values.
        out.par_chunks_mut(w * row).enumerate().for_each(|(image_row, chunk)| {
            let (b, y) = (image_row / h, image_row % h);
            for x in 0..w {
                let patch = &mut chunk[x * row..(x + 1) * row];
                for ky in 0..3 {
                    let Some(sy) = (y + ky).checked_sub(1).filter(|&sy| sy < h) else {
                        continue;
                    };
                    for kx in 0..3 {
                        let Some(sx) = (x + kx).checked_sub(1).filter(|&sx| sx < w) else {
                            continue;
                        };
                        let s = &src[((b * h + sy) * w + sx) * c..][..c];
                        let d = &mut patch[(ky * 3 + kx) * c..][..c];
                        if relu {
                            d.iter_mut().zip(s).for_each(|(d, &s)| *d = s.max(0.0));
                        } else {
                            d.copy_from_slice(s);
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n * h * w, row))))
    }
}

/// 2×2, stride-2 max-pool of an NHWC `[N, H, W, C]` tensor followed by ReLU (floor rounding:
/// a trailing odd row/column is dropped, as in candle and PyTorch).
pub(crate) struct MaxPool2Relu;

impl CustomOp1 for MaxPool2Relu {
    fn name(&self) -> &'static str {
        "maxpool2-relu-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name(), storage, layout)?;
        let (n, h, w, c) = layout.shape().dims4()?;
        let (oh, ow) = (h / 2, w / 2);
        let mut out = vec![0f32; n * oh * ow * c];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), Shape::from((n, oh, ow, c))));
        }
        out.par_chunks_mut(ow * c).enumerate().for_each(|(out_row, chunk)| {
            let (b, oy) = (out_row / oh, out_row % oh);
            for ox in 0..ow {
                let at = |dy: usize, dx: usize| ((b * h + 2 * oy + dy) * w + 2 * ox + dx) * c;
                let (p00, p01, p10, p11) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                for (ch, d) in chunk[ox * c..(ox + 1) * c].iter_mut().enumerate() {
                    let m = src[p00 + ch].max(src[p01 + ch]).max(src[p10 + ch].max(src[p11 + ch]));
                    *d = m.max(0.0);
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, oh, ow, c))))
    }
}

/// Copies `src` into the (uninitialized) front of `dst`.
fn write_slice(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| {
        d.write(s);
    });
}

/// Fills `dst` with zeros.
fn write_zeros(dst: &mut [MaybeUninit<f32>]) {
    dst.iter_mut().for_each(|d| {
        d.write(0.0);
    });
}

/// Elements per rayon task in the element-wise passes (bias fill, ReLU).
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Which matrix product a [`GemmConv`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// Weights packed once at load, bias, residual and ReLU in registers
    /// ([`crate::packed`]), in AVX-512 registers; AVX-512F CPUs only. The default where the
    /// CPU has it.
    Packed,
    /// [`GemmKernel::Packed`] in AVX2 registers (AVX2 and FMA CPUs): the same values, bit for
    /// bit. The default on CPUs without AVX-512F that have it.
    PackedAvx2,
    /// The `gemm` crate (any CPU), with the bias (and residual) written first and a separate
    /// ReLU pass.
    Portable,
}

impl GemmKernel {
    /// The first of [`GemmKernel::Packed`], [`GemmKernel::PackedAvx2`] and
    /// [`GemmKernel::Portable`] that the CPU runs.
    pub fn best() -> Self {
        Self::available().pop().unwrap_or(GemmKernel::Portable)
    }

    /// Every kernel this CPU runs, [`GemmKernel::Portable`] first, the best last.
    pub fn available() -> Vec<Self> {
        [GemmKernel::Portable, GemmKernel::PackedAvx2, GemmKernel::Packed]
            .into_iter()
            .filter(|k| k.packed_isa().is_none_or(PackedIsa::supported))
            .collect()
    }

    /// Whether it runs on weights packed at load ([`crate::packed`]).
    pub fn is_packed(self) -> bool {
        self.packed_isa().is_some()
    }

    /// The registers of the packed kernels.
    pub(crate) fn packed_isa(self) -> Option<PackedIsa> {
        match self {
            GemmKernel::Packed => Some(PackedIsa::Avx512),
            GemmKernel::PackedAvx2 => Some(PackedIsa::Avx2),
            GemmKernel::Portable => None,
        }
    }

    /// The packed kernel on `isa`.
    pub(crate) fn packed(isa: PackedIsa) -> Self {
        match isa {
            PackedIsa::Avx512 => GemmKernel::Packed,
            PackedIsa::Avx2 => GemmKernel::PackedAvx2,
        }
    }

    /// Weights packed for this kernel, or an error naming `op` when the CPU lacks its
    /// instructions; `None` for [`GemmKernel::Portable`].
    pub(crate) fn pack(self, op: &str, b: &[f32], k: usize, n: usize) -> Result<Option<PackedWeights>> {
        let Some(isa) = self.packed_isa() else { return Ok(None) };
        if !isa.supported() {
            bail!("{op}: the kernel {self:?} needs {}, which this CPU lacks", isa.needs())
        }
        Ok(Some(PackedWeights::new(b, k, n, isa)?))
    }
}

/// The weights of a [`GemmConv`], in the form its kernel reads.
enum GemmWeights {
    Packed(PackedWeights),
    /// `[k·k·C_in, C_out]`, rows in (kh, kw, cin) order.
    Portable(Vec<f32>),
}

/// A square convolution with bias on NHWC activations, computed as one matrix product
/// `[N·OH·OW, k·k·C_in] × [k·k·C_in, C_out]` (on the rayon pool), the bias, a residual and a
/// ReLU fused: with [`GemmKernel::Packed`] on AVX-512 CPUs (the im2col matrix read in place from
/// the padded input, never formed), else by the `gemm` crate (on the formed matrix).
pub struct GemmConv {
    kernel: usize,
    stride: usize,
    padding: usize,
    c_in: usize,
    c_out: usize,
    weight: GemmWeights,
    /// `[C_out]`.
    bias: Vec<f32>,
}

impl GemmConv {
    /// From an OIHW `weight` `[C_out, C_in, k, k]` and a `[C_out]` `bias` (any device), with
    /// [`GemmKernel::best`].
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Self> {
        Self::with_kernel(weight, bias, stride, padding, GemmKernel::best())
    }

    /// [`GemmConv::new`] with a chosen kernel; a packed one is an error on a CPU without its
    /// instructions.
    pub fn with_kernel(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
        kernel: GemmKernel,
    ) -> Result<Self> {
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if kh != kw || stride == 0 {
            bail!("GemmConv: square kernels and stride ≥ 1 only, got {kh}×{kw} stride {stride}")
        }
        let w = weight.permute((2, 3, 1, 0))?.reshape((kh * kw * c_in, c_out))?.contiguous()?;
        let w = w.flatten_all()?.to_vec1::<f32>()?;
        let bias = bias.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != c_out {
            bail!("GemmConv: {} biases for {c_out} output channels", bias.len())
        }
        let weight = match kernel.pack("GemmConv", &w, kh * kw * c_in, c_out)? {
            Some(packed) => GemmWeights::Packed(packed),
            None => GemmWeights::Portable(w),
        };
        Ok(Self { kernel: kh, stride, padding, c_in, c_out, weight, bias })
    }

    /// The kernel this convolution runs.
    pub fn gemm_kernel(&self) -> GemmKernel {
        match self.weight {
            GemmWeights::Packed(ref packed) => GemmKernel::packed(packed.isa()),
            GemmWeights::Portable(_) => GemmKernel::Portable,
        }
    }

    fn out_size(&self, n: usize) -> Result<usize> {
        match (n + 2 * self.padding).checked_sub(self.kernel) {
            Some(d) => Ok(d / self.stride + 1),
            None => bail!("conv: input side {n} smaller than the kernel {}", self.kernel),
        }
    }

    /// `relu?(conv(x) + bias [+ residual])` of NHWC `x`; `residual` has the output's shape.
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let op = ApplyGemmConv { conv: self, relu };
        match residual {
            Some(r) => x.apply_op2_no_bwd(r, &op),
            None => x.apply_op1_no_bwd(&op),
        }
    }

    /// The lhs of the `gemm` crate's product: `x` itself (1×1, stride 1, no padding), or its
    /// im2col matrix `[N·OH·OW, k·k·C]` (rows in (ky, kx, c) order, zeros outside the input).
    fn columns<'a>(&self, src: &'a [f32], (n, h, w, c): (usize, usize, usize, usize)) -> Result<Cow<'a, [f32]>> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if (k, s, p) == (1, 1, 0) {
            return Ok(Cow::Borrowed(src));
        }
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        let row = k * k * c;
        let len = n * oh * ow * row;
        if len == 0 {
            return Ok(Cow::Owned(Vec::new()));
        }
        // Written once (no zero-fill first): every kernel row of every patch is copied from the
        // input where it lies inside it (one contiguous run of `kx`s, NHWC) and zero elsewhere.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        out.spare_capacity_mut()[..len].par_chunks_mut(ow * row).enumerate().for_each(|(out_row, chunk)| {
            let (b, oy) = (out_row / oh, out_row % oh);
            for (ox, patch) in chunk.chunks_exact_mut(row).enumerate() {
                // The kernel columns inside the input: x = ox·s + kx − p ∈ [0, w).
                let kx0 = p.saturating_sub(ox * s).min(k);
                let kx1 = (w + p).saturating_sub(ox * s).clamp(kx0, k);
                for (ky, d) in patch.chunks_exact_mut(k * c).enumerate() {
                    match (oy * s + ky).checked_sub(p).filter(|&sy| sy < h) {
                        Some(sy) => {
                            let (head, rest) = d.split_at_mut(kx0 * c);
                            let (inside, tail) = rest.split_at_mut((kx1 - kx0) * c);
                            write_zeros(head);
                            if kx1 > kx0 {
                                let x = ox * s + kx0 - p;
                                write_slice(inside, &src[((b * h + sy) * w + x) * c..][..(kx1 - kx0) * c]);
                            }
                            write_zeros(tail);
                        }
                        None => write_zeros(d),
                    }
                }
            }
        });
        // SAFETY: the chunks of `ow·row` values tile `[0, len)` (len = n·oh rows of them), each
        // chunk is `ow` patches of `row = k·k·c` values, and the loops above write all k kernel
        // rows of `k·c` values of every patch (head, inside and tail split each), so all `len`
        // values are initialized.
        unsafe { out.set_len(len) };
        Ok(Cow::Owned(out))
    }

    /// NHWC `src` with `padding` zeros on every side (`src` itself without padding).
    fn padded<'a>(&self, src: &'a [f32], (n, h, w, c): (usize, usize, usize, usize)) -> Cow<'a, [f32]> {
        let p = self.padding;
        if p == 0 {
            return Cow::Borrowed(src);
        }
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let len = n * hp * wp * c;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        if len == 0 {
            return Cow::Owned(out);
        }
        out.spare_capacity_mut()[..len].par_chunks_mut(wp * c).enumerate().for_each(|(row, d)| {
            let (b, y) = (row / hp, row % hp);
            match (y.checked_sub(p)).filter(|&y| y < h) {
                Some(y) => {
                    let (left, rest) = d.split_at_mut(p * c);
                    let (inside, right) = rest.split_at_mut(w * c);
                    write_zeros(left);
                    write_slice(inside, &src[(b * h + y) * w * c..][..w * c]);
                    write_zeros(right);
                }
                None => write_zeros(d),
            }
        });
        // SAFETY: the chunks of `wp·c` values tile `[0, len)` (len = n·hp of them), and each is
        // written whole: zeros, or zeros around one input row of `w·c` values.
        unsafe { out.set_len(len) };
        Cow::Owned(out)
    }

    fn cpu_forward(
        &self,
        name: &'static str,
        storage: &CpuStorage,
        layout: &Layout,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(name, storage, layout)?;
        let (n, h, w, c) = layout.shape().dims4()?;
        if c != self.c_in {
            bail!("{name}: input has {c} channels, the convolution expects {}", self.c_in)
        }
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        let (m, k, c_out) = (n * oh * ow, self.kernel * self.kernel * c, self.c_out);
        let shape = Shape::from((n, oh, ow, c_out));
        let len = m * c_out;
        if len == 0 {
            return Ok((CpuStorage::F32(Vec::new()), shape));
        }
        if let Some(r) = residual.filter(|r| r.len() != len) {
            bail!("{name}: residual of {} values for {len} outputs", r.len())
        }
        let weight = match &self.weight {
            GemmWeights::Packed(packed) => {
                // No im2col matrix: the kernel reads each patch's rows in place from the
                // (zero-padded) input, with the same products in the same order. A 1×1 stride-1
                // convolution is a plain product, whose tiles may span output rows.
                let x;
                let lhs = if (self.kernel, self.stride, self.padding) == (1, 1, 0) {
                    Lhs::Rows { a: src, m, lda: k }
                } else {
                    x = self.padded(src, (n, h, w, c));
                    let p = 2 * self.padding;
                    let (height, width, kernel, stride) = (h + p, w + p, self.kernel, self.stride);
                    Lhs::Conv(ConvLhs { x: &x, images: n, height, width, c, kernel, stride })
                };
                return Ok((CpuStorage::F32(packed.product(lhs, &self.bias, residual, relu)?), shape));
            }
            GemmWeights::Portable(weight) => weight,
        };
        // Start from the bias (plus the residual): gemm then accumulates the product onto it.
        let rows = (ELEMENTWISE_CHUNK / c_out).max(1);
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let spare = &mut out.spare_capacity_mut()[..len];
        match residual {
            Some(r) => spare.par_chunks_mut(rows * c_out).zip(r.par_chunks(rows * c_out)).for_each(|(o, r)| {
                for (o, r) in o.chunks_exact_mut(c_out).zip(r.chunks_exact(c_out)) {
                    o.iter_mut().zip(r).zip(&self.bias).for_each(|((o, &r), &b)| {
                        o.write(r + b);
                    });
                }
            }),
            None => spare.par_chunks_mut(rows * c_out).for_each(|o| {
                o.chunks_exact_mut(c_out).for_each(|o| {
                    write_slice(o, &self.bias);
                });
            }),
        }
        // SAFETY: `len` is a multiple of `c_out`, so the whole `c_out`-value rows written above
        // (the residual has `len` values, checked) cover all `len` values.
        unsafe { out.set_len(len) };
        let lhs = self.columns(src, (n, h, w, c))?;
        if lhs.len() != m * k || weight.len() != k * c_out {
            bail!("{name}: operand sizes do not match ({} × {}, {m}×{k}·{k}×{c_out})", lhs.len(), weight.len())
        }
        // SAFETY: `out` is m×c_out, `lhs` m×k and `weight` k×c_out, all row-major and contiguous
        // (sizes checked above); the three buffers do not overlap.
        unsafe {
            gemm::gemm(
                m,
                c_out,
                k,
                out.as_mut_ptr(),
                1,
                c_out as isize,
                true,
                lhs.as_ptr(),
                1,
                k as isize,
                weight.as_ptr(),
                1,
                c_out as isize,
                1.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
        if relu {
            out.par_chunks_mut(ELEMENTWISE_CHUNK).for_each(|o| o.iter_mut().for_each(|v| *v = v.max(0.0)));
        }
        Ok((CpuStorage::F32(out), shape))
    }
}

/// [`GemmConv::forward`] as a candle op: one input (no residual) or two (input, residual).
struct ApplyGemmConv<'a> {
    conv: &'a GemmConv,
    relu: bool,
}

impl CustomOp1 for ApplyGemmConv<'_> {
    fn name(&self) -> &'static str {
        "gemm-conv-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.conv.cpu_forward(CustomOp1::name(self), storage, layout, None, self.relu)
    }
}

impl CustomOp2 for ApplyGemmConv<'_> {
    fn name(&self) -> &'static str {
        "gemm-conv-residual-nhwc"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp2::name(self);
        let residual = contiguous_f32(name, s2, l2)?;
        self.conv.cpu_forward(name, s1, l1, Some(residual), self.relu)
    }
}

/// 3×3/pad-1 convolution of NHWC `x` with `weight` pre-permuted to `[9·C_in, C_out]` ((kh, kw, cin)
/// rows) and `bias` `[C_out]`; returns the pre-ReLU NHWC output.
pub(crate) fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor, relu_input: bool) -> Result<Tensor> {
    let (n, h, w, _) = x.dims4()?;
    let c_out = weight.dim(1)?;
    let cols = x.apply_op1_no_bwd(&Im2col3x3 { relu_input })?;
    cols.matmul(weight)?.broadcast_add(bias)?.reshape((n, h, w, c_out))
}

/// Fused 2×2 max-pool + ReLU of NHWC `x`.
pub(crate) fn max_pool2_relu(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&MaxPool2Relu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    #[test]
    fn on_pool_runs_on_a_worker_returns_its_value_and_stops_its_spinners_on_a_panic() {
        for spin in [true, false] {
            set_spinning(spin);
            // Parallel work inside, as a forward pass has: the spinners take part in it.
            let (worker, sum) = on_pool(|| {
                let sum: u64 = (0..100_000u64).into_par_iter().map(|i| i % 7).sum();
                (rayon::current_thread_index(), sum)
            });
            assert!(worker.is_some(), "f ran outside the pool");
            assert_eq!(sum, (0..100_000u64).map(|i| i % 7).sum::<u64>());
            // A panic in `f` reaches the caller (and does not leave spinners running: the call
            // returns, and the next one runs).
            let caught = std::panic::catch_unwind(|| on_pool(|| -> u32 { panic!("inside on_pool") }));
            assert!(caught.is_err());
            assert_eq!(on_pool(|| 7), 7);
            // From inside the pool, `f` runs inline on the calling worker.
            let (outer, inner) =
                rayon::scope(|_| (rayon::current_thread_index(), on_pool(rayon::current_thread_index)));
            assert_eq!(outer, inner);
        }
        set_spinning(true);
    }

    fn ramp(shape: (usize, usize, usize, usize)) -> Tensor {
        let len = shape.0 * shape.1 * shape.2 * shape.3;
        let data: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn conv_matches_candle_conv2d() {
        let x = ramp((2, 5, 6, 4)); // NHWC
        let w_oihw = ramp((3, 4, 3, 3)).affine(0.1, 0.0).unwrap();
        let bias = Tensor::new(&[0.5f32, -1.0, 2.0], &Device::Cpu).unwrap();
        let w_gemm = w_oihw.permute((2, 3, 1, 0)).unwrap().reshape((36, 3)).unwrap().contiguous().unwrap();
        for relu in [false, true] {
            let ours = conv3x3(&x, &w_gemm, &bias, relu).unwrap().permute((0, 3, 1, 2)).unwrap();
            let x_nchw = x.permute((0, 3, 1, 2)).unwrap();
            let x_nchw = if relu { x_nchw.relu().unwrap() } else { x_nchw };
            let reference = x_nchw
                .conv2d(&w_oihw, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 3, 1, 1)).unwrap())
                .unwrap();
            let diff = (ours - reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-4, "relu={relu}: max diff {diff}");
        }
    }

    #[test]
    fn gemm_conv_matches_candle_conv2d_for_every_kernel() {
        let kernels = GemmKernel::available();
        // (kernel, stride, padding), on an odd-sized batch of 2; 40 output channels (a ragged
        // panel) and 37 input channels.
        for (k, stride, pad) in [(7, 2, 3), (3, 2, 1), (5, 1, 2), (1, 2, 0), (1, 1, 0), (3, 3, 4)] {
            let x = ramp((2, 11, 9, 37)); // NHWC
            let w = ramp((40, 37, k, k)).affine(0.01, 0.0).unwrap();
            let bias = ramp((1, 1, 1, 40)).flatten_all().unwrap();
            let want = x
                .permute((0, 3, 1, 2))
                .unwrap()
                .conv2d(&w, pad, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, 40, 1, 1)).unwrap())
                .unwrap();
            let residual = ramp(want.dims4().unwrap()).affine(0.5, 0.0).unwrap();
            let want_fused = (&want + &residual).unwrap().relu().unwrap();
            for &kernel in &kernels {
                let conv = GemmConv::with_kernel(&w, &bias, stride, pad, kernel).unwrap();
                assert_eq!(conv.gemm_kernel(), kernel);
                let plain = conv.forward(&x, None, false).unwrap().permute((0, 3, 1, 2)).unwrap();
                let res_nhwc = residual.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
                let fused = conv.forward(&x, Some(&res_nhwc), true).unwrap().permute((0, 3, 1, 2)).unwrap();
                for (got, want) in [(plain, &want), (fused, &want_fused)] {
                    assert_eq!(got.dims(), want.dims());
                    let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff <= 1e-5 * scale, "{kernel:?} k{k} s{stride} p{pad}: max diff {diff} of {scale}");
                }
            }
        }
        // A residual of the wrong size is an error naming the op.
        let conv = GemmConv::new(&ramp((4, 3, 1, 1)), &ramp((1, 1, 1, 4)).flatten_all().unwrap(), 1, 0).unwrap();
        let err = conv.forward(&ramp((1, 2, 2, 3)), Some(&ramp((1, 2, 2, 5))), false).unwrap_err().to_string();
        assert!(err.contains("gemm-conv-residual-nhwc") && err.contains("residual"), "{err}");
    }

    #[test]
    fn pool_matches_candle_and_applies_relu() {
        let x = ramp((2, 5, 7, 3)); // odd sides: floor
        let ours = max_pool2_relu(&x).unwrap();
        assert_eq!(ours.dims(), &[2, 2, 3, 3]);
        let reference = x.permute((0, 3, 1, 2)).unwrap().max_pool2d(2).unwrap().relu().unwrap();
        let diff = (ours.permute((0, 3, 1, 2)).unwrap() - reference).unwrap().abs().unwrap();
        assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert!(ours.min(D::Minus1).unwrap().flatten_all().unwrap().min(0).unwrap().to_scalar::<f32>().unwrap() >= 0.0);
    }

    #[test]
    fn non_f32_input_is_an_error() {
        let x = ramp((1, 2, 2, 1)).to_dtype(candle_core::DType::F64).unwrap();
        let err = max_pool2_relu(&x).unwrap_err().to_string();
        assert!(err.contains("f32"), "{err}");
    }
}
