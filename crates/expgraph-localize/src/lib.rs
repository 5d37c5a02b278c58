//! # expgraph-localize
//!
//! Few-shot (3-shot) semantic-part localization by voting (paper-spec §4.1, recommended design).
//!
//! * **Units** are anything with a position and a score per image: explanatory-graph nodes
//!   ([`expgraph_graph::ImageActivations`]) or, for the raw-filter baseline, each filter's argmax
//!   cell (computed from a feature cache with [`filter_argmax`]).
//!   Both implement [`UnitActivations`]; all voting code is written once over them.
//! * **Fit**: for each annotated example `k` a [`PartTemplate`] keeps, per layer, the units in
//!   the top `q` by score that are detected (score > threshold) and lie within
//!   `max_displacement` pixels of the part, with their displacement
//!   `δ_{V,k} = p_part − x2p(p_V(I_k))` (input pixels, in the frame of the view the units were
//!   inferred in: a unit of a mirrored view fired on the mirrored object, so its horizontal
//!   displacement is mirrored too; positions themselves are unmirrored, `w' = 225 − w`, spec §1.3).
//! * **Predict**: each template builds the vote map `Σ_V w_V(I)·κ(p − x2p(p_V(I)) − δ_{V,k})`
//!   ([`Kernel`]: the AOG's `exp(−r/49.5)` on ±11 px, or a Gaussian), its argmax is the part
//!   centre, and the template with the highest score (the AOG's rule by default, see
//!   [`TemplateScore`]) wins. [`PartModel::predict_views`] also tries several views (original
//!   and mirrored activations, the AOG protocol) and keeps the best.
//! * **Baselines**: [`PriorMean`] (mean annotated point) and the raw-filter voter (the same
//!   [`PartModel`] fitted on [`filter_argmax`] units with [`UnitLayout::for_filters`]).
//!
//! Points ([`Point`]) are `(h, w)`, 1-based pixels of the 224×224 object crop, original orientation.
//!
//! ```
//! use expgraph_graph::{LayerActivations, ImageActivations};
//! use expgraph_localize::{LocalizeParams, Point, TapGeometry, UnitLayerLayout, UnitLayout};
//!
//! // Two units on a 14×14 map (stride 16, first centre 8.5) that both sit on the part.
//! let layout = UnitLayout {
//!     input_size: 224,
//!     layers: vec![UnitLayerLayout {
//!         name: "conv5_3".into(),
//!         geometry: TapGeometry { stride: 16.0, first_centre: 8.5, receptive_field: 196.0 },
//!         num_units: 2,
//!     }],
//! };
//! let image = |id: &str, shift: f32| ImageActivations {
//!     image_id: id.into(),
//!     flipped: false,
//!     layers: vec![LayerActivations {
//!         layer: "conv5_3".into(),
//!         positions: vec![[3.0 + shift, 4.0], [5.0 + shift, 6.0]],
//!         scores: vec![2.0, 1.0],
//!     }],
//! };
//! // The part moves with the units: 16 px per map cell.
//! let annotated = vec![(image("train", 0.0), Point::new(60.0, 70.0))];
//! let params = LocalizeParams::default().top_fraction(1.0).check().unwrap();
//! let model = params.fit_units(&layout, &annotated).unwrap();
//! let prediction = model.predict(&image("test", 2.0)).unwrap();
//! assert_eq!(prediction.point, Point::new(92.0, 70.0));
//! ```

mod error;
mod files;
mod kernel;
mod model;
mod params;
mod predict;
mod prior;
mod raw;
mod units;

pub use error::{LocalizeError, Result};
pub use expgraph_geometry::TapGeometry;
pub use files::{AnnotatedExample, FewShotAnnotations, PartPredictions, PredictionFile};
pub use kernel::Kernel;
pub use model::{PartModel, PartTemplate, SelectedUnit};
pub use params::{LocalizeParams, LocalizeValidParams, TemplateScore, VoteWeight};
pub use predict::{Prediction, VoteMap};
pub use prior::PriorMean;
pub use raw::{filter_argmax, filter_argmaxes};
pub use units::{ImageUnits, Point, UnitActivations, UnitLayer, UnitLayerLayout, UnitLayout};
