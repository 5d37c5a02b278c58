//! # expgraph-eval
//!
//! The paper's metrics as small pure functions (paper-spec §4.2 and §4.3):
//!
//! * [`evaluate_localization`]: normalized distance (÷ 224·√2, nearest ground-truth instance),
//!   detection accuracy (IoU ≥ 0.5 with a box of the mean annotated part size) and LOC rate
//!   (predicted centre inside the ground-truth box), exactly as `step_getResult.m` computes them;
//! * [`location_instability`]: the location (in)stability of graph nodes or raw filters, in the
//!   explanatory-graph protocol (167 units per layer, top-20 images) or the ICNN protocol (all
//!   units, top-100 images among those showing the landmark);
//! * [`raw_filter_tracks`]: position (argmax unit mapped to pixels) and score (max value) of every raw
//!   filter, the input of the raw-filter baseline.
//!
//! Every point lives in the **224×224 object frame** (the object box resized to the network
//! input) and is given as `Point { x, y }` (x = column = the spec's `w`, y = row = `h`), in pixels.
//!
//! ```
//! use expgraph_eval::{evaluate_localization, LocalizationParams, ObjectResult, Point, TruthInstance};
//!
//! let objects = vec![ObjectResult {
//!     prediction: Some(Point::new(112.0, 50.0)),
//!     truth: vec![TruthInstance::point(Point::new(112.0, 80.0))],
//! }];
//! let report = evaluate_localization(&objects, &LocalizationParams::default()).unwrap();
//! assert!((report.normalized_distance - 30.0 / (224.0 * 2f64.sqrt())).abs() < 1e-12);
//! ```

mod geometry;
mod localization;
mod raw;
mod stability;

pub use geometry::{Extent, Point, FRAME_SIZE};
pub use localization::{evaluate_localization, LocalizationParams, LocalizationReport, ObjectResult, TruthInstance};
pub use raw::{argmax_position, raw_filter_tracks, raw_filter_tracks_scaled};
pub use stability::{
    layer_instability, location_instability, Landmarks, LayerInstability, LayerTracks, StabilityProtocol,
    StabilityReport,
};

/// Errors of the metric functions: inputs that do not fit together.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    /// Nothing to average over.
    #[error("nothing to evaluate: {0}")]
    Empty(String),
    /// An object that has the part but no prediction.
    #[error("object {index} has ground truth for the part but no prediction")]
    MissingPrediction {
        /// Index of the object in the input.
        index: usize,
    },
    /// Lengths or counts that do not agree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A NaN or infinite coordinate or score.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// A parameter out of range.
    #[error("invalid parameter: {0}")]
    Param(String),
}
