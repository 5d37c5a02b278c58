//! # expgraph-datasets
//!
//! Part-annotated data sets in one in-memory model ([`Dataset`]: images, object boxes, per-object
//! part ground truth), read with strict validation from the paper's benchmarks (spec §5):
//!
//! * [`read_cub`]: CUB-200-2011's text files (test split, area ≥ 2500, the 2000-object
//!   `sampling.mat` subset: [`CubOptions::paper_subset`]);
//! * [`read_pascal_part`]: Pascal-Part via the authors' `truth_<cat>.mat` (MATLAB v7.3);
//! * [`read_ilsvrc_animal_part`]: ILSVRC 2013 DET Animal-Part (`detanimalpart` layout + `truth_partNN.mat`);
//!
//! and a deterministic **synthetic data set** in CUB's format, the project's default data:
//! [`generate_synthetic_cub`]. Errors name the file and the line or field.
//!
//! The MATLAB readers need the `mat` feature (default): a pure-Rust HDF5 reader (`hdf5-pure`),
//! no system library.
//!
//! ```no_run
//! use expgraph_datasets::{generate_synthetic_cub, read_cub, CubOptions, SynthParams};
//!
//! let dir = std::path::Path::new("synthetic-birds");
//! generate_synthetic_cub(dir, &SynthParams { n_images: 40, ..SynthParams::default() })?;
//! let data = read_cub(dir, &CubOptions::default())?;
//! let head = data.part_index("crown").unwrap();
//! let truth = data.objects[0].truth_in_frame(head, 224.0); // ground truth in the 224 frame
//! # Ok::<(), expgraph_datasets::DatasetError>(())
//! ```

mod cub;
mod error;
#[cfg(feature = "mat")]
mod ilsvrc;
#[cfg(feature = "mat")]
mod mat;
mod model;
mod synth;
mod text;
#[cfg(feature = "mat")]
mod voc;

pub use cub::{read_cub, write_cub, CubOptions, Sampling, CUB_PARTS, CUB_STABILITY_LANDMARKS};
pub use error::DatasetError;
#[cfg(feature = "mat")]
pub use ilsvrc::{
    read_ilsvrc_animal_part, read_ilsvrc_part_truth, IlsvrcOptions, IlsvrcPartTruth, ILSVRC_ANIMAL_SYNSETS,
    ILSVRC_PART_NAMES,
};
#[cfg(feature = "mat")]
pub use mat::read_cub_sampling;
pub use model::{Dataset, ImageRecord, ObjectRecord, PartInstance, PartTruth, Split};
pub use synth::{generate_synthetic_cub, SynthFormat, SynthParams, SynthSummary};
#[cfg(feature = "mat")]
pub use voc::{read_pascal_part, PascalPartOptions, PASCAL_PART_CATEGORIES, PASCAL_PART_NAMES};

/// Without the `mat` feature, reading `sampling.mat` is an error that says so.
#[cfg(not(feature = "mat"))]
pub fn read_cub_sampling(path: &std::path::Path) -> Result<Vec<usize>, DatasetError> {
    Err(DatasetError::MatUnsupported(path.to_path_buf()))
}
