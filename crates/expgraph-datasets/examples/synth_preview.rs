//! Generate a small synthetic data set and print where it went:
//! `cargo run --release -p expgraph-datasets --example synth_preview -- OUT_DIR [N] [BACKGROUNDS]`.

use expgraph_datasets::{generate_synthetic_cub, SynthParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: synth_preview OUT_DIR [N] [BACKGROUNDS]")?;
    let n = args.next().map(|s| s.parse()).transpose()?.unwrap_or(8);
    let backgrounds = args.next().map(Into::into);
    let s = generate_synthetic_cub(out.as_ref(), &SynthParams { n_images: n, backgrounds, ..SynthParams::default() })?;
    println!("{} images in {out}; visible per part: {:?}", s.dataset.objects.len(), s.visible_counts);
    Ok(())
}
