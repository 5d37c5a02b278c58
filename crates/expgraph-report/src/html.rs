//! The self-contained HTML report: one folder with `index.html` and PNGs, no script, no network.

use crate::error::{ReportError, Result};
use crate::write::{check_report_folder, save_png, write_atomic, write_report_folder};
use image::RgbImage;
use minijinja::{context, AutoEscape, Environment};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const TEMPLATE: &str = include_str!("../templates/index.html");

/// A table of metrics (e.g. normalized distances per part and method, spec §4.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricTable {
    /// Title (also the nav entry).
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells; cells that parse as numbers are right-aligned.
    pub rows: Vec<Vec<String>>,
}

/// One picture of a section.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Caption under the picture (also its alt text).
    pub caption: String,
    /// The picture; written as a PNG.
    pub image: RgbImage,
}

/// A titled group of figures.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// Title (also the nav entry).
    pub title: String,
    /// Optional paragraph under the title.
    pub text: Option<String>,
    /// Figures, in order.
    pub figures: Vec<Figure>,
}

/// A file the report carries beside its page and figures (e.g. the node pages of
/// `expgraph report --nodes`), by relative path.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// Path relative to the report folder, `/`-separated, inside a sub-folder (so that it can
    /// never take the name of the report's own `index.html`, figures or manifest).
    pub path: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// A link of a [`LinkList`]: text, an optional thumbnail, and the attachment it opens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// Text (also the thumbnail's alt text).
    pub text: String,
    /// Relative path of the page it opens (an attachment).
    pub href: String,
    /// Relative path of a thumbnail image (an attachment), shown instead of the text.
    pub thumbnail: Option<String>,
}

/// A titled list of links to attached pages, in rows (e.g. node pages, a row per layer).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkList {
    /// Title (also the nav entry).
    pub title: String,
    /// Optional paragraph under the title.
    pub text: Option<String>,
    /// Rows: a label and its links.
    pub rows: Vec<(String, Vec<Link>)>,
}

/// A whole report, ready to write.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// Key/value summary of the run (backbone, layers, nodes, timings, …), in order.
    pub summary: Vec<(String, String)>,
    /// Metric tables.
    pub tables: Vec<MetricTable>,
    /// Figure sections.
    pub sections: Vec<Section>,
    /// Lists of links to attached pages, after the figure sections.
    pub links: Vec<LinkList>,
    /// Files written beside the page and figures.
    pub attachments: Vec<Attachment>,
}

/// What [`Report::write`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenReport {
    /// The report folder.
    pub dir: PathBuf,
    /// `dir/index.html`.
    pub index: PathBuf,
    /// Every PNG, in page order.
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Cell {
    text: String,
    numeric: bool,
}

#[derive(Serialize)]
struct TableView {
    id: String,
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

#[derive(Serialize)]
struct FigureView {
    file: String,
    caption: String,
    width: u32,
    height: u32,
}

#[derive(Serialize)]
struct SectionView {
    id: String,
    title: String,
    text: Option<String>,
    figures: Vec<FigureView>,
}

impl Report {
    /// An empty report titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), ..Self::default() }
    }

