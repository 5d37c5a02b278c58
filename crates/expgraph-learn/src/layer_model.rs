//! Per-layer model state shared by learning and inference: node templates (spec §1.6) and the
//! parents' prior (spec §1.5, §7 #2).

use expgraph_cache::{LayerInfo, TapGeometry};
use expgraph_cliques::ParentPrior;
use expgraph_disentangle::{candidate_offsets, half_range, EStepConfig, NodeSetup, SmoothingKernel};

use crate::LearnParams;

/// E-step settings of a layer.
pub(crate) fn estep_config(p: &LearnParams, info: &LayerInfo, k: usize) -> EStepConfig {
    EStepConfig {
        height: info.height,
        width: info.width,
        nodes_per_filter: k,
        kernel: SmoothingKernel::new(p.map_delta * info.height as f64),
        valid_tau: p.valid_tau,
        rounded_window_centre: p.reference_compat,
        nearest_sibling: p.reference_compat,
        reference_arithmetic: p.reference_compat,
    }
}

/// Half-range of every node from its model σ.
pub(crate) fn half_ranges(p: &LearnParams, map_size: usize, sigma: &[f64]) -> Vec<usize> {
    sigma.iter().map(|s| half_range(*s, map_size, p.max_range, p.deform_ratio)).collect()
}

/// Node templates for one iteration. Candidate offsets come from each node's own σ; in
/// reference-compat mode the evidence window and the prior σ of node `(c, k)` come from node
/// `(0, k)` (Addendum: the channel-1 quirk of `getProb_local_mex.cpp`).
pub(crate) fn node_setups(
    p: &LearnParams,
    map_size: usize,
    k: usize,
    mu: &[[f64; 2]],
    sigma: &[f64],
    prior_sigma: &[f64],
) -> Vec<NodeSetup> {
    let h = half_ranges(p, map_size, sigma);
    (0..mu.len())
        .map(|v| {
            let g = if p.reference_compat { v % k } else { v };
            NodeSetup::new(mu[v], candidate_offsets(h[v]), h[g], prior_sigma[g])
        })
        .collect()
}

/// Scale from parent-layer map units to child-layer map units: the stride ratio (spec §7 #2 b),
/// or 1 in reference-compat mode (the reference adds parent units to child coordinates).
pub(crate) fn unit_ratio(p: &LearnParams, child: &LayerInfo, parent: &LayerInfo) -> f64 {
    if p.reference_compat {
        1.0
    } else {
        parent.geometry.stride / child.geometry.stride
    }
}

/// The reference's first-unit centre (`startCenter`, px) of each ResNet graph layer, by map
/// side (spec §1.3, V-code `getConvNet_ResNet_VAEGAN(conf, [28,14,7], [15,21,30])`).
pub const REFERENCE_RESNET_CENTRES: [(usize, f64); 3] = [(28, 15.0), (14, 21.0), (7, 30.0)];

/// The reference's ad-hoc linear map of a ResNet layer (spec §1.3): first-unit centre
/// `c = startCenter` and stride `s = (224 − (2c − 1)) / (mapSize − 1)`, so the map spans the
/// 224-pixel input symmetrically (s = 7.22, 14.08, 27.5 px for maps 28, 14, 7). `None` for a
/// backbone other than a ResNet or a map side the reference has no centre for. The receptive
/// field is kept from `info` (the reference does not use it here).
pub fn reference_geometry(backbone: &str, info: &LayerInfo) -> Option<TapGeometry> {
    if !backbone.starts_with("resnet") {
        return None;
    }
    let (size, c) = REFERENCE_RESNET_CENTRES.into_iter().find(|(size, _)| *size == info.height)?;
    let stride = (224.0 - (2.0 * c - 1.0)) / (size - 1) as f64;
    Some(TapGeometry { stride, first_centre: c, receptive_field: info.geometry.receptive_field })
}

/// The pixel geometry clique mining maps displacements with (spec §2.2): the cache's
/// receptive-field geometry, or in reference-compat mode the reference's map where it has its
/// own ([`reference_geometry`]; for VGG-16 the reference's recursion gives the cache's numbers).
pub(crate) fn pixel_geometry(p: &LearnParams, backbone: &str, info: &LayerInfo) -> TapGeometry {
    match p.reference_compat.then(|| reference_geometry(backbone, info)).flatten() {
        Some(g) => g,
        None => {
            if p.reference_compat && backbone.starts_with("resnet") {
                tracing::warn!(
                    layer = %info.name,
                    size = info.height,
                    "the reference has no ResNet geometry for this map size; using the receptive-field geometry"
                );
            }
            info.geometry
        }
    }
}

/// Displacement of parent `q` in `image` from its mean position, scaled into child units:
/// `(positions[image][q] − mean[q]) · ratio`, with `positions` laid out `[image][parent]`.
///
/// Computed where it is needed (15 parents per node) instead of for every parent and image.
#[inline]
pub(crate) fn parent_displacement(
    positions: &[[f32; 2]],
    mean: &[[f64; 2]],
    image: usize,
    q: usize,
    ratio: f64,
) -> [f64; 2] {
    let (p, m) = (positions[image * mean.len() + q], mean[q]);
    [(f64::from(p[0]) - m[0]) * ratio, (f64::from(p[1]) - m[1]) * ratio]
}

