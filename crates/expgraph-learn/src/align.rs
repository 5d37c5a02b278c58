//! Aligning the training images' views before the top layer is learned (spec §1.7, §7 #1;
//! docs/deviations.md "view choice").
//!
//! The top layer has no parents, so each filter's nodes are an independent mixture; with K nodes
//! per filter they can cover a part on both sides of the object, and a graph learned from images
//! in random facings explains either view about equally well: no per-image score can then tell
//! which view matches the graph. Congealing fixes one facing for all training images first:
//! every image's view is described by its column profile (per channel, the activation summed
//! over each column, L2-normalized), and, starting from the original views, each image takes the
//! view closer (dot product) to the mean profile of the current views, until no view changes.
//! The graph learned from aligned views is asymmetric, so the node-score rule then keeps (and on
//! new images chooses) the same facing.

use std::ops::Range;

use expgraph_cache::{LayerMaps, View};
use rayon::prelude::*;

use crate::team::{wire, Tally};
use crate::LearnError;

/// At most this many congealing rounds (it settles in a few on real features).
const MAX_ROUNDS: usize = 50;

/// The column profile of one view: `[C, W]`, each column's sum over rows, L2-normalized
/// (all-zero maps give zeros).
fn column_profile(layer: &dyn LayerMaps, image: usize, view: View, buf: &mut Vec<f32>) -> Vec<f64> {
    let info = layer.info();
    let (h, w) = (info.height, info.width);
    buf.resize(info.image_len(), 0.0);
    layer.read_image(image, view, buf);
    let mut out = vec![0.0f64; info.channels * w];
    for (c, map) in buf.chunks_exact(h * w).enumerate() {
        for row in map.chunks_exact(w) {
            for (x, v) in row.iter().enumerate() {
                out[c * w + x] += f64::from(*v);
            }
        }
    }
    let norm = out.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm > 0.0 {
        out.iter_mut().for_each(|v| *v /= norm);
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Views (`true` = mirrored) of the first `n` images that put them in one facing, by congealing
/// on `layer`'s column profiles (module docs). Deterministic: profiles are summed in image
/// order, and a tie keeps the original view.
///
/// In a team, each member computes the profiles of its own images (`mine`) and they are gathered.
pub(crate) fn align_views(
    layer: &dyn LayerMaps,
    n: usize,
    mine: Range<usize>,
    team: &Tally<'_>,
) -> Result<Vec<bool>, LearnError> {
    let profiles: Vec<[Vec<f64>; 2]> = mine
        .clone()
        .into_par_iter()
        .map_init(Vec::new, |buf, i| {
            [column_profile(layer, i, View::Original, buf), column_profile(layer, i, View::Flipped, buf)]
        })
        .collect();
    let profiles = if team.is_solo() { profiles } else { gather_profiles(profiles, layer, team)? };
    if profiles.len() != n {
        return Err(LearnError::Team(format!("{} view profiles gathered for {n} images", profiles.len())));
    }
    if let Some(i) = profiles.iter().position(|p| p.iter().flatten().any(|v| !v.is_finite())) {
        return Err(LearnError::NonFinite { layer: layer.info().name.clone(), image: i, channel: 0 });
    }
    let len = profiles.first().map_or(0, |p| p[0].len());
    let mut flips = vec![false; n];
    for round in 1..=MAX_ROUNDS {
        let mut mean = vec![0.0f64; len];
        for (p, &f) in profiles.iter().zip(&flips) {
            mean.iter_mut().zip(&p[usize::from(f)]).for_each(|(m, v)| *m += v);
        }
        let next: Vec<bool> = profiles.iter().map(|p| dot(&p[1], &mean) > dot(&p[0], &mean)).collect();
        let changed = next.iter().zip(&flips).filter(|(a, b)| a != b).count();
        flips = next;
        tracing::debug!(round, changed, mirrored = flips.iter().filter(|f| **f).count(), "aligning views");
        if changed == 0 {
            break;
        }
    }
    Ok(flips)
}

/// Everybody's profiles, in image order.
fn gather_profiles(
    mine: Vec<[Vec<f64>; 2]>,
    layer: &dyn LayerMaps,
    team: &Tally<'_>,
) -> Result<Vec<[Vec<f64>; 2]>, LearnError> {
    let len = layer.info().channels * layer.info().width;
    let mut w = wire::Writer::default();
    w.u64(mine.len() as u64);
    w.f64s(mine.iter().flatten().flatten().copied());
    let mut all = Vec::new();
    for (rank, bytes) in team.all_gather(&w.0)?.iter().enumerate() {
        let mut r = wire::Reader::new(bytes, rank);
        let images = r.len()?;
        let values = r.f64s(
            images
                .checked_mul(2 * len)
                .ok_or_else(|| LearnError::Team(format!("member {rank} sent {images} images")))?,
        )?;
        r.finish()?;
        all.extend(values.chunks_exact(2 * len.max(1)).map(|p| [p[..len].to_vec(), p[len..].to_vec()]));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expgraph_cache::{InMemoryLayer, LayerInfo, TapGeometry};

    /// Images with one blob per channel, on the left (facing one way) or the right (`mirrored`);
    /// the flipped view is the exact mirror.
    fn layer(mirrored: &[bool]) -> InMemoryLayer {
        let (c, s) = (2, 6);
        let info = LayerInfo {
            name: "top".into(),
            channels: c,
            height: s,
            width: s,
            geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 100.0 },
        };
        let mut original = Vec::new();
        let mut flipped = Vec::new();
        for &m in mirrored {
            for view_mirrored in [m, !m] {
                let out = if view_mirrored == m { &mut original } else { &mut flipped };
                for ch in 0..c {
                    let mut map = vec![0.0f32; s * s];
                    let x = if view_mirrored { s - 2 - ch } else { 1 + ch };
                    map[2 * s + x] = 1.0 + ch as f32;
                    out.extend(map);
                }
            }
        }
        InMemoryLayer::new(info, original, Some(flipped)).unwrap()
    }

    #[test]
    fn congealing_puts_every_image_in_one_facing() {
        let mirrored = [false, true, true, false, true, false, false, true, true];
        let n = mirrored.len();
        let flips = align_views(&layer(&mirrored), n, 0..n, &Tally::new(&crate::Solo)).unwrap();
        // Every image shown facing the same way: flipped exactly where it was mirrored (or,
        // for the other canonical facing, exactly where it was not).
        let agree = flips.iter().zip(&mirrored).filter(|(a, b)| a == b).count();
        assert!(agree == mirrored.len() || agree == 0, "{flips:?} vs {mirrored:?}");
        // Starting from the original views, the majority facing wins: the 5 mirrored images keep
        // their view and the 4 others are flipped.
        assert_eq!(flips, mirrored.map(|m| !m));
    }
}
