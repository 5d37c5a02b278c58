//! The one map argmax of the workspace (raw-filter positions in `expgraph-eval`, raw-filter units
//! and vote maps in `expgraph-localize`), with MATLAB's tie order.

/// 0-based `(h, w)` of the largest value of a row-major `height × width` map; ties go to the
/// first in column-major order (smallest `w`, then smallest `h`), as MATLAB's `max` picks (and as
/// `computeStability_raw.m` relies on). `map.len()` must be `height · width ≥ 1`.
pub fn argmax_cell<T: PartialOrd + Copy>(map: &[T], height: usize, width: usize) -> (usize, usize) {
    let mut best = (0, 0);
    for w in 0..width {
        for h in 0..height {
            if map[h * width + w] > map[best.0 * width + best.1] {
                best = (h, w);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_smallest_column_then_row() {
        // 3 rows × 4 columns; maxima at (0, 2), (1, 1), (2, 1) → (1, 1)
        let mut map = vec![0.0f64; 12];
        map[2] = 2.0;
        map[5] = 2.0;
        map[9] = 2.0;
        assert_eq!(argmax_cell(&map, 3, 4), (1, 1));
        assert_eq!(argmax_cell(&[0.0f32; 6], 2, 3), (0, 0));
        assert_eq!(argmax_cell(&[1.0f32, 3.0, 2.0], 1, 3), (0, 1));
    }
}
