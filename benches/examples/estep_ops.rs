//! Runs the E-step of one conv4-sized layer (512 filters × 40 nodes, 28×28) `N` times, in our
//! arithmetic or the reference's, for an operation count under an instruction counter:
//!
//! ```sh
//! cargo build --release -p expgraph-benches --example estep_ops
//! valgrind --tool=callgrind target/release/examples/estep_ops ours 1   # and: ours 3, reference 1, …
//! ```
//! (instructions of `N = 3` minus `N = 1`, halved, are one image's E-step.)

use expgraph_benches::estep_fixture::{layer, one_image};
use expgraph_disentangle::{EStepScratch, NodeImageStats, CANDIDATES};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (mode, passes) = match (args.get(1).map(String::as_str), args.get(2).and_then(|n| n.parse::<usize>().ok())) {
        (Some(m @ ("ours" | "reference")), Some(n)) => (m, n),
        _ => {
            eprintln!("usage: estep_ops ours|reference PASSES");
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
