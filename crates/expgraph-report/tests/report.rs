//! The HTML report folder: valid HTML, no broken links, PNGs of the announced sizes, escaping,
//! atomic replacement that never deletes a user's file (more in `output_folder.rs`).

use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};
use expgraph_report::{
    bar_chart, build_report, localization_overlay, ImageSet, LocalizationCase, MetricTable, PartPoint, ReportInputs,
    ReportParams, VoteMap,
};
use image::{Rgb, RgbImage};
use scraper::{Html, Selector};
use std::path::Path;

fn write_demo(out: &Path, title: &str) -> expgraph_report::WrittenReport {
    let graph = synthetic_graph(4, 3, 31).unwrap();
    let train = synthetic_activations(&graph, 8, 32);
    let test = synthetic_activations(&graph, 3, 33);
    let train_crops = synthetic_crops(8, 224, 34);
    let test_crops = synthetic_crops(3, 224, 35);
    let case = LocalizationCase {
        caption: "img000 <head> & tail".into(),
        image: test_crops[0].clone(),
        predicted: vec![PartPoint { name: "head".into(), xy: [50.0, 60.0] }],
        truth: vec![PartPoint { name: "head".into(), xy: [58.0, 66.0] }],
        vote_map: Some(VoteMap { width: 4, height: 4, values: (0..16).map(|v| v as f32).collect() }),
    };
    let inputs = ReportInputs {
        title: title.into(),
        summary: vec![("learning time".into(), "3.5 s".into()), ("note".into(), "a <b>bold</b> claim".into())],
        tables: vec![MetricTable {
            title: "Normalized distance".into(),
            header: vec!["part".into(), "ours".into()],
            rows: vec![vec!["head".into(), "0.081".into()], vec!["tail".into(), "0.120".into()]],
        }],
        graph: &graph,
        train: Some(ImageSet { activations: &train, crops: &train_crops }),
        test: Some(ImageSet { activations: &test, crops: &test_crops }),
        part_distances: vec![("head".into(), 0.081), ("tail".into(), 0.12)],
        localization: vec![case],
    };
    let params = ReportParams { heatmap_images: 2, synthesis_images: 2, ..Default::default() };
    build_report(&inputs, &params).unwrap().write(out).unwrap()
}

#[test]
fn report_is_valid_self_contained_html() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let written = write_demo(&out, "Run <script>alert(1)</script>");
    let html = std::fs::read_to_string(&written.index).unwrap();
    let doc = Html::parse_document(&html);
    assert!(doc.errors.is_empty(), "HTML parse errors: {:?}", doc.errors);
    assert!(!html.contains("<script"), "text must be escaped");
    assert!(html.contains("&lt;b&gt;bold&lt;&#x2f;b&gt;") || html.contains("&lt;b&gt;bold&lt;/b&gt;"));
    assert!(!html.contains("http://") && !html.contains("https://"), "no network references");

    let img_sel = Selector::parse("img").unwrap();
    let mut images = 0;
    for img in doc.select(&img_sel) {
        let src = img.value().attr("src").unwrap();
        let path = out.join(src);
        assert!(path.is_file(), "broken image link {src}");
        let decoded = image::open(&path).unwrap();
        let w: u32 = img.value().attr("width").unwrap().parse().unwrap();
        let h: u32 = img.value().attr("height").unwrap().parse().unwrap();
        assert_eq!((decoded.width(), decoded.height()), (w, h), "{src}");
        images += 1;
    }
    // 2 galleries + 2 heat maps + 2 syntheses + bar chart + 1 overlay + 2 σ histograms
    assert_eq!(images, 10);
    assert_eq!(written.images.len(), 10);
    let link_sel = Selector::parse("a[href]").unwrap();
    for a in doc.select(&link_sel) {
        let href = a.value().attr("href").unwrap();
        let id = href.strip_prefix('#').expect("only in-page links");
        let target = Selector::parse(&format!("#{id}")).unwrap();
        assert!(doc.select(&target).next().is_some(), "broken anchor {href}");
    }
    let gallery = image::open(out.join("s00-f000.png")).unwrap().to_rgb8();
    assert_eq!(gallery.width(), 120 + 5 * (96 + 4) + 4);
    assert_eq!(gallery.height(), 24 + 12 * (96 + 4) + 4, "12 nodes < 20 requested");
}

#[test]
fn report_folder_is_replaced_atomically_and_foreign_folders_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    write_demo(&out, "first");
    write_demo(&out, "second");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("second"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temp folders left: {leftovers:?}");
    let foreign = dir.path().join("data");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "x").unwrap();
    let graph = synthetic_graph(2, 2, 1).unwrap();
    let inputs = ReportInputs {
        title: "t".into(),
        summary: vec![],
        tables: vec![],
        graph: &graph,
        train: None,
        test: None,
        part_distances: vec![],
        localization: vec![],
    };
    let err = build_report(&inputs, &ReportParams::default()).unwrap().write(&foreign).unwrap_err();
    assert!(err.to_string().contains("data"), "{err}");
    assert!(foreign.join("keep.txt").is_file());
}

