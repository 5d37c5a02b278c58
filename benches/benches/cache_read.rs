//! Reading normalized maps from the on-disk feature cache (f16 and u8), conv5-sized layer.
//! Goal: decoding must be far below the learner's per-image cost (≪ 1 ms per image-layer).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use expgraph_cache::{
    CacheManifest, CacheWriter, FeatureCache, ImageEntry, LayerInfo, LayerMaps, StorageDtype, StorageInfo, TapGeometry,
    View,
};

const IMAGES: usize = 16;

fn write_cache(dir: &std::path::Path, dtype: StorageDtype) -> LayerInfo {
    let info = LayerInfo {
        name: "conv5_3".into(),
        channels: 512,
        height: 14,
        width: 14,
        geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
    };
    let manifest = CacheManifest {
        format_version: CacheManifest::FORMAT_VERSION,
        key: String::new(),
        backbone: "bench".into(),
        preprocess: "caffe".into(),
        input_size: 224,
        layers: vec![info.clone()],
        images: (0..IMAGES)
            .map(|i| ImageEntry { id: i.to_string(), path: format!("{i}.jpg"), bbox: [0.0, 0.0, 224.0, 224.0] })
            .collect(),
        views: vec![View::Original],
    };
    let storage = StorageInfo { dtype, shard_size: 8, weights_digest: "w".into(), norm_stats_digest: "s".into() };
    let mut w = CacheWriter::create(dir, manifest, storage, true).expect("writer");
    for shard in w.pending_shards() {
        let n = w.shard_range(shard).len();
        let maps: Vec<f32> = (0..n * info.image_len()).map(|i| ((i * 7919) % 1000) as f32 * 0.01).collect();
        w.write_shard(shard, "conv5_3", View::Original, &maps).expect("shard");
    }
    w.finish().expect("finish");
    info
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_read");
    for dtype in [StorageDtype::F16, StorageDtype::U8] {
        let dir = std::env::temp_dir().join(format!("expgraph-bench-cache-{}-{dtype}", std::process::id()));
        let info = write_cache(&dir, dtype);
        let cache = FeatureCache::open(&dir).expect("open");
        let layer = cache.layer("conv5_3").expect("layer");
        let mut buf = vec![0.0f32; info.image_len()];
        group.throughput(Throughput::Elements(IMAGES as u64));
        group.bench_function(format!("read_image_conv5_3_{dtype}"), |b| {
            b.iter(|| {
                for i in 0..IMAGES {
                    layer.read_image(i, View::Original, &mut buf);
                }
                black_box(buf[0])
            })
        });
        drop(layer);
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
