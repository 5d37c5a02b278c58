//! The prior-mean baseline: always predict the mean annotated part position (spec §4.1 tables).

use serde::{Deserialize, Serialize};

use crate::units::Point;
use crate::{LocalizeError, Result};

/// Predicts the mean of the annotated part points, whatever the image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriorMean {
    /// The mean annotated point, input frame.
    pub point: Point,
}

impl PriorMean {
    /// Mean of `points`; fails when empty or when a point is not finite.
    pub fn fit(points: &[Point]) -> Result<Self> {
        if points.is_empty() {
            return Err(LocalizeError::Empty("no annotated point for the prior mean".into()));
        }
        for (i, p) in points.iter().enumerate() {
            crate::units::check_finite(p, &format!("annotated example {i}"))?;
        }
        let n = points.len() as f64;
        let (h, w) = points.iter().fold((0.0, 0.0), |(h, w), p| (h + p.h, w + p.w));
        Ok(Self { point: Point::new(h / n, w / n) })
    }

    /// The prediction (the same for every image).
    pub fn predict(&self) -> Point {
        self.point
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_three_points() {
        let m = PriorMean::fit(&[Point::new(10.0, 20.0), Point::new(40.0, 50.0), Point::new(1.0, 5.0)]).unwrap();
        assert_eq!(m.predict(), Point::new(17.0, 25.0));
    }

    #[test]
    fn empty_and_nan_are_errors() {
        assert!(matches!(PriorMean::fit(&[]), Err(LocalizeError::Empty(_))));
        assert!(matches!(PriorMean::fit(&[Point::new(1.0, f64::NAN)]), Err(LocalizeError::NonFinite { .. })));
    }
}
