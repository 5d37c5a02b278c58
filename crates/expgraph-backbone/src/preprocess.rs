//! Input preprocessing presets: RGB `u8` pixels → normalized NCHW `f32` tensors (spec §3).

use candle_core::{Device, Tensor};

use crate::BackboneError;

/// Per-channel (R, G, B) mean of the original Caffe/MatConvNet VGG-16, on the 0..255 scale.
pub const CAFFE_MEAN_RGB: [f32; 3] = [123.68, 116.779, 103.939];
/// Per-channel (R, G, B) mean of torchvision's ImageNet normalization, on the 0..1 scale.
pub const TORCHVISION_MEAN_RGB: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel (R, G, B) standard deviation of torchvision's ImageNet normalization.
pub const TORCHVISION_STD_RGB: [f32; 3] = [0.229, 0.224, 0.225];

/// How pixels are normalized before the forward pass.
///
/// The right preset depends on the weights, not on the architecture:
/// * [`Preprocess::Caffe`]: `x − mean` with `x` in 0..255 and [`CAFFE_MEAN_RGB`], no std. Right for
///   the original VGG-16 (the file `vgg16-imagenet-conv.safetensors`; spec §3).
/// * [`Preprocess::Torchvision`]: `(x / 255 − mean) / std` ([`TORCHVISION_MEAN_RGB`],
///   [`TORCHVISION_STD_RGB`]). Right for torchvision/timm weights such as `timm/vgg16.tv_in1k`.
///
/// [`crate::WeightSource::default_preprocess`] picks Caffe for local files and Torchvision for hub
/// repositories; callers can override it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preprocess {
    /// RGB 0..255 minus the Caffe mean, no division.
    Caffe,
    /// `(x/255 − mean) / std` with torchvision's ImageNet statistics.
    Torchvision,
}

impl Preprocess {
    /// Stable name, used in cache keys and on the command line: `"caffe"` or `"torchvision"`.
    pub fn name(&self) -> &'static str {
        match self {
            Preprocess::Caffe => "caffe",
            Preprocess::Torchvision => "torchvision",
        }
    }

    /// Parses a name produced by [`Preprocess::name`] (case-insensitive).
    pub fn from_name(s: &str) -> Result<Self, BackboneError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "caffe" => Ok(Preprocess::Caffe),
            "torchvision" => Ok(Preprocess::Torchvision),
            _ => Err(BackboneError::UnknownPreprocess(s.to_string())),
        }
    }

    /// Normalizes one pixel value of channel `c` (0 = R, 1 = G, 2 = B).
    fn apply(&self, pixel: u8, c: usize) -> f32 {
        match self {
            // Plain subtraction so the result is bit-identical to `f32(x) - f32(mean)`.
            Preprocess::Caffe => pixel as f32 - CAFFE_MEAN_RGB[c],
            Preprocess::Torchvision => (pixel as f32 / 255.0 - TORCHVISION_MEAN_RGB[c]) / TORCHVISION_STD_RGB[c],
        }
    }

    /// RGB `u8` HWC pixel buffers, each `size × size × 3`, → `[N, 3, size, size]` `f32` on `device`.
    pub fn to_tensor(&self, images: &[&[u8]], size: usize, device: &Device) -> Result<Tensor, BackboneError> {
        if images.is_empty() {
            return Err(BackboneError::Input("no images to preprocess".into()));
        }
        if size == 0 {
            return Err(BackboneError::Input("image size must be positive".into()));
        }
        let plane = size * size;
        let mut data = vec![0f32; images.len() * 3 * plane];
        for (i, (image, out)) in images.iter().zip(data.chunks_exact_mut(3 * plane)).enumerate() {
            if image.len() != plane * 3 {
                return Err(BackboneError::Input(format!(
                    "image {i}: buffer has {} bytes, expected {size}×{size}×3 = {}",
                    image.len(),
                    plane * 3
                )));
            }
            for (p, rgb) in image.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + p] = self.apply(rgb[c], c);
                }
            }
        }
        Ok(Tensor::from_vec(data, (images.len(), 3, size, size), device)?)
    }
}

impl std::fmt::Display for Preprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preprocess {
    type Err = BackboneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_unknown() {
        for p in [Preprocess::Caffe, Preprocess::Torchvision] {
            assert_eq!(Preprocess::from_name(p.name()).unwrap(), p);
            assert_eq!(p.to_string().parse::<Preprocess>().unwrap(), p);
        }
        assert_eq!(Preprocess::from_name(" Caffe ").unwrap(), Preprocess::Caffe);
        let err = Preprocess::from_name("bgr").unwrap_err().to_string();
        assert!(err.contains("bgr") && err.contains("caffe"), "{err}");
    }

    #[test]
    fn caffe_subtracts_mean_in_nchw_order() {
        // 2×2 image: pixel (y, x) has RGB (10·k, 10·k+1, 10·k+2) with k = y·2 + x.
        let img: Vec<u8> = (0..4u8).flat_map(|k| [10 * k, 10 * k + 1, 10 * k + 2]).collect();
        let t = Preprocess::Caffe.to_tensor(&[&img], 2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 2, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for c in 0..3 {
            for k in 0..4 {
                let expected = (10 * k + c) as f32 - CAFFE_MEAN_RGB[c];
                assert_eq!(v[c * 4 + k], expected, "c={c} k={k}");
            }
        }
    }

    #[test]
    fn torchvision_matches_formula() {
        let img = [0u8, 128, 255];
        let t = Preprocess::Torchvision.to_tensor(&[&img], 1, &Device::Cpu).unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for c in 0..3 {
            let expected = (img[c] as f32 / 255.0 - TORCHVISION_MEAN_RGB[c]) / TORCHVISION_STD_RGB[c];
            assert!((v[c] - expected).abs() < 1e-5, "c={c}: {} vs {expected}", v[c]);
        }
    }

    #[test]
    fn wrong_buffer_size_and_empty_batch_are_errors() {
        let good = vec![0u8; 12];
        let bad = vec![0u8; 11];
        let err = Preprocess::Caffe.to_tensor(&[&good, &bad], 2, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("image 1"), "{err}");
        assert!(Preprocess::Caffe.to_tensor(&[], 2, &Device::Cpu).is_err());
    }
}
