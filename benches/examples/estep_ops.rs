//! Runs the E-step of one conv4-sized layer (512 filters × 40 nodes, 28×28) `N` times, in our
//! arithmetic or the reference's, for an operation count under an instruction counter:
//!
//! ```sh
//! cargo build --release -p expgraph-benches --example estep_ops
//! valgrind --tool=callgrind target/release/examples/estep_ops ours 1   # and: ours 3, reference 1, …
//! ```
//! (instructions of `N = 3` minus `N = 1`, halved, are one image's E-step.)
//!
//! `estep_ops count` instead counts the inner-loop terms of one image analytically, the way the
//! spec's §6 estimate counts them (one kernel multiply-add, one sibling distance or one sibling
//! factor = 1 term), for both arithmetics on the same layer. `estep_ops count-real GRAPH CACHE
//! LAYER N` counts them on a learned graph's layer and the first `N` images of a feature cache
//! (each node centred at its training-mean position), where the maps' real sparsity shows.

use expgraph_benches::estep_fixture::{layer, one_image, Layer};
use expgraph_cache::{FeatureCache, LayerMaps, View};
use expgraph_disentangle::{candidate_offsets, half_range, EStepScratch, NodeImageStats, NodeSetup, CANDIDATES};
use expgraph_graph::ExplanatoryGraph;

/// Inner-loop terms of one image's E-step, `[evidence, mixture normalization]`: `(ours, reference)`.
fn count_terms(l: &Layer) -> ([u64; 2], [u64; 2]) {
    let (size, k) = (l.cfg.height as i64, l.cfg.nodes_per_filter);
    let cut = l.cfg.kernel.cutoff_sq;
    let (mut ours, mut reference) = ([0u64; 2], [0u64; 2]);
    // Candidate coordinates (1-based) per node and axis.
    let points: Vec<[[f64; 6]; 2]> = l
        .nodes
        .iter()
        .zip(&l.shifts)
        .map(|(n, s)| [n.offsets.map(|o| n.mu[0] + s[0] + o), n.offsets.map(|o| n.mu[1] + s[1] + o)])
        .collect();
    // Nodes with a positive unit in their window (the others skip the normalization).
    let mut active = vec![false; l.nodes.len()];
    for (v, n) in l.nodes.iter().enumerate() {
        let win = n.window as i64;
        let centre = points[v].map(|axis| (axis[2] + axis[3]) / 2.0 - 1.0);
        let (rc, cc) = (centre[0].round() as i64, centre[1].round() as i64);
        // Reference: a (2h+1)² template dotted with the window, per candidate.
        reference[0] += (CANDIDATES as i64 * (2 * win + 1) * (2 * win + 1)) as u64;
        // Ours: positive units of the (clipped) window within the kernel cut-off of each
        // candidate (the floor part is one summed-area lookup).
        let map = &l.maps[(v / k) * (size * size) as usize..(v / k + 1) * (size * size) as usize];
        for r in (rc - win).max(0)..=(rc + win).min(size - 1) {
            for c in (cc - win).max(0)..=(cc + win).min(size - 1) {
                active[v] |= map[(r * size + c) as usize] > 0.0;
            }
        }
        for &ph in &points[v][0] {
            for &pw in &points[v][1] {
                for r in (rc - win).max(0)..=(rc + win).min(size - 1) {
                    for c in (cc - win).max(0)..=(cc + win).min(size - 1) {
                        let (dh, dw) = (ph - 1.0 - r as f64, pw - 1.0 - c as f64);
                        ours[0] += u64::from(dh * dh + dw * dw < cut && map[(r * size + c) as usize] > 0.0);
                    }
                }
            }
        }
    }
    // Mixture normalization: sibling pairs of each filter whose candidate boxes overlap.
    let inside = |p: &[[f64; 6]; 2], h: f64, w: f64| h >= p[0][0] && h <= p[0][5] && w >= p[1][0] && w <= p[1][5];
    for f in 0..l.nodes.len() / k {
        for a in f * k..(f + 1) * k {
            for b in f * k..(f + 1) * k {
                let (pa, pb) = (&points[a], &points[b]);
                // Ours: for an active node a, its candidates inside b's box, a sub-rectangle:
                // one product per candidate and one sibling factor per row and column (a's own
                // factors are its template's).
                let n_in = |ax: usize| pa[ax].iter().filter(|&&x| x >= pb[ax][0] && x <= pb[ax][5]).count() as u64;
                let (nh, nw) = (n_in(0), n_in(1));
                if active[a] && nh > 0 && nw > 0 {
                    ours[1] += nh * nw + if a == b { 0 } else { nh + nw };
                }
                // Reference: each candidate inside b's box scans b's 36 candidates.
                for &h in &pa[0] {
                    for &w in &pa[1] {
                        if inside(pb, h, w) {
                            reference[1] += CANDIDATES as u64;
                        }
                    }
                }
            }
        }
    }
    (ours, reference)
}