    /// Renders `index.html` for figures stored under the given file names.
    fn render(&self, files: &[Vec<String>]) -> Result<String> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        env.add_template("index.html", TEMPLATE)?;
        let tables: Vec<TableView> = self
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| TableView {
                id: format!("table-{i}"),
                title: t.title.clone(),
                header: t.header.clone(),
                rows: t
                    .rows
                    .iter()
                    .map(|r| {
                        r.iter().map(|c| Cell { text: c.clone(), numeric: c.trim().parse::<f64>().is_ok() }).collect()
                    })
                    .collect(),
            })
            .collect();
        let sections: Vec<SectionView> = self
            .sections
            .iter()
            .zip(files)
            .enumerate()
            .map(|(i, (s, names))| SectionView {
                id: format!("section-{i}"),
                title: s.title.clone(),
                text: s.text.clone(),
                figures: s
                    .figures
                    .iter()
                    .zip(names)
                    .map(|(f, name)| FigureView {
                        file: name.clone(),
                        caption: f.caption.clone(),
                        width: f.image.width(),
                        height: f.image.height(),
                    })
                    .collect(),
            })
            .collect();
        let links: Vec<_> = self
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                context! { id => format!("links-{i}"), title => l.title, text => l.text,
                rows => l.rows.iter().map(|(label, links)| context! { label => label, links => links }).collect::<Vec<_>>() }
            })
            .collect();
        let summary: Vec<(String, String)> = self.summary.clone();
        let html = env.get_template("index.html")?.render(context! {
            title => self.title,
            version => env!("CARGO_PKG_VERSION"),
            summary => summary,
            tables => tables,
            sections => sections,
            links => links,
        })?;
        Ok(html)
    }

    /// The manifest every report folder holds: format name and version, and every file the report
    /// wrote (relative path, size, BLAKE3 hash). It is how a later write knows which files it
    /// may replace.
    pub const MANIFEST: &'static str = crate::write::MANIFEST;
    /// `format` of the manifest.
    pub const MANIFEST_FORMAT: &'static str = crate::write::FORMAT;
    /// `format_version` of the manifest.
    pub const MANIFEST_VERSION: u32 = crate::write::FORMAT_VERSION;

    /// Writes the report folder `out` (`index.html`, PNGs and the manifest [`Report::MANIFEST`])
    /// atomically: built in a temp folder beside `out`, then renamed into place.
    ///
    /// `out` may be absent, an empty folder, or exactly an earlier report (its manifest lists
    /// every entry, none changed), which is then replaced in one step. Anything else (a user's
    /// file, a folder without a manifest, a changed report file) is refused with an error that
    /// names the folder and the first entry in the way, and nothing is touched. The temp folder
    /// is removed on every error.
    pub fn write(&self, out: &Path) -> Result<WrittenReport> {
        self.write_with(out, false)
    }

    /// [`Report::write`], or with `overwrite` the overwrite mode: where `out` holds more than an
    /// earlier report, the report is written into it file by file (each atomically), the earlier
    /// report's files (listed in its manifest, changed or not; for a report written before
    /// manifests, its `index.html` and the figures it links) are replaced or removed, and every
    /// other file and folder stays as it is. A file that no report wrote is never replaced, moved
    /// or deleted: if one has the name of a file the report writes (`index.html`,
    /// `sNN-fNNN.png`, the manifest), the write is refused.
    pub fn write_with(&self, out: &Path, overwrite: bool) -> Result<WrittenReport> {
        let files = self.figure_files();
        let html = self.render(&files)?;
        let mut planned: BTreeSet<String> = files.iter().flatten().cloned().collect();
        planned.insert("index.html".to_string());
        for a in &self.attachments {
            check_attachment(&a.path)?;
            if !planned.insert(a.path.clone()) {
                return Err(ReportError::Invalid {
                    what: "attachment",
                    detail: format!("{:?} is given twice", a.path),
                });
            }
        }
        write_report_folder(out, &planned, overwrite, |dir| {
            for a in &self.attachments {
                let path = dir.join(&a.path);
                write_atomic(&path, |w| w.write_all(&a.bytes).map_err(|e| ReportError::io(&path, e)))?;
            }
            for (sec, names) in self.sections.iter().zip(&files) {
                for (fig, name) in sec.figures.iter().zip(names) {
                    save_png(&fig.image, &dir.join(name))?;
                }
            }
            let index = dir.join("index.html");
            write_atomic(&index, |w| w.write_all(html.as_bytes()).map_err(|e| ReportError::io(&index, e)))
        })?;
        Ok(WrittenReport {
            dir: out.to_path_buf(),
            index: out.join("index.html"),
            images: files.iter().flatten().map(|n| out.join(n)).collect(),
        })
    }

    /// Checks, without writing anything, whether a report may be written to `out`
    /// ([`Report::write_with`] with the same `overwrite`); the error is the one the write would
    /// give. Lets a caller refuse before long work. (A report with figures also writes
    /// `sNN-fNNN.png`; in overwrite mode a user's file of such a name is only found by the write.)
    pub fn check_output(out: &Path, overwrite: bool) -> Result<()> {
        check_report_folder(out, &BTreeSet::from(["index.html".to_string()]), overwrite)
    }

    /// The figure file names, per section.
    fn figure_files(&self) -> Vec<Vec<String>> {
        self.sections
            .iter()
            .enumerate()
            .map(|(s, sec)| (0..sec.figures.len()).map(|f| format!("s{s:02}-f{f:03}.png")).collect())
            .collect()
    }
}

/// An attachment's path is relative, `/`-separated, inside a sub-folder, of plain names only.
fn check_attachment(path: &str) -> Result<()> {
    let parts: Vec<&str> = path.split('/').collect();
    let plain = |p: &&str| !p.is_empty() && *p != "." && *p != ".." && !p.starts_with('.') && !p.contains(['\\', '\0']);
    if parts.len() < 2 || !parts.iter().all(plain) {
        return Err(ReportError::Invalid {
            what: "attachment",
            detail: format!("{path:?} is not a relative path inside a sub-folder of plain names"),
        });
    }
    Ok(())
}
