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
//! factor = 1 term), for both arithmetics on the same layer.

use expgraph_benches::estep_fixture::{layer, one_image, Layer};
use expgraph_disentangle::{EStepScratch, NodeImageStats, CANDIDATES};

/// Inner-loop terms of one image's E-step: `(ours, reference)`.
fn count_terms(l: &Layer) -> (u64, u64) {
    let (size, k) = (l.cfg.height as i64, l.cfg.nodes_per_filter);
    let cut = l.cfg.kernel.cutoff_sq;
    let (mut ours, mut reference) = (0u64, 0u64);
    // Candidate coordinates (1-based) per node and axis.
    let points: Vec<[[f64; 6]; 2]> = l
        .nodes
        .iter()
        .zip(&l.shifts)
        .map(|(n, s)| [n.offsets.map(|o| n.mu[0] + s[0] + o), n.offsets.map(|o| n.mu[1] + s[1] + o)])
        .collect();
    for (v, n) in l.nodes.iter().enumerate() {
        let win = n.window as i64;
        let centre = points[v].map(|axis| (axis[2] + axis[3]) / 2.0 - 1.0);
        let (rc, cc) = (centre[0].round() as i64, centre[1].round() as i64);
        // Reference: a (2h+1)² template dotted with the window, per candidate.
        reference += (CANDIDATES as i64 * (2 * win + 1) * (2 * win + 1)) as u64;
        // Ours: cells of the (clipped) window within the kernel cut-off of each candidate.
        for &ph in &points[v][0] {
            for &pw in &points[v][1] {
                for r in (rc - win).max(0)..=(rc + win).min(size - 1) {
                    for c in (cc - win).max(0)..=(cc + win).min(size - 1) {
                        let (dh, dw) = (ph - 1.0 - r as f64, pw - 1.0 - c as f64);
                        ours += u64::from(dh * dh + dw * dw < cut);
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
                let overlaps = (0..2).all(|ax| pa[ax][5] >= pb[ax][0] && pa[ax][0] <= pb[ax][5]);
                if overlaps {
                    ours += (CANDIDATES + 12) as u64; // 36 products + 2 × 6 sibling factors
                }
                // Reference: each candidate inside b's box scans b's 36 candidates.
                for &h in &pa[0] {
                    for &w in &pa[1] {
                        if inside(pb, h, w) {
                            reference += CANDIDATES as u64;
                        }
                    }
                }
            }
        }
    }
    (ours, reference)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("count") {
        let (ours, reference) = count_terms(&layer(512, 28, 40, 0.05, false));
        println!("inner-loop terms per image: ours {ours}, reference {reference}, ratio {:.1}", reference as f64 / ours as f64);
        return;
    }
    let (mode, passes) = match (args.get(1).map(String::as_str), args.get(2).and_then(|n| n.parse::<usize>().ok())) {
        (Some(m @ ("ours" | "reference")), Some(n)) => (m, n),
        _ => {
            eprintln!("usage: estep_ops ours|reference PASSES | estep_ops count");
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
