//! What the shard checksums cost: for a feature cache, the time to open every layer (which
//! verifies each shard's BLAKE3 checksum, one full read of its bytes) against the time to decode
//! every map once (what one learning pass over the layer reads at the least).
//!
//! `cargo run --release -p expgraph-benches --example cache_verify -- CACHE_DIR`

use std::time::Instant;

use expgraph_cache::{FeatureCache, LayerMaps, View};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: cache_verify CACHE_DIR")?;
    let cache = FeatureCache::open(&dir)?;
    let (mut open_s, mut read_s, mut bytes) = (0.0, 0.0, 0u64);
    for info in cache.layers() {
        let t = Instant::now();
        let layer = cache.layer(&info.name)?;
        open_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut out = vec![0.0f32; info.map_len()];
        let mut sum = 0.0f64;
        for image in 0..layer.num_images() {
            for view in [View::Original, View::Flipped] {
                for c in 0..info.channels {
                    layer.read_channel(image, view, c, &mut out);
                    sum += f64::from(out[0]);
                }
            }
        }
        read_s += t.elapsed().as_secs_f64();
        bytes += (layer.num_images() * info.image_len() * 2 * 2) as u64;
        std::hint::black_box(sum);
    }
    println!(
        "{dir}: {:.0} MB of maps; open (checksums verified) {:.3} s, one decode of every map {:.3} s, ratio {:.2}",
        bytes as f64 / 1e6,
        open_s,
        read_s,
        open_s / read_s
    );
    Ok(())
}