/// A small report through the plain `write` (the API before manifests existed, so that these
/// regression tests of issue 11 item 1 also run against the old code).
fn write_small(out: &Path, title: &str) -> expgraph_report::Result<expgraph_report::WrittenReport> {
    let mut report = expgraph_report::Report::new(title);
    report.sections.push(expgraph_report::Section {
        title: "s".into(),
        text: None,
        figures: vec![expgraph_report::Figure { caption: "f".into(), image: RgbImage::new(4, 4) }],
    });
    report.write(out)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// `report -o d` over d/{index.html, notes.txt, sub/} used to delete the whole folder.
#[test]
fn a_folder_with_an_index_html_and_user_files_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("index.html"), "x").unwrap();
    std::fs::write(d.join("notes.txt"), "keep").unwrap();
    let err = write_small(&d, "new").unwrap_err().to_string();
    assert!(err.contains("index.html") && err.contains(&d.display().to_string()), "{err}");
    assert_eq!(entries(&d), ["index.html", "notes.txt", "sub"]);
    assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(d.join("index.html")).unwrap(), "x");
    assert_eq!(entries(dir.path()), ["d"], "temp folders left");
}

/// A file added into an earlier report makes it more than a report: not replaced.
#[test]
fn a_user_file_inside_an_earlier_report_blocks_its_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    write_small(&out, "first").unwrap();
    write_small(&out, "second").unwrap();
    assert!(std::fs::read_to_string(out.join("index.html")).unwrap().contains("second"));
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = write_small(&out, "third").unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    assert!(std::fs::read_to_string(out.join("index.html")).unwrap().contains("second"));
    assert_eq!(entries(dir.path()), ["report"], "temp folders left");
}

/// `-o .` (here `project/.`, the process cwd is not changed): refused while the folder holds
/// other files, replaced when it is an earlier report, and no temp folder is left either way.
#[test]
fn the_current_folder_is_refused_or_replaced_without_leftovers() {
    let parent = tempfile::tempdir().unwrap();
    let cwd = parent.path().join("project");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("index.html"), "my page").unwrap();
    std::fs::write(cwd.join("Cargo.toml"), "[package]").unwrap();
    assert!(write_small(&cwd.join("."), "here").is_err());
    assert_eq!(entries(&cwd), ["Cargo.toml", "index.html"]);
    assert_eq!(entries(parent.path()), ["project"], "temp folders left");

    let report = parent.path().join("report");
    write_small(&report, "first").unwrap();
    write_small(&report.join("."), "second").unwrap();
    assert!(std::fs::read_to_string(report.join("index.html")).unwrap().contains("second"));
    assert_eq!(entries(parent.path()), ["project", "report"], "temp folders left");
    assert!(entries(&report).iter().all(|n| !n.starts_with(".expgraph-report-")));
}

#[test]
fn charts_and_overlays_draw_text_and_marks() {
    let chart = bar_chart("Normalized distance", "distance", &[("head".into(), 0.1), ("wing".into(), 0.3)], (400, 300))
        .unwrap();
    assert_eq!(chart.dimensions(), (400, 300));
    // the caption (embedded font, no fontconfig) puts dark pixels in the top band
    let dark_top =
        (0..400).flat_map(|x| (0..30).map(move |y| (x, y))).filter(|&(x, y)| chart.get_pixel(x, y).0[0] < 100).count();
    assert!(dark_top > 30, "caption not drawn ({dark_top} dark pixels)");
    assert!(bar_chart("empty", "", &[], (100, 100)).is_err());
    assert!(bar_chart("nan", "", &[("a".into(), f64::NAN)], (100, 100)).is_err());

    let img = RgbImage::from_pixel(112, 112, Rgb([128, 128, 128]));
    let pts = |xy| vec![PartPoint { name: "p".into(), xy }];
    let out = localization_overlay(&img, &pts([20.0, 20.0]), &pts([80.0, 80.0]), None).unwrap();
    assert_eq!(out.dimensions(), (224, 224), "small images are upscaled");
    let red = out.get_pixel(41, 41).0;
    assert!(red[0] > 200 && red[1] < 80, "prediction cross at 2× (20, 20): {red:?}");
    let bad = VoteMap { width: 3, height: 3, values: vec![0.0; 4] };
    assert!(localization_overlay(&img, &[], &[], Some(&bad)).is_err());
}
