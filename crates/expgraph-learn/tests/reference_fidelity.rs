//! `reference_compat` fidelity against a tiny run of the authors' MATLAB/C++ learner
//! (`shared/data/reference-run-tiny`, see its README): same inputs, same initial μ, 2 iterations
//! per layer, conv5_2 under conv5_3, 16 channels, 8 images. Skips when the data is absent.

use std::path::PathBuf;

use expgraph_cache::{InMemoryLayer, LayerInfo, TapGeometry};
use expgraph_learn::{InMemoryFeatures, LearnParams};

fn fixture() -> Option<PathBuf> {
    let shared = std::env::var_os("EXPGRAPH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")));
    let dir = shared.join("data/reference-run-tiny");
    dir.join("README.md").exists().then_some(dir)
}

/// A minimal `.npy` reader (v1/v2 headers; `<f4`, `<f8`, `<i8`; C or Fortran order) → values in
/// C order as f64, and the shape.
fn read_npy(path: &std::path::Path) -> (Vec<f64>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not an npy file", path.display());
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    let field = |key: &str| {
        let i = header.find(key).unwrap() + key.len();
        header[i..].trim_start_matches([':', ' ', '\''])
    };
    let descr: String = field("'descr'").chars().take_while(|c| *c != '\'').collect();
    let fortran = field("'fortran_order'").starts_with("True");
    let shape_txt: String = field("'shape'").trim_start_matches('(').chars().take_while(|c| *c != ')').collect();
    let shape: Vec<usize> =
        shape_txt.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    let data = &bytes[start + hlen..];
    let raw: Vec<f64> = match descr.as_str() {
        "<f4" => data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
        "<f8" => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        "<i8" => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("unsupported dtype {other}"),
    };
    if !fortran {
        return (raw, shape);
    }
    // Fortran → C order.
    let total: usize = shape.iter().product();
    let mut out = vec![0.0; total];
    for (c_index, slot) in out.iter_mut().enumerate() {
        let (mut rem, mut f_index, mut stride) = (c_index, 0, 1);
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = rem % shape[d];
            rem /= shape[d];
        }
        for d in 0..shape.len() {
            f_index += idx[d] * stride;
            stride *= shape[d];
        }
        *slot = raw[f_index];
    }
    (out, shape)
}

fn layer(dir: &std::path::Path, name: &str) -> InMemoryLayer {
    let (v, s) = read_npy(&dir.join(format!("input/dequantized_{name}.npy")));
    let (n, h, w, c) = (s[0], s[1], s[2], s[3]);
    let mut maps = vec![0.0f32; n * c * h * w];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    maps[((i * c + ch) * h + y) * w + x] = v[((i * h + y) * w + x) * c + ch] as f32;
                }
            }
        }
    }
    let info = LayerInfo {
        name: name.into(),
        channels: c,
        height: h,
        width: w,
        geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
    };
    InMemoryLayer::new(info, maps, None).unwrap()
}

fn pairs(v: &[f64]) -> Vec<[f64; 2]> {
    v.chunks_exact(2).map(|c| [c[0], c[1]]).collect()
}

