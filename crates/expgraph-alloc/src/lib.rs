//! The allocator of expgraph's binaries (the CLI, the xtask, the benches): mimalloc, set to keep
//! freed memory for [`KEEP_FREED`] before it goes back to the OS.
//!
//! A forward pass allocates its activation maps, padded inputs and transform buffers, megabytes
//! each, and frees them as it goes. mimalloc hands freed memory back to the OS after 10 ms by
//! default (100 ms in its arenas), so the next forward pass page-faulted the same memory in
//! again and the kernel zeroed it: ResNet-50 to `layer4` on the 2-core Zen 4 machine made
//! 2,200–3,500 minor faults per forward pass at batch 1 and 10,500–12,900 at batch 8 (with
//! transparent huge pages, 2 MiB zeroed per fault). Kept for 2 s it makes none at batch 1 and
//! 500–700 at batch 8, and runs about 10 % faster (three processes of each, in turns, back to
//! back: 46–54 → 42–45 ms per image at batch 1, medians 51.2 → 44.9; 43–48 → 38.5–44 at batch
//! 8, medians 46.2 → 41.4). ONNX Runtime keeps its memory in an arena, for the same reason.
//!
//! Memory kept is memory held: `expgraph run --limit 120 --iterations 2` peaked at 781 MB
//! against 704 MB with mimalloc's default (at 10 s: 945 MB), its extraction took 39.4 s against
//! 46.3 s, and its graphs are the same bytes.
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
/// arenas wait ten times as long): longer than a forward pass, so that the next one finds its
/// buffers, and short enough that what a stage no longer uses goes back soon.
pub const KEEP_FREED: Duration = Duration::from_secs(2);

/// mimalloc's `mi_option_purge_delay` (milliseconds; the same position in its v2 and v3
/// option lists, which the bindings name only in part).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc to keep freed memory for [`KEEP_FREED`] (the default is 10 ms), unless the
/// environment sets `MIMALLOC_PURGE_DELAY` (milliseconds; mimalloc reads it at start), which
/// stands. Call it first in `main`, in a binary whose global allocator is [`MiMalloc`];
/// elsewhere it changes nothing but an unused setting.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        set_purge_delay_ms(KEEP_FREED.as_millis() as i64);
    }
}

/// mimalloc's purge delay now, in milliseconds.
pub fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reads one of mimalloc's options.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
}

/// Sets mimalloc's purge delay in milliseconds (0: at once, -1: never). For tests.
#[doc(hidden)]
pub fn set_purge_delay_ms(ms: i64) {
    // SAFETY: sets one of mimalloc's options, a value it reads whenever it decides to purge;
    // any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, ms as std::ffi::c_long) };
}
