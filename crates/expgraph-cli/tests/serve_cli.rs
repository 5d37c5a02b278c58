//! `expgraph serve` as a process: learn and infer on a tiny cache, start the explorer on a free
//! port, read its URL from stdout, browse it over HTTP, stop it. Run with `--release`.

mod common;
use common::{expgraph, stderr, two_layer_cache};

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::Stdio;

use expgraph_explore::client::{get, post_form};

/// Kills the server when the test ends, even on a failed assertion.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `expgraph serve` on the graph, activations and cache in `d` on a free port (with
/// `extra` flags); the server and the address it printed.
fn serve(d: &std::path::Path, extra: &[&str]) -> (Running, SocketAddr) {
    let mut child = expgraph()
        .current_dir(d)
        .args(["serve", "--graph", "graph", "--activations", "acts", "--cache", "cache", "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Running(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("expgraph explorer: http://").unwrap_or_else(|| panic!("{line}"));
    (server, url.trim_end_matches('/').parse().unwrap())
}

#[test]
fn serve_browses_a_learned_graph() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_layer_cache(&d.join("cache"), 6, 5);
    // the cache's images (img{i}.jpg beside it): the explorer cuts the crops from them
    for i in 0..5u32 {
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, (i * 50) as u8]));
        img.save(d.join(format!("img{i}.jpg"))).unwrap();
    }
    let run = |args: &[&str]| {
        let out = expgraph().current_dir(d).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run(&["learn", "--cache", "cache", "--layers", "conv5_2,conv5_3", "--iterations", "2", "-o", "graph"]);
    run(&["infer", "--graph", "graph", "--cache", "cache", "-o", "acts"]);

    // a part model fitted on the graph's nodes, shown by the explorer
    let ann = r#"{"parts": {"beak": [{"image_id": "img0", "point": {"h": 60, "w": 80}},
        {"image_id": "img1", "point": {"h": 64, "w": 90}}]}}"#;
    std::fs::write(d.join("ann.json"), ann).unwrap();
    run(&[
        "localize",
        "--graph",
        "graph",
        "--activations",
        "acts",
        "--annotations",
        "ann.json",
        "-o",
        "pred.json",
        "--save-models",
        "models.json",
        "--top-fraction",
        "0.2",
    ]);

    let (server, addr) = serve(d, &["--part-models", "models.json", "--record", "pred.json"]);
    assert!(addr.ip().is_loopback());
    let part = get(addr, "/part/0").unwrap();
    assert_eq!(part.status, 200, "{}", part.text());
    assert!(part.text().contains("Part beak") && part.text().contains("href=\"/node/"), "{}", part.text());

    let index = get(addr, "/").unwrap();
    assert_eq!(index.status, 200);
    assert!(index.text().contains("conv5_2") && index.text().contains("conv5_3"), "{}", index.text());
    assert!(index.text().contains("<th>method</th><td>graph</td>"), "the record: {}", index.text());
    let node = get(addr, "/node/0/0").unwrap();
    assert_eq!(node.status, 200, "{}", node.text());
    assert!(node.text().contains("href=\"/node/1/"), "a conv5_2 node links its conv5_3 parents");
    let crop = get(addr, "/png/crop/0.png").unwrap();
    assert_eq!((crop.status, crop.header("content-type").as_deref()), (200, Some("image/png")));
    let decoded = image::load_from_memory(&crop.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (224, 224));
    assert_eq!(get(addr, "/image/4").unwrap().status, 200);
    assert_eq!(get(addr, "/image/5").unwrap().status, 404);
    drop(server);

    // The study: raw filters from the cache as the baseline, ratings in SQLite, then the summary.
    let (server, addr) = serve(d, &["--study", "study.sqlite", "--study-per-layer", "2"]);
    let mut rated = 0;
    while let Some(item) = next_item(&get(addr, "/study?rater=ann").unwrap().text()) {
        let reply = post_form(addr, "/study/rate", &[("rater", "ann"), ("item", &item), ("answer", "part")]).unwrap();
        assert_eq!(reply.status, 303, "{}", reply.text());
        rated += 1;
    }
    assert_eq!(rated, 8, "2 nodes and 2 filters in each of 2 layers");
    drop(server);
    let out = expgraph().current_dir(d).args(["study", "summary", "study.sqlite", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["raters"], 1);
    let rows = summary["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["layer"] == "conv5_2" && r["kind"] == "filter" && r["part_purity"] == 1.0),
        "{summary}"
    );
}

/// The item id of a study page, if it shows one.
fn next_item(page: &str) -> Option<String> {
    let key = "name=\"item\" value=\"";
    let at = page.find(key)? + key.len();
    Some(page[at..].split('"').next()?.to_string())
}

#[test]
fn serve_refuses_a_public_address_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let out = expgraph()
        .args(["serve", "--graph", "g", "--activations", "a", "--cache", "c", "--bind", "0.0.0.0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("0.0.0.0") && err.contains("--allow-remote"), "{err}");
}
