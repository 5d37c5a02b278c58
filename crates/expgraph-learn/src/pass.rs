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

use crate::layer_model::parent_displacement;
use crate::team::{member_chunks, member_images, wire, Tally, BLOCK_CHUNKS};
use crate::{LearnError, ViewRule};

/// Chunks processed per parallel wave (bounds the memory of per-chunk partial sums); a whole
/// number of blocks, so waves start on block boundaries.
const CHUNKS_PER_WAVE: usize = 8 * BLOCK_CHUNKS;

/// Where each node's per-image prior comes from (spec §1.5).
pub(crate) enum Priors<'a> {
    /// No parents: Δμ = 0, λ = 1.
    None,
    /// Parents: per node its prior; the parent layer's positions `[image][parent node]` and mean
    /// positions, and the parent-to-child unit ratio, from which each parent's displacement is
    /// computed once per image in the pass ([`parent_displacement`]).
    Parents { priors: &'a [ParentPrior], positions: &'a [[f32; 2]], mean: &'a [[f64; 2]], ratio: f64 },
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
    /// The image's displacement of every parent-layer node ([`parent_displacement`]), computed
    /// once per image and indexed by each node's parents.
    up_shifts: Vec<[f64; 2]>,
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

/// Run the E-step of one layer over images `0..n`: this member's blocks of images
/// ([`crate::team`]), then, in a team, everybody's block totals and per-image results gathered.
/// Totals are folded block by block in block order (each block's chunks in chunk order), so the
/// result is the same bits for any team size and thread count.
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
    team: &Tally<'_>,
) -> Result<PassOutput, LearnError> {
    let nodes = setups.len();
    let info = layer.info();
    let image_len = info.image_len();
    let (rank, size) = (team.rank(), team.size());
    let my_chunks = member_chunks(rank, size, n, chunk_size);
    let my_images = member_images(rank, size, n, chunk_size);
    let mut out = PassOutput {
        totals: vec![NodeTotals::default(); nodes],
        positions: Vec::with_capacity(my_images.len() * nodes),
        scores: Vec::with_capacity(my_images.len() * nodes),
        best: Vec::with_capacity(my_images.len() * nodes),
        flips: Vec::with_capacity(my_images.len()),
    };
    // A team keeps its members' block totals until all are gathered; alone, each block is
    // folded into the total as soon as it is done.
    let mut block_totals: Vec<Vec<NodeTotals>> = Vec::new();
    let mut block = vec![NodeTotals::default(); nodes];
    let new_worker = || Worker {
        maps: vec![0.0; image_len],
        maps_alt: Vec::new(),
        prior: vec![0.0; nodes * CANDIDATES],
        prior_alt: Vec::new(),
        up_shifts: Vec::new(),
        shifts: vec![[0.0; 2]; nodes],
        lambdas: vec![1.0; nodes],
        stats: vec![NodeImageStats::default(); nodes],
        scratch: EStepScratch::default(),
    };
    for wave in my_chunks.clone().step_by(CHUNKS_PER_WAVE) {
        let chunks: Vec<Result<ChunkOut, LearnError>> = (wave..(wave + CHUNKS_PER_WAVE).min(my_chunks.end))
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
        for (c, co) in (wave..).zip(chunks) {
            let co = co?;
            for (t, x) in block.iter_mut().zip(&co.totals) {
                t.merge(x);
            }
            if (c + 1) % BLOCK_CHUNKS == 0 || c + 1 == my_chunks.end {
                let done = std::mem::replace(&mut block, vec![NodeTotals::default(); nodes]);
                if team.is_solo() {
                    merge_into(&mut out.totals, &done);
                } else {
                    block_totals.push(done);
                }
            }
            out.positions.extend(co.positions);
            out.scores.extend(co.scores);
            out.best.extend(co.best);
            out.flips.extend(co.flips);
        }
    }
    if team.is_solo() {
        return Ok(out);
    }
    gather(out, &block_totals, nodes, team)
}

fn merge_into(total: &mut [NodeTotals], block: &[NodeTotals]) {
    for (t, x) in total.iter_mut().zip(block) {
        t.merge(x);
    }
}

/// Exchange this member's block totals and per-image results; everybody's, in rank (= block =
/// image) order, make the pass output of the whole team.
fn gather(
    mine: PassOutput,
    block_totals: &[Vec<NodeTotals>],
    nodes: usize,
    team: &Tally<'_>,
) -> Result<PassOutput, LearnError> {
    let mut w = wire::Writer::default();
    w.u64(block_totals.len() as u64);
    for b in block_totals {
        w.f64s(b.iter().flat_map(|t| [t.mass, t.gradient[0], t.gradient[1], t.score, t.spread]));
    }
    w.u64(mine.flips.len() as u64);
    w.f32s(mine.positions.iter().flatten().copied());
    w.f32s(mine.scores.iter().copied());
    w.f32s(mine.best.iter().copied());
    w.bools(mine.flips.iter().copied());
    drop(mine);
    let parts = team.all_gather(&w.0)?;
    drop(w);
    let mut out = PassOutput {
        totals: vec![NodeTotals::default(); nodes],
        positions: Vec::new(),
        scores: Vec::new(),
        best: Vec::new(),
        flips: Vec::new(),
    };
    for (rank, bytes) in parts.into_iter().enumerate() {
        let mut r = wire::Reader::new(&bytes, rank);
        for _ in 0..r.len()? {
            let v = r.f64s(nodes * 5)?;
            let block: Vec<NodeTotals> = v
                .chunks_exact(5)
                .map(|t| NodeTotals { mass: t[0], gradient: [t[1], t[2]], score: t[3], spread: t[4] })
                .collect();
            merge_into(&mut out.totals, &block);
        }
        let images = r.len()?;
        let count =
            images.checked_mul(nodes).ok_or_else(|| LearnError::Team(format!("member {rank} sent {images} images")))?;
        out.positions.extend(r.f32s(count * 2)?.chunks_exact(2).map(|p| [p[0], p[1]]));
        out.scores.extend(r.f32s(count)?);
        out.best.extend(r.f32s(count)?);
        out.flips.extend(r.bools(images)?);
        r.finish()?;
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
        Priors::Parents { priors, positions, mean, ratio } => {
            w.up_shifts.clear();
            w.up_shifts.extend((0..mean.len()).map(|q| parent_displacement(positions, mean, image, q, *ratio)));
            let up = &w.up_shifts;
            for (v, pp) in priors.iter().enumerate() {
                let (shift, log_lambda) = pp.for_image(|i| up[pp.parents[i] as usize]);
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
