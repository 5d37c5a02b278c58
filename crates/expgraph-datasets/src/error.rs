//! Errors of the readers and the generator: each names the file and the problem.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a data set.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line of a text annotation file is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The annotations do not fit together (unknown ids, duplicates, bad boxes, …).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A MATLAB/HDF5 file lacks a variable or field, or holds an unexpected type.
    #[error("{path}: {field}: {message}")]
    Mat {
        /// The file.
        path: PathBuf,
        /// The variable or field, MATLAB-style (`truth(3).obj.bndbox.Wmin`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An image could not be decoded or encoded.
    #[error("{path}: image: {message}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    Param(String),
    /// This build has no reader for MATLAB v7.3 files (feature `mat` off).
    #[error("{0}: reading MATLAB v7.3 files needs expgraph-datasets' `mat` feature (on by default)")]
    MatUnsupported(PathBuf),
}

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Invalid { path: path.into(), message: message.into() }
    }
}
