//! Colour maps for heat and vote maps.

/// A colour map from `[0, 1]` to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colormap {
    /// Matplotlib's perceptually uniform viridis (sampled at 9 stops, linearly interpolated).
    #[default]
    Viridis,
    /// The classic jet (blue → cyan → yellow → red).
    Jet,
}

const VIRIDIS: [[f32; 3]; 9] = [
    [68.0, 1.0, 84.0],
    [71.0, 44.0, 122.0],
    [59.0, 81.0, 139.0],
    [44.0, 113.0, 142.0],
    [33.0, 144.0, 141.0],
    [39.0, 173.0, 129.0],
    [92.0, 200.0, 99.0],
    [170.0, 220.0, 50.0],
    [253.0, 231.0, 37.0],
];

impl Colormap {
    /// Colour of `v` (clamped to `[0, 1]`; NaN maps to 0).
    pub fn rgb(self, v: f32) -> [u8; 3] {
        let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        match self {
            Colormap::Viridis => {
                let t = v * (VIRIDIS.len() - 1) as f32;
                let i = (t.floor() as usize).min(VIRIDIS.len() - 2);
                let f = t - i as f32;
                let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
                [0, 1, 2].map(|c| (a[c] + (b[c] - a[c]) * f).round() as u8)
            }
            Colormap::Jet => {
                let ch = |x: f32| (1.5 - (4.0 * v - x).abs()).clamp(0.0, 1.0);
                [(ch(3.0) * 255.0) as u8, (ch(2.0) * 255.0) as u8, (ch(1.0) * 255.0) as u8]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_monotone_brightness() {
        assert_eq!(Colormap::Viridis.rgb(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.rgb(1.0), [253, 231, 37]);
        assert_eq!(Colormap::Viridis.rgb(f32::NAN), [68, 1, 84]);
        let lum = |c: [u8; 3]| c.iter().map(|&x| x as u32).sum::<u32>();
        assert!(lum(Colormap::Viridis.rgb(0.2)) < lum(Colormap::Viridis.rgb(0.8)));
        assert!(Colormap::Jet.rgb(0.0)[2] > 100);
        assert!(Colormap::Jet.rgb(1.0)[0] > 100 && Colormap::Jet.rgb(1.0)[2] == 0);
    }
}
