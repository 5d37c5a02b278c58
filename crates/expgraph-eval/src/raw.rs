//! Raw-filter positions and scores, the baseline of the stability comparison (spec §4.3,
//! `computeStability_raw.m`).

use expgraph_cache::{argmax_cell, LayerMaps, TapGeometry, View};

use crate::geometry::Point;
use crate::stability::LayerTracks;
use crate::EvalError;

/// Argmax of one `H × W` map (row-major `h * W + w`) as (pixel position, max value).
///
/// Ties go to the first maximum in column-major order (smallest `w`, then smallest `h`), as
/// MATLAB's `max(max(x, [], 1), [], 2)` picks; the map cell `(h, w)` (1-based) is mapped to input
/// pixels with `geometry.map_to_pixel` (spec §1.3). Returns `None` for an empty or wrong-sized map
/// or one holding a NaN.
pub fn argmax_position(map: &[f32], height: usize, width: usize, geometry: &TapGeometry) -> Option<(Point, f64)> {
    if height == 0 || width == 0 || map.len() != height * width || map.iter().any(|v| v.is_nan()) {
        return None;
    }
    let (best_h, best_w) = argmax_cell(map, height, width);
    let best = map[best_h * width + best_w];
    let point = Point::new(geometry.map_to_pixel((best_w + 1) as f64), geometry.map_to_pixel((best_h + 1) as f64));
    Some((point, f64::from(best)))
}

/// Position and score of every raw filter of `layer` in every image (`view` of the cache).
///
/// Positions of the mirrored view are mapped back to the original frame (`x' = input_size + 1 − x`).
/// Fails when a map holds a NaN or the view is missing.
pub fn raw_filter_tracks(layer: &dyn LayerMaps, view: View, input_size: usize) -> Result<LayerTracks, EvalError> {
    tracks(layer, view, input_size, None)
}

/// [`raw_filter_tracks`] on the maps multiplied unit by unit by `unit_scale` (`[C, H, W]`): with
/// the normalization divisors it undoes the per-unit normalization, giving the argmax and
/// maximum of the *unnormalized* (ReLU'd) maps, as the ICNN code computes raw filters
/// (spec §4.3).
pub fn raw_filter_tracks_scaled(
    layer: &dyn LayerMaps,
    view: View,
    input_size: usize,
    unit_scale: &[f32],
) -> Result<LayerTracks, EvalError> {
    let info = layer.info();
    if unit_scale.len() != info.image_len() {
        return Err(EvalError::Shape(format!(
            "layer {}: {} unit scales for {}x{}x{} units",
            info.name,
            unit_scale.len(),
            info.channels,
            info.height,
            info.width
        )));
    }
    tracks(layer, view, input_size, Some(unit_scale))
}

