//! Handing freed heap back to the system after a flood of connections.
//! glibc's allocator keeps freed pages mapped in its per-thread arenas, so
//! without this the memory of a thousand closed connections stays in RSS
//! for good (it is reused, so this is about what operators and the OOM
//! killer see, not a leak). The trim itself is
//! [`crate::telemetry::release_freed_memory`].

/// Open connections that must have gone since the high-water mark before
/// memory is handed back (a trim walks the whole heap: not for every close).
pub(super) const TRIM_AFTER: usize = 256;
