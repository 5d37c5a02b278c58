//! One E-step pass of a layer over all images (shared by learning and inference): parallel over
//! fixed chunks of images, reduced in chunk order, so results are bit-identical for any number
//! of threads.

use expgraph_cache::{LayerMaps, View};
use expgraph_cliques::ParentPrior;
use expgraph_disentangle::{
    accumulate, evidence, flip_criterion, view_score, EStepConfig, EStepScratch, NodeImageStats, NodeSetup, NodeTotals,
    CANDIDATES,
};
use rayon::prelude::*;

use crate::{LearnError, ViewRule};

/// Chunks processed per parallel wave (bounds the memory of per-chunk partial sums).
const CHUNKS_PER_WAVE: usize = 64;

/// Where each node's per-image prior comes from (spec §1.5).
pub(crate) enum Priors<'a> {
    /// No parents: Δμ = 0, λ = 1.
    None,
    /// Parents: per node its prior, and parent displacements `[image][parent node]` in the
    /// child's map units.
    Parents { priors: &'a [ParentPrior], displacement: &'a [[f64; 2]], num_parents: usize },
}

/// Which view each image is processed in.
pub(crate) enum Views<'a> {
    /// Fixed per image (`true` = mirrored).
    Fixed(&'a [bool]),
    /// Evaluate both and keep the one the rule prefers (spec §1.7).
    Choose(ViewRule),
}

/// Results of one pass.
pub(crate) struct PassOutput {
    /// Per-node sums over images (zero when not normalizing, except score/spread).
    pub totals: Vec<NodeTotals>,
    /// `[image][node]` inferred position.
    pub positions: Vec<[f32; 2]>,
    /// `[image][node]` score `S_V(I)` (raw).
    pub scores: Vec<f32>,
    /// `[image][node]` `prob·prior` at the best candidate (`S*`).
    pub best: Vec<f32>,
    /// View chosen per image.
    pub flips: Vec<bool>,
}

struct Worker {
    maps: Vec<f32>,
    maps_alt: Vec<f32>,
    prior: Vec<f64>,
    prior_alt: Vec<f64>,
    shifts: Vec<[f64; 2]>,
    lambdas: Vec<f64>,
    stats: Vec<NodeImageStats>,
    scratch: EStepScratch,
}

struct ChunkOut {
    totals: Vec<NodeTotals>,
    positions: Vec<[f32; 2]>,
    scores: Vec<f32>,
    best: Vec<f32>,
    flips: Vec<bool>,
}

/// Run the E-step of one layer over images `0..n`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_pass(
    layer: &dyn LayerMaps,
    n: usize,
    cfg: &EStepConfig,
    setups: &[NodeSetup],
    priors: &Priors<'_>,
    views: &Views<'_>,
    normalize: bool,
    chunk_size: usize,
) -> Result<PassOutput, LearnError> {
    let nodes = setups.len();
    let info = layer.info();
    let image_len = info.image_len();
    let num_chunks = n.div_ceil(chunk_size);
    let mut out = PassOutput {
        totals: vec![NodeTotals::default(); nodes],
        positions: Vec::with_capacity(n * nodes),
        scores: Vec::with_capacity(n * nodes),
        best: Vec::with_capacity(n * nodes),
        flips: Vec::with_capacity(n),
    };
    let new_worker = || Worker {
        maps: vec![0.0; image_len],
        maps_alt: Vec::new(),
        prior: vec![0.0; nodes * CANDIDATES],
        prior_alt: Vec::new(),
        shifts: vec![[0.0; 2]; nodes],
        lambdas: vec![1.0; nodes],
        stats: vec![NodeImageStats::default(); nodes],
        scratch: EStepScratch::default(),
    };
    for wave in (0..num_chunks).step_by(CHUNKS_PER_WAVE) {
        let chunks: Vec<Result<ChunkOut, LearnError>> = (wave..(wave + CHUNKS_PER_WAVE).min(num_chunks))
            .into_par_iter()
            .map_init(new_worker, |w, c| {
                let images = c * chunk_size..((c + 1) * chunk_size).min(n);
                let mut co = ChunkOut {
                    totals: vec![NodeTotals::default(); nodes],
                    positions: Vec::with_capacity(images.len() * nodes),
                    scores: Vec::with_capacity(images.len() * nodes),
                    best: Vec::with_capacity(images.len() * nodes),
                    flips: Vec::with_capacity(images.len()),
                };
                for i in images {
                    let flipped = one_image(layer, i, cfg, setups, priors, views, normalize, w)?;
                    for (t, s) in co.totals.iter_mut().zip(&w.stats) {
                        t.add(s);
                    }
                    co.positions.extend(w.stats.iter().map(|s| s.best_position.map(|x| x as f32)));
                    co.scores.extend(w.stats.iter().map(|s| s.score as f32));
                    co.best.extend(w.stats.iter().map(|s| s.best_score as f32));
                    co.flips.push(flipped);
                }
                Ok(co)
            })
            .collect();
        for co in chunks {
            let co = co?;
            for (t, c) in out.totals.iter_mut().zip(&co.totals) {
                t.merge(c);
            }
            out.positions.extend(co.positions);
            out.scores.extend(co.scores);
            out.best.extend(co.best);
            out.flips.extend(co.flips);
        }
    }
    Ok(out)
}

