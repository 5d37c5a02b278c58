//! The raw-filter baseline's input: each filter's argmax cell and max value per image (the
//! `computeStability_raw.m` notion of a filter's position and score, spec §4.3), streamed from a
//! feature cache.

use expgraph_cache::{LayerMaps, View};
use expgraph_graph::{ImageActivations, LayerActivations};

use crate::{LocalizeError, Result};
use expgraph_cache::argmax_cell;

/// Raw-filter units of image `image`, as an [`ImageActivations`] with **one unit per filter**:
/// its position = the argmax cell of the filter's map (1-based map coordinates of `view`; ties:
/// first in column-major order, as MATLAB and `expgraph-eval`'s raw tracks), its score = the
/// map's max. Reads one channel at a time (`read_channel`), so it streams from the feature cache.
pub fn filter_argmax(layers: &[&dyn LayerMaps], image: usize, image_id: &str, view: View) -> Result<ImageActivations> {
    if layers.is_empty() {
        return Err(LocalizeError::Empty("no layer of feature maps".into()));
    }
    let layers = layers.iter().map(|maps| layer_argmax(*maps, image, image_id, view)).collect::<Result<Vec<_>>>()?;
    Ok(ImageActivations { image_id: image_id.to_string(), flipped: view == View::Flipped, layers })
}

/// [`filter_argmax`] for every image; `image_ids[i]` names image `i`.
pub fn filter_argmaxes(layers: &[&dyn LayerMaps], image_ids: &[String], view: View) -> Result<Vec<ImageActivations>> {
    if let Some(maps) = layers.iter().find(|m| m.num_images() != image_ids.len()) {
        return Err(LocalizeError::Maps {
            layer: maps.info().name.clone(),
            what: format!("{} images, {} image ids", maps.num_images(), image_ids.len()),
        });
    }
    image_ids.iter().enumerate().map(|(i, id)| filter_argmax(layers, i, id, view)).collect()
}

fn layer_argmax(maps: &dyn LayerMaps, image: usize, image_id: &str, view: View) -> Result<LayerActivations> {
    let info = maps.info();
    let fail = |what: String| LocalizeError::Maps { layer: info.name.clone(), what };
    if image >= maps.num_images() {
        return Err(fail(format!("image {image} out of range ({} images)", maps.num_images())));
    }
    if view == View::Flipped && !maps.has_flipped() {
        return Err(fail("no mirrored view in this cache".into()));
    }
    if info.map_len() == 0 {
        return Err(fail("empty maps".into()));
    }
    let mut buffer = vec![0.0f32; info.map_len()];
    let mut positions = Vec::with_capacity(info.channels);
    let mut scores = Vec::with_capacity(info.channels);
    for channel in 0..info.channels {
        maps.read_channel(image, view, channel, &mut buffer);
        if buffer.iter().any(|v| !v.is_finite()) {
            return Err(LocalizeError::NonFinite {
                image: image_id.to_string(),
                what: format!("feature value in layer {}, channel {channel}", info.name),
            });
        }
        let (h, w) = argmax_cell(&buffer, info.height, info.width);
        positions.push([(h + 1) as f32, (w + 1) as f32]);
        scores.push(buffer[h * info.width + w]);
    }
    Ok(LayerActivations { layer: info.name.clone(), positions, scores })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_cache::{InMemoryLayer, LayerInfo, TapGeometry};

    fn layer() -> InMemoryLayer {
        let info = LayerInfo {
            name: "conv5_3".into(),
            channels: 2,
            height: 2,
            width: 3,
            geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
        };
        // image 0: channel 0 max at (2, 3); channel 1 tie between (1, 2) and (2, 1) → (2, 1)
        // (column-major: smallest w first)
        // image 1: channel 0 all zero → (1, 1) score 0
        let original = vec![
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, //
            0.0, 7.0, 0.0, 7.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, //
            1.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        let flipped = original.iter().map(|v| v * 2.0).collect();
        InMemoryLayer::new(info, original, Some(flipped)).unwrap()
    }

    #[test]
    fn argmax_positions_and_scores() {
        let l = layer();
        let a = filter_argmax(&[&l], 0, "a", View::Original).unwrap();
        assert_eq!(a.layers[0].positions, vec![[2.0, 3.0], [2.0, 1.0]]);
        assert_eq!(a.layers[0].scores, vec![5.0, 7.0]);
        assert!(!a.flipped);
        let f = filter_argmax(&[&l], 0, "a", View::Flipped).unwrap();
        assert!(f.flipped);
        assert_eq!(f.layers[0].scores, vec![10.0, 14.0]);
        let all = filter_argmaxes(&[&l], &["a".into(), "b".into()], View::Original).unwrap();
        assert_eq!(all[1].layers[0].positions, vec![[1.0, 1.0], [1.0, 1.0]]);
        assert_eq!(all[1].layers[0].scores, vec![0.0, 1.0]);
        assert_eq!(all[1].image_id, "b");
    }

    #[test]
    fn bad_reads_are_errors() {
        let l = layer();
        assert!(filter_argmax(&[&l], 2, "x", View::Original).is_err());
        assert!(filter_argmax(&[], 0, "x", View::Original).is_err());
        assert!(filter_argmaxes(&[&l], &["a".into()], View::Original).is_err());
        let info = l.info().clone();
        let no_flip = InMemoryLayer::new(info, vec![0.0; 24], None).unwrap();
        assert!(filter_argmax(&[&no_flip], 0, "x", View::Flipped).is_err());
    }
}