/// Each node's prior from its parents; parent σ scaled into child units by `ratio`.
pub(crate) fn parent_priors(parents: &[Vec<u32>], parent_sigma: &[f64], ratio: f64) -> Vec<ParentPrior> {
    parents
        .iter()
        .map(|ps| {
            let s: Vec<f64> = ps.iter().map(|&q| parent_sigma[q as usize] * ratio).collect();
            ParentPrior::new(ps.clone(), &s)
        })
        .collect()
}

/// Mean over images of `[image][node]` positions.
pub(crate) fn mean_positions(positions: &[[f32; 2]], n: usize, nodes: usize) -> Vec<[f64; 2]> {
    let mut m = vec![[0.0f64; 2]; nodes];
    for (j, q) in positions.iter().enumerate() {
        m[j % nodes][0] += f64::from(q[0]);
        m[j % nodes][1] += f64::from(q[1]);
    }
    m.iter().map(|s| [s[0] / n as f64, s[1] / n as f64]).collect()
}

#[cfg(test)]
mod reference_geometry_tests {
    use super::*;

    fn layer(name: &str, side: usize, stride: f64) -> LayerInfo {
        LayerInfo {
            name: name.into(),
            channels: 4,
            height: side,
            width: side,
            geometry: TapGeometry { stride, first_centre: stride / 2.0 - 0.5, receptive_field: 99.0 },
        }
    }

    #[test]
    fn resnet_layers_use_the_reference_linear_map_in_compat_mode() {
        // Spec §1.3: s = 7.22, 14.08, 27.5 px and c = 15, 21, 30 for maps 28, 14, 7.
        let expected = [(28, 8.0, 7.22, 15.0), (14, 16.0, 14.08, 21.0), (7, 32.0, 27.5, 30.0)];
        let compat = LearnParams::default().reference_compat(true);
        for (side, true_stride, s, c) in expected {
            let info = layer("layer3.pre_relu", side, true_stride);
            let g = reference_geometry("resnet50", &info).expect("a paper ResNet map size");
            assert!((g.stride - s).abs() < 0.005, "map {side}: stride {}", g.stride);
            assert_eq!(g.first_centre, c);
            // The last unit's centre is as far from the right border as the first from the left.
            assert!((g.first_centre + (side - 1) as f64 * g.stride - (225.0 - c)).abs() < 1e-9);
            assert_eq!(g.receptive_field, 99.0, "the field is the cache's");
            assert_eq!(pixel_geometry(&compat, "resnet152", &info), g);
            // Our default: the receptive-field recursion the cache records (true strides 8/16/32).
            assert_eq!(pixel_geometry(&LearnParams::default(), "resnet50", &info), info.geometry);
        }
        // VGG-16's reference geometry is the recursion itself; other map sizes have no reference value.
        let conv5 = layer("conv5_3", 14, 16.0);
        assert_eq!(reference_geometry("vgg16", &conv5), None);
        assert_eq!(pixel_geometry(&compat, "vgg16", &conv5), conv5.geometry);
        let big = layer("layer2", 32, 8.0);
        assert_eq!(reference_geometry("resnet50", &big), None);
        assert_eq!(pixel_geometry(&compat, "resnet50", &big), big.geometry);
    }

    #[test]
    fn resnet_compat_hyper_parameters_are_the_reference_ones() {
        use crate::PAPER_RESNET_LAYERS;
        use expgraph_disentangle::nodes_per_filter;
        // Spec §1.2 and §2.6: densities 0.05/0.1/0.2 → K = 40/20/10 on maps 28/14/7; 15 parents
        // from 600 candidates; 20 iterations; the VGG settings otherwise.
        let p = LearnParams::default().reference_compat(true);
        let k: Vec<usize> = PAPER_RESNET_LAYERS
            .iter()
            .zip([28, 14, 7])
            .map(|(&(_, density), side)| nodes_per_filter(side, side, density))
            .collect();
        assert_eq!(k, [40, 20, 10]);
        assert_eq!((p.top_n, p.top_m, p.iterations), (15, 600, 20));
        assert_eq!((p.max_range, p.deform_ratio, p.init_delta, p.map_delta), (0.3, 3.0, 0.15, 0.025));
        assert_eq!((p.valid_tau, p.eta, p.min_var_rate, p.edge_cut_rate), (0.1, 1.0, 0.5, 0.1));
        // The reference adds parent-layer units to child coordinates at every ResNet boundary.
        let (child, parent) = (layer("layer2", 28, 8.0), layer("layer3", 14, 16.0));
        assert_eq!(unit_ratio(&p, &child, &parent), 1.0);
        assert_eq!(unit_ratio(&LearnParams::default(), &child, &parent), 2.0);
    }
}