fn read_checked(layer: &dyn LayerMaps, image: usize, view: View, out: &mut [f32]) -> Result<(), LearnError> {
    layer.read_image(image, view, out);
    // A branch-free scan (it vectorizes); the position is looked for only when there is one.
    if out.iter().fold(false, |bad, v| bad | !v.is_finite()) {
        let i = out.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(LearnError::NonFinite {
            layer: layer.info().name.clone(),
            image,
            channel: i / layer.info().map_len(),
        });
    }
    Ok(())
}

/// E-step of one image into `w.stats`; returns whether the mirrored view was used.
#[allow(clippy::too_many_arguments)]
fn one_image(
    layer: &dyn LayerMaps,
    image: usize,
    cfg: &EStepConfig,
    setups: &[NodeSetup],
    priors: &Priors<'_>,
    views: &Views<'_>,
    normalize: bool,
    w: &mut Worker,
) -> Result<bool, LearnError> {
    match priors {
        Priors::None => {}
        Priors::Parents { priors, displacement, num_parents } => {
            let row = &displacement[image * num_parents..(image + 1) * num_parents];
            for (v, pp) in priors.iter().enumerate() {
                let (shift, log_lambda) = pp.for_image(|i| row[pp.parents[i] as usize]);
                w.shifts[v] = shift;
                w.lambdas[v] = log_lambda.exp();
            }
        }
    }
    let flipped = match views {
        Views::Fixed(f) => {
            let view = if f[image] { View::Flipped } else { View::Original };
            read_checked(layer, image, view, &mut w.maps)?;
            evidence(cfg, setups, &w.maps, &w.shifts, &mut w.prior, &mut w.scratch);
            f[image]
        }
        Views::Choose(rule) => {
            read_checked(layer, image, View::Original, &mut w.maps)?;
            evidence(cfg, setups, &w.maps, &w.shifts, &mut w.prior, &mut w.scratch);
            w.maps_alt.resize(w.maps.len(), 0.0);
            w.prior_alt.resize(w.prior.len(), 0.0);
            read_checked(layer, image, View::Flipped, &mut w.maps_alt)?;
            evidence(cfg, setups, &w.maps_alt, &w.shifts, &mut w.prior_alt, &mut w.scratch);
            let criterion = match rule {
                ViewRule::NodeScore => view_score,
                ViewRule::LogProb => flip_criterion,
            };
            let keep = criterion(setups, &w.lambdas, &w.prior);
            let alt = criterion(setups, &w.lambdas, &w.prior_alt);
            // Ties keep the original (the reference's strict `<`).
            if keep < alt {
                std::mem::swap(&mut w.prior, &mut w.prior_alt);
                true
            } else {
                false
            }
        }
    };
    accumulate(cfg, setups, &w.shifts, &w.lambdas, &w.prior, normalize, &mut w.stats, &mut w.scratch);
    Ok(flipped)
}
