//! `cargo xtask screenshot`: open a report's `index.html` (or any URL, e.g. a page of
//! `expgraph serve`) in headless Chromium and save a PNG (the browser driver is
//! `crate::chromium`).

use std::path::PathBuf;
use std::time::Duration;

use crate::chromium::{screenshot, screenshot_url, ScreenshotParams};
use anyhow::{bail, Context, Result};

/// Arguments of `cargo xtask screenshot`.
#[derive(clap::Args, Debug)]
pub struct ScreenshotArgs {
    /// Report folder (holding index.html) or the HTML file itself.
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    pub report: Option<PathBuf>,
    /// A URL instead, e.g. `http://127.0.0.1:8080/node/0/5` of `expgraph serve`.
    #[arg(long)]
    pub url: Option<String>,
    /// Where the PNG goes.
    #[arg(long, short, default_value = "target/report-screenshot.png")]
    pub out: PathBuf,
    /// Window width, px.
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    /// Window height, px.
    #[arg(long, default_value_t = 2000)]
    pub height: u32,
    /// Browser binary (default: $EXPGRAPH_CHROMIUM, then chromium / chromium-browser on PATH).
    #[arg(long)]
    pub browser: Option<PathBuf>,
    /// Seconds before the browser is killed.
    #[arg(long, default_value_t = 90)]
    pub timeout_s: u64,
}

/// Run `cargo xtask screenshot`.
pub fn run(args: ScreenshotArgs) -> Result<()> {
    let params = ScreenshotParams {
        browser: args.browser,
        width: args.width,
        height: args.height,
        timeout: Duration::from_secs(args.timeout_s),
    };
    let info = match (&args.report, &args.url) {
        (_, Some(url)) => screenshot_url(url, &args.out, &params).with_context(|| format!("screenshot of {url}"))?,
        (Some(report), None) => {
            let page = if report.is_dir() { report.join("index.html") } else { report.clone() };
            if !page.is_file() {
                bail!("{} not found (run `expgraph report` first)", page.display());
            }
            screenshot(&page, &args.out, &params).with_context(|| format!("screenshot of {}", page.display()))?
        }
        (None, None) => bail!("pass --report or --url"),
    };
    if info.luminance_variance < 1.0 {
        bail!("the screenshot {} is blank (luminance variance {:.3})", args.out.display(), info.luminance_variance);
    }
    println!(
        "{} ({}×{}, luminance variance {:.0})",
        args.out.display(),
        info.width,
        info.height,
        info.luminance_variance
    );
    Ok(())
}
