//! How a cache stores its maps on disk: dtype, shard size, provenance digests.

use serde::{Deserialize, Serialize};

/// Element type of the stored maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageDtype {
    /// IEEE half precision: relative error ≤ 2⁻¹¹ (≈ 4.9e-4) for normal values; the default.
    #[default]
    F16,
    /// 8-bit quantization per image-channel: `v ≈ min + q · scale`, `scale = range / 255`,
    /// absolute error ≤ `range / 510` (the reference code's `roughCNN_compress`, spec §3).
    U8,
}

impl StorageDtype {
    /// `"f16"` or `"u8"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::U8 => "u8",
        }
    }

    /// Parse `"f16"` or `"u8"`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "f16" => Some(Self::F16),
            "u8" => Some(Self::U8),
            _ => None,
        }
    }
}

impl std::fmt::Display for StorageDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Storage settings and provenance of a cache; stored in `manifest.json` under `"storage"`.
///
/// Every field is part of the cache key, so changing any of them means a different cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageInfo {
    /// Element type of the shard files.
    pub dtype: StorageDtype,
    /// Images per shard file (the last shard may hold fewer).
    pub shard_size: usize,
    /// Digest of the backbone weights (as reported by the backbone).
    pub weights_digest: String,
    /// Digest of the normalization statistics the maps were divided by (spec §3).
    pub norm_stats_digest: String,
}

impl StorageInfo {
    /// Default images per shard: 32 (≈ 26 MB per conv4 shard file in f16).
    pub const DEFAULT_SHARD_SIZE: usize = 32;
}
