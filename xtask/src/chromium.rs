//! The headless-Chromium driver of `cargo xtask screenshot` and of the report screenshot test.
//! Spawns the browser with networking, GPU, sync and first-run features off and a throw-away
//! profile; nothing is fetched.

use anyhow::{anyhow, Context, Result};
use expgraph::report::RgbImage;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Browser and window settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenshotParams {
    /// Browser binary; `None` = [`find_browser`].
    pub browser: Option<PathBuf>,
    /// Window width, px.
    pub width: u32,
    /// Window height, px.
    pub height: u32,
    /// The browser is killed after this long.
    pub timeout: Duration,
}

impl Default for ScreenshotParams {
    fn default() -> Self {
        Self { browser: None, width: 1280, height: 2000, timeout: Duration::from_secs(90) }
    }
}

/// What a screenshot looked like.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenshotInfo {
    /// Width of the PNG.
    pub width: u32,
    /// Height of the PNG.
    pub height: u32,
    /// Variance of the pixel luminance (0 for a blank page).
    pub luminance_variance: f64,
}

/// The headless browser: `$EXPGRAPH_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`.
pub fn find_browser() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("EXPGRAPH_CHROMIUM").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// `browser` headless with networking, GPU, sync and first-run features off, the profile
/// `profile` and the window size of `params`.
pub fn browser_command(browser: &Path, profile: &Path, params: &ScreenshotParams) -> Command {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={},{}", params.width, params.height));
    cmd
}

/// Variance of the luminance `(r + g + b) / 3` over all pixels.
pub fn luminance_variance(img: &RgbImage) -> f64 {
    let n = (img.width() as f64 * img.height() as f64).max(1.0);
    let lum = |p: &image::Rgb<u8>| p.0.iter().map(|&c| c as f64).sum::<f64>() / 3.0;
    let mean = img.pixels().map(lum).sum::<f64>() / n;
    img.pixels().map(|p| (lum(p) - mean).powi(2)).sum::<f64>() / n
}

fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Opens `page` (an HTML file) in headless Chromium and saves a PNG of the window at `out`
/// (atomically: the browser writes a temp file that is renamed).
pub fn screenshot(page: &Path, out: &Path, params: &ScreenshotParams) -> Result<ScreenshotInfo> {
    let page = page.canonicalize().with_context(|| page.display().to_string())?;
    screenshot_url(&file_url(&page), out, params)
}

/// [`screenshot`] of any URL (e.g. a page of `expgraph serve`).
pub fn screenshot_url(url: &str, out: &Path, params: &ScreenshotParams) -> Result<ScreenshotInfo> {
    let browser = params
        .browser
        .clone()
        .or_else(find_browser)
        .ok_or_else(|| anyhow!("no Chromium found (apt-get install chromium, or set EXPGRAPH_CHROMIUM)"))?;
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| out_dir.display().to_string())?;
    let profile = tempfile::tempdir().with_context(|| std::env::temp_dir().display().to_string())?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".screenshot-").suffix(".png");
    // the renamed file is the user's output: a plain file's mode (0666 minus the umask), not 0600
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let staged = builder.tempfile_in(&out_dir).with_context(|| out_dir.display().to_string())?.into_temp_path();
    let log_path = profile.path().join("browser.log");
    let log = std::fs::File::create(&log_path).with_context(|| log_path.display().to_string())?;
    let mut child = browser_command(&browser, profile.path(), params)
        .arg(format!("--screenshot={}", staged.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| browser.display().to_string())?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait().with_context(|| browser.display().to_string())? {
            Some(status) => break status,
            None if start.elapsed() > params.timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(anyhow!("{} did not finish within {:?}", browser.display(), params.timeout));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let shot = std::fs::read(&staged).unwrap_or_default();
    if !status.success() || shot.is_empty() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: String =
            log.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(anyhow!("{} failed ({status}), no screenshot; log tail:\n{tail}", browser.display()));
    }
    let img = image::load_from_memory(&shot)
        .with_context(|| format!("decoding the screenshot {}", staged.display()))?
        .to_rgb8();
    staged.persist(out).map_err(|e| e.error).with_context(|| out.display().to_string())?;
    Ok(ScreenshotInfo { width: img.width(), height: img.height(), luminance_variance: luminance_variance(&img) })
}

#[cfg(test)]
mod tests {
    //! The report in headless Chromium: the screenshot is not blank. Skipped when no Chromium is
    //! installed (CI installs Debian's `chromium`).
    use super::*;
    use expgraph::report::{build_report, ImageSet, ReportInputs, ReportParams};
    use expgraph_report::testing::{synthetic_activations, synthetic_crops, synthetic_graph};

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
        let info =
            screenshot(&written.index, &png, &ScreenshotParams { width: 1000, height: 1400, ..Default::default() })
                .unwrap();
        assert_eq!((info.width, info.height), (1000, 1400));
        assert!(info.luminance_variance > 100.0, "blank screenshot (variance {})", info.luminance_variance);
        assert!(image::open(&png).is_ok());
    }
}
