//! Atomic output: files via a temp file + rename, folders via a temp folder + rename.

use crate::error::{ReportError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

fn parent_of(path: &Path) -> PathBuf {
    expgraph_io::parent_dir(path)
}

/// Writes `path` through `fill` atomically ([`expgraph_io::write_atomic`]); an error of `fill`
/// comes back as it was.
pub(crate) fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let mut failure = None;
    expgraph_io::write_atomic(path, |w| {
        fill(w).map_err(|e| {
            let message = e.to_string();
            failure = Some(e);
            std::io::Error::other(message)
        })
    })
    .map_err(|e| failure.take().unwrap_or_else(|| ReportError::io(path, e)))
}

/// Builds a folder in a temp folder beside `out` and renames it to `out`. An existing `out` is
/// replaced only when it holds `marker` (i.e. it is an earlier output of the same kind);
/// otherwise the call fails and leaves it alone.
pub(crate) fn write_folder_atomic(out: &Path, marker: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = parent_of(out);
    std::fs::create_dir_all(&parent).map_err(|e| ReportError::io(&parent, e))?;
    if out.exists() && !out.join(marker).is_file() {
        return Err(ReportError::io(
            out,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("exists and has no {marker}; not replacing it"),
            ),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".expgraph-report-")
        .tempdir_in(&parent)
        .map_err(|e| ReportError::io(&parent, e))?;
    fill(tmp.path())?;
    let staged = tmp.keep();
    if out.exists() {
        let old = tempfile::Builder::new()
            .prefix(".expgraph-report-old-")
            .tempdir_in(&parent)
            .map_err(|e| ReportError::io(&parent, e))?;
        let old_path = old.keep();
        // rename(dir, existing empty dir) replaces it on Unix
        std::fs::rename(out, &old_path).map_err(|e| ReportError::io(out, e))?;
        if let Err(e) = std::fs::rename(&staged, out) {
            let _ = std::fs::rename(&old_path, out);
            let _ = std::fs::remove_dir_all(&staged);
            return Err(ReportError::io(out, e));
        }
        std::fs::remove_dir_all(&old_path).map_err(|e| ReportError::io(&old_path, e))?;
    } else if let Err(e) = std::fs::rename(&staged, out) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(ReportError::io(out, e));
    }
    Ok(())
}

/// Encodes `img` as PNG at `path` (atomically).
pub(crate) fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    write_atomic(path, |w| {
        let mut buf = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
            .map_err(|source| ReportError::Png { path: path.into(), source })?;
        w.write_all(&buf).map_err(|e| ReportError::io(path, e))
    })
}
