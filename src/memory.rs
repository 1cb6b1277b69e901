//! Giving back the memory a full reload freed.
//!
//! A start-up with a million hosts allocates and frees hundreds of
//! megabytes of short-lived lists (the listing of `hosts/`, the owner
//! decision, the rows of the state database) between the long-lived
//! tables. glibc's allocator returns freed memory to the system only from
//! the top of its heaps, so most of it stayed resident: about a third of
//! the idle RSS at 1,000,000 hosts (docs/performance.md). `malloc_trim`
//! releases the free pages wherever they are.

/// Releases the allocator's free pages (glibc's `malloc_trim`); nothing
/// elsewhere. Takes milliseconds per hundred megabytes: call it after a
/// full reload, on a blocking thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointer from us; it locks each arena
    // and hands its free pages back (madvise), which is safe to do while
    // other threads allocate.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Other allocators return memory their own way.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() {}
