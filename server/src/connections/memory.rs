//! Handing freed heap back to the system after a flood of connections.
//! glibc's allocator keeps freed pages mapped in its per-thread arenas, so
//! without this the memory of a thousand closed connections stays in RSS
//! for good (it is reused, so this is about what operators and the OOM
//! killer see, not a leak).

/// Open connections that must have gone since the high-water mark before
/// memory is handed back (a trim walks the whole heap: not for every close).
pub(super) const TRIM_AFTER: usize = 256;

/// Returns free heap pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(super) fn release_freed() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return memory on their own terms.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn release_freed() {}
