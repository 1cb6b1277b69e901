//! The randomness rustls asks for (server randoms, session-ticket nonces
//! and age offsets): the kernel's, read in blocks instead of one
//! `getrandom` per ask.
//!
//! Why: a resumed TLS 1.3 handshake asked five times (a `getrandom`
//! syscall each, about 1.5 µs) on top of what ring asks for itself, a few
//! per cent of a handshake's CPU. OpenSSL and BoringSSL avoid the same
//! cost with per-thread generators seeded from the kernel; this keeps the
//! kernel's bytes themselves and only batches the reads.
//!
//! Each request thread has its own block (no lock, no sharing). Bytes are
//! handed out once and wiped as they are: what a later memory disclosure
//! could read is only bytes not yet used. A forked child would inherit a
//! block, but Elsinore forks only to `exec` a handler (which never sees
//! the block); nothing in this process uses TLS after a fork.

use std::cell::RefCell;

use rustls::crypto::{GetRandomFailed, SecureRandom};

/// Bytes fetched from the kernel at once.
const BLOCK: usize = 512;
/// Asks larger than this go to the kernel directly.
const LARGEST_FROM_BLOCK: usize = 64;

/// The kernel's random bytes, read `BLOCK` at a time per thread.
#[derive(Debug)]
pub(crate) struct BufferedRandom;

/// The one instance (rustls keeps a `&'static dyn SecureRandom`).
pub(crate) static BUFFERED_RANDOM: BufferedRandom = BufferedRandom;

struct Block {
    bytes: [u8; BLOCK],
    /// Bytes before this index were handed out (and wiped).
    used: usize,
}

thread_local! {
    static BLOCK_OF_THREAD: RefCell<Block> = const {
        RefCell::new(Block { bytes: [0; BLOCK], used: BLOCK })
    };
}

impl SecureRandom for BufferedRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        if buf.len() > LARGEST_FROM_BLOCK {
            return getrandom::fill(buf).map_err(|_| GetRandomFailed);
        }
        BLOCK_OF_THREAD.with(|block| {
            let mut block = block.borrow_mut();
            if BLOCK - block.used < buf.len() {
                getrandom::fill(&mut block.bytes).map_err(|_| GetRandomFailed)?;
                block.used = 0;
            }
            let start = block.used;
            let end = start + buf.len();
            buf.copy_from_slice(&block.bytes[start..end]);
            block.bytes[start..end].fill(0);
            block.used = end;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_get_different_bytes_and_handed_out_bytes_are_wiped() {
        let mut seen = std::collections::HashSet::new();
        // More than a block's worth, so that it is refilled on the way.
        for _ in 0..(3 * BLOCK / 32) {
            let mut out = [0u8; 32];
            BUFFERED_RANDOM.fill(&mut out).expect("random bytes");
            assert!(seen.insert(out), "the same 32 bytes were handed out twice");
        }
        BLOCK_OF_THREAD.with(|block| {
            let block = block.borrow();
            assert!(
                block.bytes[..block.used].iter().all(|b| *b == 0),
                "bytes already handed out are still in the block"
            );
        });
    }

    #[test]
    fn large_asks_and_a_block_boundary_are_filled() {
        let mut large = [0u8; 200];
        BUFFERED_RANDOM.fill(&mut large).expect("random bytes");
        assert!(large.iter().any(|b| *b != 0));
        // Leave fewer bytes in the block than the next ask needs.
        let mut odd = [0u8; 7];
        for _ in 0..(BLOCK / 7) {
            BUFFERED_RANDOM.fill(&mut odd).expect("random bytes");
        }
        let mut next = [0u8; 48];
        BUFFERED_RANDOM.fill(&mut next).expect("random bytes");
        assert!(next.iter().any(|b| *b != 0));
    }
}
