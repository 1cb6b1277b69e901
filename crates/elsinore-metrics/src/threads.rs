//! How per-thread state is split between the request threads, passed
//! explicitly: the thread count goes to whatever creates split state (a
//! series here, a handler pool in the proxy), and the index of the thread
//! doing the work goes with the work (the proxy's connection info), never
//! through a process-wide or thread-local setting a library reads on its
//! own. Two servers in one process (tests, benchmarks) can then split
//! differently, and nothing depends on a call made "before any request".

/// How many request threads serve, fixed when the server starts: state
/// split per thread has [`RequestThreads::shards`] parts, one per request
/// thread and part 0 for every other thread (the main runtime, blocking
/// tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestThreads(usize);

impl RequestThreads {
    /// `count` request threads (0: everything runs on the main runtime).
    pub const fn new(count: usize) -> Self {
        Self(count)
    }

    /// The number of request threads.
    pub const fn count(self) -> usize {
        self.0
    }

    /// Parts of split state: one per request thread, plus part 0.
    pub const fn shards(self) -> usize {
        self.0 + 1
    }

    /// The shard of request thread `index` (0-based).
    pub const fn shard(self, index: usize) -> ThreadShard {
        ThreadShard::of_request_thread(index)
    }
}

/// The part of split state the work in hand uses: that of the request
/// thread it runs on, or part 0 for any other thread. Set by the code
/// that owns the thread (the server's accept loop) and handed down with
/// the connection. A shard past the parts of some state is clamped to its
/// last part: still correct, only shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadShard(usize);

impl ThreadShard {
    /// Any thread that is not a request thread.
    pub const OTHER: Self = Self(0);

    /// Request thread `index` (0-based).
    pub const fn of_request_thread(index: usize) -> Self {
        Self(index.saturating_add(1))
    }

    /// Request thread `thread`, or [`ThreadShard::OTHER`] without one.
    pub const fn of(thread: Option<usize>) -> Self {
        match thread {
            Some(index) => Self::of_request_thread(index),
            None => Self::OTHER,
        }
    }

    /// The index of this shard among `parts` parts.
    pub fn index_in(self, parts: usize) -> usize {
        self.0.min(parts.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_threads_have_their_own_shard_and_others_share_part_0() {
        let threads = RequestThreads::new(2);
        assert_eq!(threads.shards(), 3);
        assert_eq!(ThreadShard::OTHER.index_in(threads.shards()), 0);
        assert_eq!(ThreadShard::of(None), ThreadShard::OTHER);
        assert_eq!(threads.shard(0).index_in(3), 1);
        assert_eq!(ThreadShard::of(Some(1)).index_in(3), 2);
        // Past the parts: the last one.
        assert_eq!(threads.shard(5).index_in(3), 2);
        assert_eq!(threads.shard(5).index_in(1), 0);
    }
}
