//! The report in headless Chromium: the screenshot is not blank. Skipped when no Chromium is
//! installed (CI installs Debian's `chromium`).

use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};
use expgraph_report::{build_report, find_browser, luminance_variance, screenshot, ImageSet, ReportInputs, ReportParams, ScreenshotParams};
use image::RgbImage;

#[test]
fn blank_images_have_zero_variance() {
    assert_eq!(luminance_variance(&RgbImage::from_pixel(10, 10, image::Rgb([200, 200, 200]))), 0.0);
    let stripes = RgbImage::from_fn(10, 10, |x, _| image::Rgb(if x % 2 == 0 { [0; 3] } else { [255; 3] }));
    assert!(luminance_variance(&stripes) > 10_000.0);
}

#[test]
fn report_screenshot_is_not_blank() {
    if find_browser().is_none() {
        eprintln!("skipping: no Chromium on PATH (apt-get install chromium)");
        return;
    }
    let graph = synthetic_graph(4, 3, 51).unwrap();
    let acts = synthetic_activations(&graph, 6, 52);
    let crops = synthetic_crops(6, 224, 53);
    let inputs = ReportInputs {
        title: "Screenshot test".into(),
        summary: vec![],
        tables: vec![],
        graph: &graph,
        train: Some(ImageSet { activations: &acts, crops: &crops }),
        test: None,
        part_distances: vec![],
        localization: vec![],
    };
    let params = ReportParams { heatmap_images: 1, synthesis_images: 1, ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    let written = build_report(&inputs, &params).unwrap().write(&dir.path().join("report")).unwrap();
    let png = dir.path().join("shot.png");
    let info = screenshot(&written.index, &png, &ScreenshotParams { width: 1000, height: 1400, ..Default::default() }).unwrap();
    assert_eq!((info.width, info.height), (1000, 1400));
    assert!(info.luminance_variance > 100.0, "blank screenshot (variance {})", info.luminance_variance);
    assert!(image::open(&png).is_ok());
}
