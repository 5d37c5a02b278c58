//! The graph file is byte-identical for 1, 2 and 3 threads and across repeated runs (fixed chunks,
//! ordered reductions, seeded initialization).

use expgraph_learn::synthetic::{generate, SyntheticSpec};
use expgraph_learn::LearnParams;

fn learn_bytes(threads: usize, seed: u64, data: &expgraph_learn::InMemoryFeatures) -> Vec<u8> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let out = pool.install(|| {
        LearnParams::default()
            .layers(&[("low", 0.05), ("top", 0.1)])
            .iterations(3)
            .top_n(3)
            .seed(seed)
            .chunk_size(3)
            .check()
            .unwrap()
            .fit(data)
            .unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    out.graph.save(dir.path()).unwrap();
    let mut bytes = std::fs::read(dir.path().join(expgraph_graph::GRAPH_ARRAYS)).unwrap();
    bytes.extend(std::fs::read(dir.path().join(expgraph_graph::GRAPH_JSON)).unwrap());
    bytes
}

#[test]
fn graph_bytes_do_not_depend_on_threads_or_repeats() {
    let data = generate(&SyntheticSpec { num_images: 20, channels: 4, seed: 2, ..SyntheticSpec::default() }).features;
    let one = learn_bytes(1, 7, &data);
    let two = learn_bytes(2, 7, &data);
    assert!(one == two, "1 vs 2 threads differ");
    assert!(learn_bytes(3, 7, &data) == one, "1 vs 3 threads differ");
    assert!(learn_bytes(2, 7, &data) == two, "repeated run differs");
    assert!(learn_bytes(2, 8, &data) != two, "the seed must matter");
}

#[test]
fn checkpoints_round_trip_every_bit_and_a_resumed_fit_equals_a_fresh_one() {
    use expgraph_learn::{Checkpoints, DirCheckpoints};
    let data = generate(&SyntheticSpec { num_images: 12, channels: 3, seed: 5, ..SyntheticSpec::default() }).features;
    let params = LearnParams::default().layers(&[("low", 0.05), ("top", 0.1)]).iterations(3).top_n(3).check().unwrap();
    let fresh = params.fit(&data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cps = DirCheckpoints::new(dir.path().join("cp"), "run A");
    // What a run killed while saving a layer leaves (`write_atomic`'s temp name): saving that
    // layer removes it, so the folder is empty, and removed, at the end.
    std::fs::create_dir_all(dir.path().join("cp")).unwrap();
    std::fs::write(dir.path().join("cp/.low.safetensors.Ab12Cd.tmp"), b"partial").unwrap();
    let saved = params.fit_resumable(&data, None, &|_| {}, Some(&cps)).unwrap();
    assert_eq!(saved.graph.layers, fresh.graph.layers);
    assert_eq!((saved.records, saved.flips), (fresh.records.clone(), fresh.flips.clone()));
    // Every layer comes back bit for bit (NaN-free, so == is bitwise here).
    for (layer, record) in fresh.graph.layers.iter().zip(&fresh.records) {
        let back = cps.load(&layer.info).unwrap().expect("a checkpoint per layer");
        assert_eq!(back.layer, *layer);
        assert_eq!(back.record, *record);
    }
    // A rerun learns nothing (only loads): the same output; another fingerprint ignores them.
    let steps = std::sync::atomic::AtomicUsize::new(0);
    let count = |_: &expgraph_learn::Progress| {
        steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    let again = params.fit_resumable(&data, None, &count, Some(&cps)).unwrap();
    assert_eq!(again.graph.layers, fresh.graph.layers);
    assert_eq!(steps.into_inner(), 2 * 3, "progress still counts every iteration");
    let other = DirCheckpoints::new(dir.path().join("cp"), "run B");
    assert!(other.load(&fresh.graph.layers[0].info).unwrap().is_none());
    // A checkpoint naming a parent the layer above does not have is refused, not indexed.
    let mut bad = cps.load(&fresh.graph.layers[0].info).unwrap().unwrap();
    let above = fresh.graph.layers[1].num_nodes() as u32;
    bad.layer.parents[0][0].node = above;
    cps.save(&bad).unwrap();
    let err = params.fit_resumable(&data, None, &|_| {}, Some(&cps)).unwrap_err().to_string();
    assert!(err.contains(&format!("names parent node {above}")), "{err}");
    cps.remove().unwrap();
    assert!(!dir.path().join("cp").exists());
}

/// A learning team of R members (threads here, MPI ranks in the CLI) returns, on every member,
/// the graph, records and views of a single process, bit for bit: R = 1, 2, 3 and 4 (one member
/// more than there are blocks of images, so one member has no images at all), at 1 and 2
/// threads.
#[test]
fn a_team_of_any_size_learns_the_bytes_of_one_process() {
    use expgraph_learn::ThreadTeam;
    // 20 images in chunks of 1: 20 chunks = 3 blocks of 8 chunks.
    // Mirrored views too, so the top layer's view alignment and choice are split as well.
    let spec =
        SyntheticSpec { num_images: 20, channels: 3, seed: 4, with_flipped_view: true, ..SyntheticSpec::default() };
    let data = generate(&spec).features;
    let params = LearnParams::default()
        .layers(&[("low", 0.05), ("top", 0.1)])
        .iterations(3)
        .top_n(3)
        .chunk_size(1)
        .check()
        .unwrap();
    let alone = params.fit(&data).unwrap();
    let bytes = |out: &expgraph_learn::LearnOutput| {
        let dir = tempfile::tempdir().unwrap();
        out.graph.save(dir.path()).unwrap();
        std::fs::read(dir.path().join(expgraph_graph::GRAPH_ARRAYS)).unwrap()
    };
    let want = bytes(&alone);
    assert!(alone.flips.iter().any(|f| *f), "some views mirrored");
    // Inference as a team of 3 returns, on every member, what one process infers.
    let acts = expgraph_learn::infer(&alone.graph, &data, None).unwrap();
    let policy = expgraph_learn::ViewPolicy::Choose;
    for team_acts in
        ThreadTeam::run(3, |t| expgraph_learn::infer_in_team(&alone.graph, &data, None, policy, t).unwrap())
    {
        assert!(team_acts == acts, "a team of 3 inferred other activations");
    }
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for size in 1..=4 {
            let outs = pool.install(|| {
                ThreadTeam::run(size, |team| params.fit_in_team(&data, None, &|_| {}, None, team).unwrap())
            });
            for (rank, out) in outs.iter().enumerate() {
                assert!(bytes(out) == want, "{size} members, member {rank}, {threads} threads: other graph bytes");
                assert_eq!((&out.records, &out.flips), (&alone.records, &alone.flips), "{size} members, member {rank}");
                // Members exchange on every layer (none alone).
                assert_eq!(out.traffic.len(), if size == 1 { 0 } else { 2 });
                if size > 1 {
                    assert!(out.traffic.iter().all(|(_, t)| t.exchanges > 0 && t.bytes > 0));
                }
            }
        }
    }
}
