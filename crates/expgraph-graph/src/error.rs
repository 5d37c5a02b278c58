//! Errors of the graph and activations file formats.

use std::path::PathBuf;

/// Errors reading or writing a graph or an activations file.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file that is there but malformed or inconsistent.
    #[error("{}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A file written by another (newer or older) format version.
    #[error("{}: format version {found} is not supported (this build reads version {supported})", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// An in-memory value that cannot be written (inconsistent lengths, non-finite numbers).
    #[error("invalid {what}: {problem}")]
    Invalid {
        /// Which object.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> GraphError {
    GraphError::Io { path: path.to_path_buf(), source }
}

pub(crate) fn format_err(path: &std::path::Path, what: impl Into<String>) -> GraphError {
    GraphError::Format { path: path.to_path_buf(), what: what.into() }
}
