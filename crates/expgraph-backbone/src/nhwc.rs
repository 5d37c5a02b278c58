//! Fast CPU building blocks on NHWC activations (docs/cpu-performance.md §4.3): a parallel im2col
//! for 3×3/pad-1 convolutions, feeding one large matmul, and a fused 2×2 max-pool + ReLU.
//!
//! Both ops are candle [`CustomOp1`]s with CPU kernels only; on other devices the stock candle
//! convolution path is used instead (see [`crate::ConvImpl`]).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Borrow the contiguous `f32` data of a CPU storage.
fn contiguous_f32<'a>(op: &'static str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
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
