//! The allocator of expgraph's binaries (the CLI, the xtask, the benches): mimalloc, set to keep
//! freed memory for [`KEEP_FREED`] before it goes back to the OS.
//!
//! A forward pass allocates its activation maps, padded inputs and transform buffers, megabytes
//! each, and frees them as it goes. mimalloc hands freed memory back to the OS after 10 ms by
//! default (100 ms in its arenas), so the next forward pass page-faulted the same memory in
//! again and the kernel zeroed it: ResNet-50 to `layer4` on the 2-core Zen 4 machine made about
//! 2,800 minor faults per forward pass at batch 1 and 12,000 at batch 8 (with transparent huge
//! pages, 2 MiB zeroed per fault). Kept for 10 s it makes none, and runs about 15 % faster (three
//! processes of each, in turns: 48–53 → 40–46 ms per image at batch 1, 43–45 → 37–39 at batch 8).
//! ONNX Runtime keeps its memory in an arena, for the same reason.
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: expgraph_alloc::MiMalloc = expgraph_alloc::MiMalloc;
//!
//! fn main() {
//!     expgraph_alloc::keep_freed_memory();
//!     // …
//! }
//! ```
//!
//! Libraries set no allocator; a program that uses expgraph's crates with another one loses
//! only this speed.

use std::time::Duration;

pub use mimalloc::MiMalloc;

/// How long freed memory stays with the process before mimalloc returns it to the OS (its
/// arenas wait ten times as long). Longer than the pauses between forward passes in a pipeline
/// or a benchmark's turns; memory left unused for longer still goes back.
pub const KEEP_FREED: Duration = Duration::from_secs(10);

/// mimalloc's `mi_option_purge_delay` (milliseconds; the same position in its v2 and v3
/// option lists, which the bindings name only in part).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc to keep freed memory for [`KEEP_FREED`] (the default is 10 ms). Call it first
/// in `main`, in a binary whose global allocator is [`MiMalloc`]; elsewhere it changes nothing
/// but an unused setting.
pub fn keep_freed_memory() {
    set_purge_delay_ms(KEEP_FREED.as_millis() as i64);
}

/// Sets mimalloc's purge delay in milliseconds (0: at once, -1: never). For tests.
#[doc(hidden)]
pub fn set_purge_delay_ms(ms: i64) {
    // SAFETY: sets one of mimalloc's options, a value it reads whenever it decides to purge;
    // any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms as std::ffi::c_long) };
}
