//! Cache hints: ask the CPU to start fetching a line before it is needed.
//! The one `unsafe` block is a hint instruction that cannot fault.

#![allow(unsafe_code)]

/// Asks the CPU to start fetching the cache line at `p`, for writing
/// (exclusive, `PREFETCHW`) when `WRITE`, for reading otherwise. Any
/// address will do: a prefetch never faults.
///
/// ```
/// let x = 7u64;
/// comesg_sys::hint::prefetch::<false>(&x as *const u64 as *const u8);
/// ```
#[inline]
pub fn prefetch<const WRITE: bool>(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address,
    // and changes no architectural state (x86-64 CPUs without PREFETCHW
    // decode 0F 0D as a no-op hint).
    unsafe {
        if WRITE {
            core::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
        } else {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
