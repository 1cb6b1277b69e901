//! Random trace and span ids from a per-thread generator: seeded once per
//! thread from the operating system (getrandom), then no syscall per
//! request. Ids need to be unique and unpredictable enough not to collide
//! across services (W3C Trace Context §3.2.2.3), not secret.

use std::cell::Cell;

/// wyrand's state increment and multiplier (Wang Yi's wyhash family): a
/// 64-bit generator passing BigCrush in one multiply.
const WY_INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const WY_MIX: u64 = 0xe703_7ed1_a0b4_28db;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    // No OS randomness (never seen on Linux): RandomState is seeded from
    // the OS once per process and varies per call, good enough for ids.
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The next 64 random bits of this thread.
fn next_u64() -> u64 {
    STATE
        .try_with(|state| {
            let s = state.get().wrapping_add(WY_INCREMENT);
            state.set(s);
            let t = u128::from(s) * u128::from(s ^ WY_MIX);
            ((t >> 64) as u64) ^ (t as u64)
        })
        // A thread tearing down its locals: fresh seed each time.
        .unwrap_or_else(|_| seed())
}

/// A non-zero random 64-bit value (an all-zero id is invalid).
fn non_zero() -> u64 {
    loop {
        let n = next_u64();
        if n != 0 {
            return n;
        }
    }
}

/// A new random 16-byte trace id, never all zero.
pub(crate) fn trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&next_u64().to_be_bytes());
    id[8..].copy_from_slice(&non_zero().to_be_bytes());
    id
}

/// A new random 8-byte span id, never all zero.
pub(crate) fn span_id() -> [u8; 8] {
    non_zero().to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_zero_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = span_id();
            assert_ne!(id, [0; 8]);
            assert!(seen.insert(id), "a span id came twice");
        }
        assert_ne!(trace_id(), trace_id());
        assert_ne!(trace_id(), [0; 16]);
    }

    #[test]
    fn threads_do_not_share_a_sequence() {
        let here = span_id();
        let there = std::thread::spawn(span_id).join().expect("thread");
        assert_ne!(here, there);
    }
}
