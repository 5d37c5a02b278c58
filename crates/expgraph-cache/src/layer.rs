//! Read access to one layer's feature maps.

use crate::{CacheError, LayerInfo, View};

/// Read access to one layer's normalized maps: (image, view, channel) → an `H × W` map.
///
/// Implemented by the in-memory [`InMemoryLayer`] and by the on-disk cache reader. Learners take
/// `&dyn LayerMaps` (or a generic) so they stream one layer at a time.
pub trait LayerMaps: Sync {
    /// The layer's shape and geometry.
    fn info(&self) -> &LayerInfo;
    /// Number of images.
    fn num_images(&self) -> usize;
    /// Whether a [`View::Flipped`] map exists for every image.
    fn has_flipped(&self) -> bool;
    /// Copy the `H × W` map of `channel` in `image`/`view` into `out` (`out.len() == H * W`).
    fn read_channel(&self, image: usize, view: View, channel: usize, out: &mut [f32]);

    /// Copy all channels of `image`/`view` into `out` (`[C, H, W]`, `out.len() == C * H * W`).
    fn read_image(&self, image: usize, view: View, out: &mut [f32]) {
        let len = self.info().map_len();
        for (c, chunk) in out.chunks_exact_mut(len).enumerate() {
            self.read_channel(image, view, c, chunk);
        }
    }
}

/// A layer held in memory as `f32` (`[N, C, H, W]`), for tests and small runs.
#[derive(Debug, Clone)]
pub struct InMemoryLayer {
    info: LayerInfo,
    n: usize,
    original: Vec<f32>,
    flipped: Option<Vec<f32>>,
}

impl InMemoryLayer {
    /// Wrap `[N, C, H, W]` maps; `flipped`, when given, has the same shape.
    ///
    /// Fails when lengths do not match the layer or when a value is not finite.
    pub fn new(info: LayerInfo, original: Vec<f32>, flipped: Option<Vec<f32>>) -> Result<Self, CacheError> {
        let per = info.image_len();
        if per == 0 || !original.len().is_multiple_of(per) {
            return Err(CacheError::Shape {
                layer: info.name.clone(),
                what: format!(
                    "{} values is not a whole number of {}x{}x{} images",
                    original.len(),
                    info.channels,
                    info.height,
                    info.width
                ),
            });
        }
        let n = original.len() / per;
        if let Some(f) = &flipped {
            if f.len() != original.len() {
                return Err(CacheError::Shape {
                    layer: info.name.clone(),
                    what: format!("flipped view has {} values, original {}", f.len(), original.len()),
                });
            }
        }
        for data in std::iter::once(&original).chain(flipped.iter()) {
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(CacheError::NonFinite {
                    layer: info.name.clone(),
                    image: i / per,
                    channel: (i % per) / info.map_len(),
                });
            }
        }
        Ok(Self { info, n, original, flipped })
    }
}

impl LayerMaps for InMemoryLayer {
    fn info(&self) -> &LayerInfo {
        &self.info
    }

    fn num_images(&self) -> usize {
        self.n
    }

    fn has_flipped(&self) -> bool {
        self.flipped.is_some()
    }

    fn read_channel(&self, image: usize, view: View, channel: usize, out: &mut [f32]) {
        let len = self.info.map_len();
        let start = image * self.info.image_len() + channel * len;
        let data = match (view, &self.flipped) {
            (View::Flipped, Some(f)) => f,
            _ => &self.original,
        };
        out.copy_from_slice(&data[start..start + len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TapGeometry;

    fn info() -> LayerInfo {
        LayerInfo {
            name: "t".into(),
            channels: 2,
            height: 2,
            width: 3,
            geometry: TapGeometry { stride: 8.0, first_centre: 4.5, receptive_field: 92.0 },
        }
    }

    #[test]
    fn reads_the_right_channel_and_view() {
        let orig: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let flip: Vec<f32> = (0..24).map(|v| -(v as f32)).collect();
        let layer = InMemoryLayer::new(info(), orig, Some(flip)).unwrap();
        assert_eq!(layer.num_images(), 2);
        let mut out = [0.0; 6];
        layer.read_channel(1, View::Original, 1, &mut out);
        assert_eq!(out, [18.0, 19.0, 20.0, 21.0, 22.0, 23.0]);
        layer.read_channel(0, View::Flipped, 1, &mut out);
        assert_eq!(out, [-6.0, -7.0, -8.0, -9.0, -10.0, -11.0]);
    }

    #[test]
    fn rejects_bad_lengths_and_nan() {
        assert!(matches!(InMemoryLayer::new(info(), vec![0.0; 13], None), Err(CacheError::Shape { .. })));
        let mut v = vec![0.0; 12];
        v[7] = f32::NAN;
        match InMemoryLayer::new(info(), v, None) {
            Err(CacheError::NonFinite { image: 0, channel: 1, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn geometry_round_trips() {
        let g = info().geometry;
        assert_eq!(g.map_to_pixel(1.0), 4.5);
        assert_eq!(g.map_to_pixel(28.0), 4.5 + 27.0 * 8.0);
        assert!((g.pixel_to_map(g.map_to_pixel(3.25)) - 3.25).abs() < 1e-12);
    }
}
