//! The GPU that device-generic tests run on, or why they skip.
//!
//! Standalone (uses only `candle_core` and `expgraph_backbone`), so that other crates' tests can
//! include it with
//! `#[path = "../../expgraph-backbone/tests/common/gpu.rs"] mod gpu;`.
//!
//! Conventions for GPU tests: every GPU test function has `gpu` in its name (a runner selects them
//! with the test filter `gpu`), starts with `let Some(device) = gpu::gpu_device() else { return };`
//! and runs its model on `device`.
//!
//! * `EXPGRAPH_TEST_GPU`: the device to test (default `cuda:0`; any name
//!   `expgraph_backbone::parse_device` accepts).
//! * `EXPGRAPH_REQUIRE_GPU=1`: a device that cannot be opened fails the test instead of skipping
//!   it, so that a run on a GPU machine cannot pass by skipping silently.
#![allow(dead_code)] // each test binary uses a part

use candle_core::Device;

/// Environment variable naming the device GPU tests run on.
pub const TEST_GPU_VAR: &str = "EXPGRAPH_TEST_GPU";

/// Environment variable that turns a missing GPU from a skip into a failure (value `1`).
pub const REQUIRE_GPU_VAR: &str = "EXPGRAPH_REQUIRE_GPU";

/// The device a GPU test runs on: `$EXPGRAPH_TEST_GPU` (default `cuda:0`), opened with
/// `expgraph_backbone::parse_device`. When it cannot be opened (no `cuda` feature, no driver, no
/// GPU), prints `SKIPPED (no GPU): <error>` to stderr and returns `None`, unless
/// `EXPGRAPH_REQUIRE_GPU=1`, in which case it panics with the error.
pub fn gpu_device() -> Option<Device> {
    let name = std::env::var(TEST_GPU_VAR).ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "cuda:0".into());
    match expgraph_backbone::parse_device(&name) {
        Ok(device) => {
            eprintln!("GPU test on {}", expgraph_backbone::device_label(&device));
            Some(device)
        }
        Err(e) if gpu_required() => panic!("{REQUIRE_GPU_VAR}=1 but the GPU cannot be used: {e}"),
        Err(e) => {
            eprintln!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

/// Whether `EXPGRAPH_REQUIRE_GPU=1`.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_VAR).is_ok_and(|v| v.trim() == "1")
}