fn tracks(
    layer: &dyn LayerMaps,
    view: View,
    input_size: usize,
    unit_scale: Option<&[f32]>,
) -> Result<LayerTracks, EvalError> {
    let info = layer.info();
    if view == View::Flipped && !layer.has_flipped() {
        return Err(EvalError::Shape(format!("layer {} has no flipped view", info.name)));
    }
    let (n, c) = (layer.num_images(), info.channels);
    let mut positions = vec![Point::new(0.0, 0.0); n * c];
    let mut scores = vec![0.0; n * c];
    let mut buf = vec![0.0f32; info.map_len()];
    for image in 0..n {
        for channel in 0..c {
            layer.read_channel(image, view, channel, &mut buf);
            if let Some(scale) = unit_scale {
                let len = buf.len();
                buf.iter_mut().zip(&scale[channel * len..(channel + 1) * len]).for_each(|(v, s)| *v *= s);
            }
            let (mut p, s) = argmax_position(&buf, info.height, info.width, &info.geometry).ok_or_else(|| {
                EvalError::NonFinite(format!("layer {}: map of image {image}, channel {channel}", info.name))
            })?;
            if view == View::Flipped {
                p = p.mirrored(input_size as f64);
            }
            positions[channel * n + image] = p;
            scores[channel * n + image] = s;
        }
    }
    LayerTracks::new(info.name.clone(), c, n, positions, scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_cache::{InMemoryLayer, LayerInfo};

    fn geometry() -> TapGeometry {
        TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 }
    }

    #[test]
    fn argmax_maps_to_pixels_with_matlab_ties() {
        // 2 x 3 map, maximum 5 at (h=1, w=2) [0-based] and at (h=0, w=2): column-major first is (0, 2).
        let map = [0.0, 1.0, 5.0, 2.0, 3.0, 5.0];
        let (p, s) = argmax_position(&map, 2, 3, &geometry()).unwrap();
        assert_eq!(s, 5.0);
        assert_eq!(p, Point::new(8.5 + 2.0 * 16.0, 8.5));
        // Tie across columns: (h=1, w=0) and (h=0, w=1) → smaller w wins.
        let map = [0.0, 7.0, 0.0, 7.0, 0.0, 0.0];
        let (p, _) = argmax_position(&map, 2, 3, &geometry()).unwrap();
        assert_eq!(p, Point::new(8.5, 8.5 + 16.0));
        // All equal (e.g. all-zero ReLU map) → the first cell.
        let (p, s) = argmax_position(&[0.0; 6], 2, 3, &geometry()).unwrap();
        assert_eq!((p, s), (Point::new(8.5, 8.5), 0.0));
        assert!(argmax_position(&[f32::NAN; 6], 2, 3, &geometry()).is_none());
        assert!(argmax_position(&[0.0; 5], 2, 3, &geometry()).is_none());
    }

    #[test]
    fn tracks_of_a_layer_in_both_views() {
        let info = LayerInfo { name: "c".into(), channels: 2, height: 2, width: 2, geometry: geometry() };
        // image 0: ch0 max at (0,1), ch1 max at (1,0); image 1: ch0 max at (1,1), ch1 at (0,0).
        let orig = vec![0.0, 3.0, 1.0, 0.0, 0.0, 0.0, 4.0, 1.0, 0.0, 1.0, 2.0, 6.0, 9.0, 0.0, 0.0, 0.0];
        let layer = InMemoryLayer::new(info, orig.clone(), Some(orig)).unwrap();
        let t = raw_filter_tracks(&layer, View::Original, 224).unwrap();
        assert_eq!((t.num_units(), t.num_images()), (2, 2));
        let f = raw_filter_tracks(&layer, View::Flipped, 224).unwrap();
        // channel 0, image 0: cell (h=0, w=1) → x = 24.5, y = 8.5; mirrored x = 225 − 24.5.
        assert_eq!(t.position(0, 0), Point::new(24.5, 8.5));
        assert_eq!(t.score(0, 0), 3.0);
        assert_eq!(f.position(0, 0), Point::new(225.0 - 24.5, 8.5));
        // channel 1, image 0: (h=1, w=0); image 1: ch0 (1,1) score 6, ch1 (0,0) score 9.
        assert_eq!(t.position(1, 0), Point::new(8.5, 24.5));
        assert_eq!((t.position(0, 1), t.score(0, 1)), (Point::new(24.5, 24.5), 6.0));
        assert_eq!((t.position(1, 1), t.score(1, 1)), (Point::new(8.5, 8.5), 9.0));
    }

    #[test]
    fn scaled_tracks_take_the_argmax_of_the_unnormalized_map() {
        let info = LayerInfo { name: "c".into(), channels: 1, height: 2, width: 2, geometry: geometry() };
        // Normalized map: max 3 at (0,1); times the divisors [1, 1, 4, 1] the unit (1,0) wins
        // with 2 · 4 = 8.
        let layer = InMemoryLayer::new(info, vec![1.0, 3.0, 2.0, 0.0], None).unwrap();
        let t = raw_filter_tracks_scaled(&layer, View::Original, 224, &[1.0, 1.0, 4.0, 1.0]).unwrap();
        assert_eq!((t.position(0, 0), t.score(0, 0)), (Point::new(8.5, 24.5), 8.0));
        let plain = raw_filter_tracks(&layer, View::Original, 224).unwrap();
        assert_eq!((plain.position(0, 0), plain.score(0, 0)), (Point::new(24.5, 8.5), 3.0));
        assert!(raw_filter_tracks_scaled(&layer, View::Original, 224, &[1.0; 3]).is_err());
    }
}
