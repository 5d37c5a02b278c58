//! An `LD_PRELOAD` library that hides AVX-512 from a process, for
//! `cargo xtask bench-backbone --isa avx2`: its constructor turns on CPUID faulting
//! (`arch_prctl(ARCH_SET_CPUID, 0)`, Linux ≥ 4.12, where `/proc/cpuinfo` lists `cpuid_fault`),
//! and its `SIGSEGV` handler executes each `cpuid` on the program's behalf with the AVX-512 bits
//! (and AMX, AVX-VNNI) cleared. Every runtime dispatcher of the process — Rust's
//! `is_x86_feature_detected!`, the `gemm` crate, ONNX Runtime's MLAS, NumPy — then picks its
//! AVX2 code, so both engines of the comparison run what an AVX2 machine runs (on this machine's
//! cores). The setting is per thread and inherited by the threads a thread starts; `exec` resets
//! it, and the constructor runs again in every process `LD_PRELOAD` reaches.
//!
//! Built by the xtask with plain `rustc` (no dependencies: the few glibc symbols and x86-64
//! layouts it needs are declared here). A measurement tool only; no crate links it.

use std::arch::x86_64::{CpuidResult, __cpuid_count};
use std::ptr::null_mut;

/// `arch_prctl(2)` and its `ARCH_SET_CPUID` code (`<asm/prctl.h>`).
const SYS_ARCH_PRCTL: i64 = 158;
const ARCH_SET_CPUID: i64 = 0x1012;
const SIGSEGV: i32 = 11;
const SA_SIGINFO: i32 = 4;
/// glibc's x86-64 `ucontext_t`: `uc_flags`, `uc_link` and `uc_stack` (40 bytes), then the
/// general registers, in the order of `<sys/ucontext.h>`'s `REG_*`.
const GREGS_OFFSET: usize = 40;
const REG_RBX: usize = 11;
const REG_RDX: usize = 12;
const REG_RAX: usize = 13;
const REG_RCX: usize = 14;
const REG_RIP: usize = 16;

/// glibc's x86-64 `struct sigaction` (glibc fills `sa_restorer` itself).
#[repr(C)]
struct SigAction {
    handler: usize,
    mask: [u64; 16],
    flags: i32,
    restorer: usize,
}

extern "C" {
    fn sigaction(signal: i32, action: *const SigAction, old: *mut SigAction) -> i32;
    fn syscall(number: i64, ...) -> i64;
}

/// Allows (`true`) or faults (`false`) `cpuid` in the calling thread.
unsafe fn allow_cpuid(allow: bool) -> i64 {
    unsafe { syscall(SYS_ARCH_PRCTL, ARCH_SET_CPUID, i64::from(allow)) }
}

/// Clears the AVX-512 family (and AMX, AVX-VNNI) from leaf 7's answer.
fn hide_avx512(leaf: u32, sub: u32, r: &mut CpuidResult) {
    let bits = |list: &[u32]| list.iter().fold(0u32, |m, b| m | (1 << b));
    if (leaf, sub) == (7, 0) {
        // EBX: F, DQ, IFMA, PF, ER, CD, BW, VL. ECX: VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ.
        // EDX: 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, FP16, AMX-TILE, AMX-INT8.
        r.ebx &= !bits(&[16, 17, 21, 26, 27, 28, 30, 31]);
        r.ecx &= !bits(&[1, 6, 11, 12, 14]);
        r.edx &= !bits(&[2, 3, 8, 22, 23, 24, 25]);
    } else if (leaf, sub) == (7, 1) {
        // EAX: AVX-VNNI, AVX512-BF16.
        r.eax &= !bits(&[4, 5]);
    }
}

/// Executes a faulting `cpuid` for the program, or gives any other fault its default action.
extern "C" fn on_segv(_signal: i32, _info: *mut u8, context: *mut u8) {
    unsafe {
        let regs = context.add(GREGS_OFFSET) as *mut u64;
        let rip = *regs.add(REG_RIP) as *const u8;
        if *rip == 0x0f && *rip.add(1) == 0xa2 {
            let (leaf, sub) = (*regs.add(REG_RAX) as u32, *regs.add(REG_RCX) as u32);
            allow_cpuid(true);
            let mut r = __cpuid_count(leaf, sub);
            allow_cpuid(false);
            hide_avx512(leaf, sub, &mut r);
            *regs.add(REG_RAX) = u64::from(r.eax);
            *regs.add(REG_RBX) = u64::from(r.ebx);
            *regs.add(REG_RCX) = u64::from(r.ecx);
            *regs.add(REG_RDX) = u64::from(r.edx);
            *regs.add(REG_RIP) += 2;
            return;
        }
        // Not ours: the default action, and the instruction faults again.
        let default = SigAction { handler: 0, mask: [0; 16], flags: 0, restorer: 0 };
        sigaction(SIGSEGV, &default, null_mut());
    }
}

extern "C" fn init() {
    unsafe {
        let action = SigAction { handler: on_segv as *const () as usize, mask: [0; 16], flags: SA_SIGINFO, restorer: 0 };
        if sigaction(SIGSEGV, &action, null_mut()) == 0 {
            // Fails (and changes nothing) where the CPU or kernel has no CPUID faulting; the
            // xtask then sees AVX-512 still present and says so.
            allow_cpuid(false);
        }
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
