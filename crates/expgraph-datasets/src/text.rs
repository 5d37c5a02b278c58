//! Strict helpers for whitespace-separated annotation files, and atomic file writing.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::DatasetError;

/// A text file read whole, iterated as numbered non-blank lines.
pub(crate) struct TextFile {
    pub path: PathBuf,
    text: String,
}

impl TextFile {
    pub fn read(path: &Path) -> Result<Self, DatasetError> {
        let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| DatasetError::invalid(path, format!("not UTF-8 text: {e}")))?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    /// `(1-based line number, trimmed line)` for every non-blank line.
    pub fn lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty())
    }

    pub fn parse_error(&self, line: usize, message: impl Into<String>) -> DatasetError {
        DatasetError::Parse { path: self.path.clone(), line, message: message.into() }
    }

    /// Split a line into exactly `n` whitespace-separated fields.
    pub fn fields<'a>(&self, line_no: usize, line: &'a str, names: &[&str]) -> Result<Vec<&'a str>, DatasetError> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != names.len() {
            return Err(self.parse_error(
                line_no,
                format!("expected {} fields ({}), found {}", names.len(), names.join(" "), fields.len()),
            ));
        }
        Ok(fields)
    }

    /// Split a line into an id and the rest of the line (which may hold spaces).
    pub fn id_and_rest<'a>(&self, line_no: usize, line: &'a str, what: &str) -> Result<(u32, &'a str), DatasetError> {
        let mut it = line.splitn(2, char::is_whitespace);
        let id = it.next().unwrap_or_default();
        let rest = it.next().map(str::trim).unwrap_or_default();
        if rest.is_empty() {
            return Err(self.parse_error(line_no, format!("expected `<id> <{what}>`")));
        }
        Ok((self.num(line_no, "id", id)?, rest))
    }

    pub fn num<T: FromStr>(&self, line_no: usize, field: &str, value: &str) -> Result<T, DatasetError> {
        value.parse::<T>().map_err(|_| self.parse_error(line_no, format!("field `{field}`: cannot parse {value:?}")))
    }

    /// A finite float.
    pub fn float(&self, line_no: usize, field: &str, value: &str) -> Result<f64, DatasetError> {
        let v: f64 = self.num(line_no, field, value)?;
        if !v.is_finite() {
            return Err(self.parse_error(line_no, format!("field `{field}`: {value} is not finite")));
        }
        Ok(v)
    }
}

/// Whether `rel`, a path read from an annotation file, stays inside the folder it is joined to:
/// relative, with no `..` (images are never read from elsewhere).
pub(crate) fn stays_inside(rel: &str) -> bool {
    std::path::Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// Write `bytes` to `path` atomically ([`expgraph_io::write_bytes`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    expgraph_io::write_bytes(path, bytes).map_err(|e| DatasetError::io(path, e))
}
