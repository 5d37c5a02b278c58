//! Receptive-field recursion over a stack of conv/pool layers (spec §1.3, V-code `getConvNetPara`).

use crate::TapGeometry;

/// The spatial hyper-parameters of one conv or pool layer (square kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerShape {
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl LayerShape {
    /// A 3×3, stride 1, pad 1 convolution.
    pub const CONV3_PAD1: LayerShape = LayerShape { kernel: 3, stride: 1, padding: 1 };
    /// A 2×2, stride 2 max-pool.
    pub const POOL2: LayerShape = LayerShape { kernel: 2, stride: 2, padding: 0 };

    /// Output side for an input side `n` (floor rounding, as candle and PyTorch do);
    /// `None` when the input is smaller than the kernel.
    pub fn output_size(&self, n: usize) -> Option<usize> {
        (n + 2 * self.padding).checked_sub(self.kernel).map(|d| d / self.stride + 1)
    }
}

/// Geometry of the output of `layers` applied in order to the input image.
///
/// Recursion, starting from the input (stride 1, first centre 1, receptive field 1): a layer with
/// kernel `k`, stride `s` and padding `p` maps (stride `S`, centre `c`, field `r`) to
/// (`S·s`, `c + ((k−1)/2 − p)·S`, `r + (k−1)·S`). The field is the "targetScale" of spec §1.3,
/// i.e. the size ignoring padding; the centre is in 1-based input pixels.
pub fn tap_geometry(layers: &[LayerShape]) -> TapGeometry {
    let mut g = TapGeometry { stride: 1.0, first_centre: 1.0, receptive_field: 1.0 };
    for layer in layers {
        let k = layer.kernel as f64;
        g.first_centre += ((k - 1.0) / 2.0 - layer.padding as f64) * g.stride;
        g.receptive_field += (k - 1.0) * g.stride;
        g.stride *= layer.stride as f64;
    }
    g
}

/// Side of the output map of `layers` for a square input of side `input_size`, or `None` when the
/// input is too small for some layer.
pub fn map_size(layers: &[LayerShape], input_size: usize) -> Option<usize> {
    layers.iter().try_fold(input_size, |n, layer| layer.output_size(n).filter(|&m| m > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_layers() {
        let conv = tap_geometry(&[LayerShape::CONV3_PAD1]);
        assert_eq!((conv.stride, conv.first_centre, conv.receptive_field), (1.0, 1.0, 3.0));
        let pool = tap_geometry(&[LayerShape::POOL2]);
        assert_eq!((pool.stride, pool.first_centre, pool.receptive_field), (2.0, 1.5, 2.0));
        let valid = tap_geometry(&[LayerShape { kernel: 5, stride: 1, padding: 0 }]);
        assert_eq!(valid.first_centre, 3.0);
    }

    #[test]
    fn output_sizes_floor_and_reject_too_small() {
        assert_eq!(LayerShape::POOL2.output_size(7), Some(3));
        assert_eq!(LayerShape::CONV3_PAD1.output_size(5), Some(5));
        assert_eq!(LayerShape { kernel: 3, stride: 1, padding: 0 }.output_size(2), None);
        assert_eq!(map_size(&[LayerShape::POOL2, LayerShape::POOL2], 2), None);
        assert_eq!(map_size(&[LayerShape::POOL2, LayerShape::POOL2], 8), Some(2));
    }
}