/// Terms per image on `images` real images of a learned layer: `(ours, reference, full scan,
/// positive fraction of the maps)`.
fn count_real(graph: &str, cache: &str, name: &str, images: usize) -> Result<([u64; 2], [u64; 2], u64, f64), String> {
    let graph = ExplanatoryGraph::load(graph).map_err(|e| e.to_string())?;
    let (_, gl) = graph.layer_by_name(name).ok_or(format!("layer {name} not in the graph"))?;
    let maps = FeatureCache::open(cache).and_then(|c| c.layer(name)).map_err(|e| e.to_string())?;
    let size = gl.info.height;
    let mut l = layer(1, size, gl.nodes_per_filter, 0.1, false);
    l.nodes = (0..gl.num_nodes())
        .map(|v| {
            let h = half_range(gl.sigma[v], size, 0.3, 3.0);
            NodeSetup::new(gl.mu[v], candidate_offsets(h), h, gl.sigma[v])
        })
        .collect();
    l.shifts = gl.mean_position.iter().zip(&gl.mu).map(|(p, m)| [p[0] - m[0], p[1] - m[1]]).collect();
    l.maps = vec![0.0; maps.info().image_len()];
    let (mut ours, mut reference, mut positive) = ([0u64; 2], [0u64; 2], 0usize);
    let n = images.min(maps.num_images());
    for i in 0..n {
        maps.read_image(i, View::Original, &mut l.maps);
        positive += l.maps.iter().filter(|x| **x > 0.0).count();
        let (o, r) = count_terms(&l);
        (0..2).for_each(|j| (ours[j], reference[j]) = (ours[j] + o[j] / n as u64, reference[j] + r[j] / n as u64));
    }
    Ok((ours, reference, full_scan(&l), positive as f64 / (n * l.maps.len()) as f64))
}

/// Prints the counts; `scan` is the reference's normalization without the box test before the
/// nearest-candidate scan (`K² · 36 · 36` per filter, spec §6 "as coded").
fn report(what: &str, ours: [u64; 2], reference: [u64; 2], scan: u64) {
    let (o, r) = (ours[0] + ours[1], reference[0] + reference[1]);
    println!("{what}, inner-loop terms per image:");
    println!("  ours       {o:>11} (evidence {:>10}, normalization {:>10})", ours[0], ours[1]);
    println!(
        "  reference  {r:>11} (evidence {:>10}, normalization {:>10}), {:.1}x ours",
        reference[0],
        reference[1],
        r as f64 / o as f64
    );
    let full = reference[0] + scan;
    println!("  reference, spec §6 as coded (scan for every sibling) {full:>11}, {:.1}x ours", full as f64 / o as f64);
}

/// `K² · 36 · 36` per filter.
fn full_scan(l: &Layer) -> u64 {
    let k = l.cfg.nodes_per_filter as u64;
    (l.nodes.len() as u64 / k) * k * k * (CANDIDATES * CANDIDATES) as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("count") => {
            let l = layer(512, 28, 40, 0.05, false);
            let (ours, reference) = count_terms(&l);
            report("conv4-sized fixture", ours, reference, full_scan(&l));
            return;
        }
        Some("count-real") if args.len() == 6 => {
            match args[5]
                .parse()
                .map_err(|e| format!("N: {e}"))
                .and_then(|n| count_real(&args[2], &args[3], &args[4], n))
            {
                Ok((ours, reference, scan, positive)) => {
                    report(&format!("{} ({:.1} % of units > 0)", args[4], 100.0 * positive), ours, reference, scan)
                }
                Err(e) => {
                    eprintln!("estep_ops: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
        _ => {}
    }
    let (mode, passes) = match (args.get(1).map(String::as_str), args.get(2).and_then(|n| n.parse::<usize>().ok())) {
        (Some(m @ ("ours" | "reference")), Some(n)) => (m, n),
        _ => {
            eprintln!(
                "usage: estep_ops ours|reference PASSES | estep_ops count | estep_ops count-real GRAPH CACHE LAYER N"
            );
            std::process::exit(2);
        }
    };
    let l = layer(512, 28, 40, 0.05, mode == "reference");
    let mut prior = vec![0.0; l.nodes.len() * CANDIDATES];
    let mut stats = vec![NodeImageStats::default(); l.nodes.len()];
    let mut scratch = EStepScratch::default();
    let mut checksum = 0.0;
    for _ in 0..passes {
        checksum += one_image(&l, &mut prior, &mut stats, &mut scratch);
    }
    println!("{mode}: {passes} passes, checksum {checksum:.6e}");
}
