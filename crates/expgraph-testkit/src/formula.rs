//! Formula weights: every value of a named tensor from an integer hash of its name and index
//! (`shared/models/resnet-golden/README.md`, "The formula"). Tests rebuild torchvision-named
//! weights with it instead of downloading them, and the ResNet goldens were computed on them.

/// FNV-1a 64 of the name's bytes.
pub fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The values (C order) of the formula tensor `name` of shape `shape`: conv/fc weights scaled to
/// their fan-in, BatchNorm γ in [0.5, 1), running variances in [0.5, 1.5), other vectors in
/// [−0.125, 0.125). Exact in f32, so a test can compare bit for bit with the goldens' excerpts.
pub fn formula_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let seed = fnv1a(name);
    let len: usize = shape.iter().product();
    let scale = if shape.len() > 1 {
        let fan_in: usize = shape[1..].iter().product();
        2f32.powi((2.0 * (6.0 / fan_in as f64).sqrt()).log2().round() as i32)
    } else {
        0.0
    };
    let is_bn_weight = (name.contains("bn") || name.contains("downsample.1")) && name.ends_with(".weight");
    (0..len as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
            if shape.len() > 1 {
                (u - 0.5) * scale
            } else if is_bn_weight {
                0.5 + 0.5 * u
            } else if name.ends_with(".running_var") {
                0.5 + u
            } else {
                (u - 0.5) * 0.25
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn kinds_land_in_their_ranges() {
        let conv1 = formula_values("conv1.weight", &[64, 3, 7, 7]);
        assert_eq!(conv1.len(), 64 * 147);
        // fan-in 147: 2·sqrt(6/147) ≈ 0.40 → scale 2^-1, values in [−0.25, 0.25).
        assert!(conv1.iter().all(|v| (-0.25..0.25).contains(v)));
        assert!(conv1.iter().any(|v| *v > 0.2) && conv1.iter().any(|v| *v < -0.2));
        assert!(formula_values("layer1.0.bn1.weight", &[64]).iter().all(|v| (0.5..1.0).contains(v)));
        assert!(formula_values("bn1.running_var", &[64]).iter().all(|v| (0.5..1.5).contains(v)));
        assert!(formula_values("bn1.bias", &[64]).iter().all(|v| (-0.125..0.125).contains(v)));
        assert_ne!(formula_values("a.bias", &[8]), formula_values("b.bias", &[8]));
    }
}