#[cfg(test)]
mod hand_computed_tests {
    use super::*;

    fn layer(stride: f64) -> LayerInfo {
        LayerInfo {
            name: format!("stride{stride}"),
            channels: 2,
            height: 7,
            width: 7,
            geometry: TapGeometry { stride, first_centre: stride / 2.0, receptive_field: 50.0 },
        }
    }

    #[test]
    fn unit_ratio_is_parent_stride_over_child_stride() {
        // Parent stride 28 px, child stride 8 px: one parent cell = 28 / 8 = 3.5 child cells
        // (not a power of two; the inverse 8 / 28 = 0.2857… would be the wrong direction).
        let (child, parent) = (layer(8.0), layer(28.0));
        assert_eq!(unit_ratio(&LearnParams::default(), &child, &parent), 3.5);
        // Reference-compat: parent units are added to child units unscaled.
        assert_eq!(unit_ratio(&LearnParams::default().reference_compat(true), &child, &parent), 1.0);
    }

    #[test]
    fn parent_priors_scale_parent_sigma_by_the_ratio() {
        // Parent σ (parent-layer units) of parent nodes 0, 1, 2; ratio 1.5.
        let parent_sigma = [1.0, 3.0, 0.5];
        let parents = vec![vec![2, 0], vec![1]];
        let priors = parent_priors(&parents, &parent_sigma, 1.5);
        assert_eq!(priors.len(), 2);

        // Node 0, parents [2, 0]: σ = (0.5·1.5, 1.0·1.5) = (0.75, 1.5) child units, M = 2:
        // w = 1/(2·0.75²) = 8/9, 1/(2·1.5²) = 2/9; Σw = 10/9; σ_V = sqrt(9/10) = 0.9486832980505138.
        // (Without the ratio: w = 2, 1/2, σ_V = sqrt(0.4) = 0.632; σ taken by list position
        // instead of node index: σ = (1.5, 4.5), σ_V = 2.012.)
        assert_eq!(priors[0].parents, vec![2, 0]);
        assert!((priors[0].sigma() - 0.948_683_298_050_513_8).abs() < 1e-12, "{}", priors[0].sigma());
        // Weights follow the parents' order: displacements d = (1, 0) for parent 2, (0, 1) for
        // parent 0 → Δμ = (8/9·(1, 0) + 2/9·(0, 1)) / (10/9) = (0.8, 0.2).
        let d = [[1.0, 0.0], [0.0, 1.0]];
        let (shift, _) = priors[0].for_image(|i| d[i]);
        assert!((shift[0] - 0.8).abs() < 1e-12 && (shift[1] - 0.2).abs() < 1e-12, "{shift:?}");

        // Node 1, one parent (node 1): σ_V = 3.0·1.5 = 4.5 (M = 1, w = 1/4.5²).
        assert_eq!(priors[1].parents, vec![1]);
        assert!((priors[1].sigma() - 4.5).abs() < 1e-12, "{}", priors[1].sigma());
    }

    #[test]
    fn parent_displacements_are_image_major_and_scaled() {
        // 2 images × 3 parents, positions laid out [image][parent]:
        //   image 0: (2.5, 4.0) (6.0, 1.5) (3.0, 7.0)
        //   image 1: (4.5, 2.0) (5.0, 5.5) (1.0, 3.0)
        let positions: Vec<[f32; 2]> = vec![[2.5, 4.0], [6.0, 1.5], [3.0, 7.0], [4.5, 2.0], [5.0, 5.5], [1.0, 3.0]];
        // Per-parent means over the 2 images: ((2.5+4.5)/2, (4+2)/2) = (3.5, 3.0),
        // ((6+5)/2, (1.5+5.5)/2) = (5.5, 3.5), ((3+1)/2, (7+3)/2) = (2.0, 5.0).
        let mean = mean_positions(&positions, 2, 3);
        assert_eq!(mean, vec![[3.5, 3.0], [5.5, 3.5], [2.0, 5.0]]);
        // (q − mean of the same parent) · 1.5, e.g. image 0 parent 1: ((6−5.5)·1.5, (1.5−3.5)·1.5)
        // = (0.75, −3.0); image 1 parent 2: ((1−2)·1.5, (3−5)·1.5) = (−1.5, −3.0).
        // Pairing entry j with mean[j % 2] (or reading positions as [parent][image]) gives e.g.
        // (−0.75, 6.0) for entry 2 instead.
        let want = [[-1.5, 1.5], [0.75, -3.0], [1.5, 3.0], [1.5, -1.5], [-0.75, 3.0], [-1.5, -3.0]];
        let got: Vec<[f64; 2]> = (0..6).map(|j| parent_displacement(&positions, &mean, j / 3, j % 3, 1.5)).collect();
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g[0] - w[0]).abs() < 1e-12 && (g[1] - w[1]).abs() < 1e-12, "entry {j}: {g:?} vs {w:?}");
        }
    }
}
