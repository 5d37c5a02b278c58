//! Raw-filter units read one layer at a time: every layer is there, in the cache's order, and a
//! mirrored test view is mapped back to the original orientation (an exact mirror lands on the
//! original's pixels).

mod common;

use std::path::Path;

use expgraph::cache::{FeatureCache, LayerInfo, View};
use expgraph::geometry::TapGeometry;
use expgraph::localization::UnitSet;

fn info(name: &str, channels: usize, size: usize, stride: f64) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        channels,
        height: size,
        width: size,
        geometry: TapGeometry { stride, first_centre: stride / 2.0 + 0.5, receptive_field: 100.0 },
    }
}

/// Two layers, 3 images, both views; channel `c` of image `i` peaks at one cell, and the
/// mirrored view is the exact column mirror of the original.
fn cache(dir: &Path) -> FeatureCache {
    let layers = [info("conv5_2", 2, 14, 16.0), info("conv5_3", 3, 14, 16.0)];
    common::cache(dir, &layers, 3, &[View::Original, View::Flipped], "w", |l, view, maps| {
        for i in 0..3 {
            for c in 0..l.channels {
                let (h, col) = (1 + i + c, 2 + 3 * c + i);
                let col = if view == View::Flipped { l.width - 1 - col } else { col };
                maps[i * l.image_len() + c * l.map_len() + h * l.width + col] = 1.0 + c as f32;
            }
        }
    })
}

#[test]
fn raw_units_hold_every_layer_and_unmirror_the_mirrored_view() {
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path());
    let units = UnitSet::raw(&cache, &[], true).unwrap();
    let names: Vec<&str> = units.layout.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv5_2", "conv5_3"]);
    assert_eq!(units.templates.len(), 3);
    for i in 0..3 {
        let t = &units.templates[i];
        assert_eq!((t.image_id.as_str(), t.flipped, t.layers.len()), (format!("img{i}").as_str(), false, 2));
        // Channel 1 of conv5_3 peaks at cell (1 + i + 1, 2 + 3 + i), 1-based map (3 + i, 6 + i).
        assert_eq!(t.layers[1].positions[1], [(3 + i) as f32, (6 + i) as f32]);
        let views = units.test_views(i).unwrap();
        assert_eq!(views.len(), 2);
        assert!(!views[0].flipped && views[1].flipped, "the second test view is the mirrored one");
        // Mapped back to the original orientation, the mirror lands on the original's pixels.
        assert_eq!(views[1].layers, views[0].layers, "image {i}");
    }
    let alone = UnitSet::raw(&cache, &["conv5_3".to_string()], false).unwrap();
    assert_eq!(alone.layout.layers.len(), 1);
    assert_eq!(alone.test_views(0).unwrap().len(), 1);
}