#[test]
fn reference_compat_matches_the_reference_run() {
    let Some(dir) = fixture() else {
        eprintln!("skipping: shared/data/reference-run-tiny not found (set EXPGRAPH_SHARED)");
        return;
    };
    let features = InMemoryFeatures {
        backbone: "synthetic".into(),
        input_size: 224,
        image_ids: (0..8).map(|i| i.to_string()).collect(),
        layers: vec![layer(&dir, "conv5_2"), layer(&dir, "conv5_3")],
    };
    let init = vec![
        pairs(&read_npy(&dir.join("input/conv5_2_init_mu.npy")).0),
        pairs(&read_npy(&dir.join("input/conv5_3_init_mu.npy")).0),
    ];
    let out = LearnParams::default()
        .layers(&[("conv5_2", 0.1), ("conv5_3", 0.1)])
        .iterations(2)
        .top_m(60)
        .chunk_size(8) // one chunk: images summed sequentially, as the reference does
        .reference_compat(true)
        .check()
        .unwrap()
        .fit_with(&features, Some(&init), &|_| {})
        .unwrap();
    let g = &out.graph;
    let mut report = Vec::new();
    for (l, name) in ["conv5_2", "conv5_3"].iter().enumerate() {
        let mu = pairs(&read_npy(&dir.join(format!("output/{name}_mu.npy"))).0);
        let sigma = read_npy(&dir.join(format!("output/{name}_sigma.npy"))).0;
        let pos = pairs(&read_npy(&dir.join(format!("output/{name}_pos.npy"))).0);
        let score = read_npy(&dir.join(format!("output/{name}_score.npy"))).0;
        let gl = &g.layers[l];
        let rec = &out.records[l];
        let rate = |ok: usize, n: usize| ok as f64 / n as f64;
        let mu_ok = (0..mu.len()).filter(|&v| (0..2).all(|a| (gl.mu[v][a] - mu[v][a]).abs() < 1e-6)).count();
        let sigma_ok = (0..sigma.len()).filter(|&v| (gl.sigma[v] - sigma[v]).abs() < 1e-6).count();
        let pos_ok = (0..pos.len())
            .filter(|&j| (0..2).all(|a| (f64::from(rec.positions[j][a]) - pos[j][a]).abs() < 1e-4))
            .count();
        let score_ok = (0..score.len())
            .filter(|&j| (f64::from(rec.scores[j]) - score[j]).abs() <= 1e-4 * score[j].abs().max(1e-3))
            .count();
        let line = format!(
            "{name}: mu {:.4}, sigma {:.4}, positions {:.4}, scores {:.4}",
            rate(mu_ok, mu.len()),
            rate(sigma_ok, sigma.len()),
            rate(pos_ok, pos.len()),
            rate(score_ok, score.len())
        );
        eprintln!("{line}");
        for v in (0..mu.len()).filter(|&v| (0..2).any(|a| (gl.mu[v][a] - mu[v][a]).abs() >= 1e-6)).take(4) {
            eprintln!("  mu[{v}] ours {:?} ref {:?} sigma ours {} ref {}", gl.mu[v], mu[v], gl.sigma[v], sigma[v]);
        }
        for j in (0..pos.len())
            .filter(|&j| (0..2).any(|a| (f64::from(rec.positions[j][a]) - pos[j][a]).abs() >= 1e-4))
            .take(4)
        {
            eprintln!("  pos[{j}] ours {:?} ref {:?}", rec.positions[j], pos[j]);
        }
        report.push((
            rate(mu_ok, mu.len()),
            rate(sigma_ok, sigma.len()),
            rate(pos_ok, pos.len()),
            rate(score_ok, score.len()),
        ));
    }
    let parents = read_npy(&dir.join("output/conv5_2_parents.npy")).0;
    let mut same = 0;
    let mut sets = 0;
    for (v, ps) in g.layers[0].parents.iter().enumerate() {
        let want: Vec<u32> = parents[v * 15..(v + 1) * 15].iter().map(|x| *x as u32).collect();
        let got: Vec<u32> = ps.iter().map(|p| p.node).collect();
        same += (0..15).filter(|&i| got.get(i) == Some(&want[i])).count();
        let mut a = got.clone();
        let mut b = want.clone();
        a.sort_unstable();
        b.sort_unstable();
        sets += usize::from(a == b);
    }
    let parent_rate = same as f64 / (15 * 320) as f64;
    eprintln!("conv5_2 parents: {parent_rate:.4} same rank, {:.4} same set", sets as f64 / 320.0);
    for (mu, sigma, pos, score) in &report {
        assert!(*mu >= 0.99 && *sigma >= 0.99 && *pos >= 0.99 && *score >= 0.99, "{report:?}");
    }
    assert!(parent_rate >= 0.95, "parents {parent_rate}");
}
