//! Charts drawn with `plotters` on an in-memory bitmap; text uses the embedded font (no
//! fontconfig, no system fonts).

use crate::draw::FONT_BYTES;
use crate::error::{ReportError, Result};
use expgraph_graph::ExplanatoryGraph;
use image::RgbImage;
use plotters::prelude::*;
use std::sync::OnceLock;

fn ensure_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_ok())
}

fn plot_err(title: &str, e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot { title: title.to_string(), detail: e.to_string() }
}

/// A vertical bar chart of named values (e.g. the per-part normalized distance, spec §4.2).
pub fn bar_chart(title: &str, y_label: &str, bars: &[(String, f64)], size: (u32, u32)) -> Result<RgbImage> {
    if bars.is_empty() {
        return Err(plot_err(title, "no bars"));
    }
    if bars.iter().any(|(_, v)| !v.is_finite()) {
        return Err(plot_err(title, "non-finite value"));
    }
    ensure_font();
    let (w, h) = size;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(title, e))?;
        let top = bars.iter().map(|b| b.1).fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.15 } else { 1.0 };
        let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(60)
            .y_label_area_size(55)
            .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)
            .map_err(|e| plot_err(title, e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_label)
            .x_labels(bars.len())
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| plot_err(title, e))?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
                    RGBColor(59, 81, 139).filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                bar
            }))
            .map_err(|e| plot_err(title, e))?;
        root.present().map_err(|e| plot_err(title, e))?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(title, "buffer size"))
}

/// A histogram of `values` with `bins` equal bins over their range.
pub fn histogram(title: &str, x_label: &str, values: &[f64], bins: usize, size: (u32, u32)) -> Result<RgbImage> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || bins == 0 {
        return Err(plot_err(title, "no finite values or zero bins"));
    }
    ensure_font();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
    let mut counts = vec![0u32; bins];
    for v in &finite {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let max_count = counts.iter().copied().max().unwrap_or(1).max(1);
    let (w, h) = size;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(title, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(lo..lo + width * bins as f64, 0u32..(max_count + max_count / 10 + 1))
            .map_err(|e| plot_err(title, e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc("nodes")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| plot_err(title, e))?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                let x0 = lo + width * i as f64;
                Rectangle::new([(x0, 0), (x0 + width, c)], RGBColor(33, 144, 141).filled())
            }))
            .map_err(|e| plot_err(title, e))?;
        root.present().map_err(|e| plot_err(title, e))?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| plot_err(title, "buffer size"))
}

/// One histogram of node σ (map units) per graph layer, shallowest first.
pub fn sigma_histograms(graph: &ExplanatoryGraph) -> Result<Vec<(String, RgbImage)>> {
    graph
        .layers
        .iter()
        .filter(|l| !l.sigma.is_empty())
        .map(|l| {
            let title = format!("{}: node σ", l.info.name);
            Ok((l.info.name.clone(), histogram(&title, "σ (map units)", &l.sigma, 30, (480, 300))?))
        })
        .collect()
}
