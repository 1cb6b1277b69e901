//! `X-Request-Id`: keep a sane one from the client, else make one.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

const MAX_LEN: usize = 128;

/// Generates ids unique within this process and, with overwhelming
/// probability, across restarts: a random 32-bit prefix chosen at startup
/// and a counter. Cheaper than a UUID and just as useful to grep for.
///
/// Each thread takes [`BATCH`] counter values at a time and writes their
/// ids into one buffer: a request's id is then a slice of that shared
/// allocation (a reference count), not an allocation of its own.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
    /// Tells this generator's batches from another's on the same thread
    /// (several servers in one process, as in tests).
    instance: u64,
}

/// Ids made at a time, per thread.
const BATCH: usize = 64;
/// `{prefix:08x}{counter:012x}`.
const ID_LEN: usize = 20;

/// Distinct for every [`RequestIds`] of the process; 0 is no generator.
static INSTANCES: AtomicU64 = AtomicU64::new(1);

/// The ids this thread made and has not handed out yet.
struct Batch {
    instance: u64,
    ids: Bytes,
    next: usize,
}

thread_local! {
    static BATCH_OF_THREAD: RefCell<Batch> = const {
        RefCell::new(Batch { instance: 0, ids: Bytes::new(), next: BATCH })
    };
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIds {
    /// A new generator: a random prefix, the counter at 0.
    pub fn new() -> Self {
        // RandomState is seeded from the OS; no extra dependency needed.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::starting_at((seed >> 32) as u32 ^ seed as u32, 0)
    }

    fn starting_at(prefix: u32, counter: u64) -> Self {
        Self {
            prefix,
            counter: AtomicU64::new(counter),
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The client's id if it is sane, else a new one.
    pub fn for_request(&self, incoming: Option<&HeaderValue>) -> HeaderValue {
        match incoming {
            Some(value) if is_sane(value.as_bytes()) => value.clone(),
            _ => self.generate(),
        }
    }

    fn generate(&self) -> HeaderValue {
        let id = BATCH_OF_THREAD
            .try_with(|batch| {
                let mut batch = batch.borrow_mut();
                if batch.instance != self.instance || batch.next == BATCH {
                    *batch = self.batch();
                }
                let start = batch.next * ID_LEN;
                batch.next += 1;
                batch.ids.slice(start..start + ID_LEN)
            })
            // A thread already tearing down its locals: a batch of one.
            .unwrap_or_else(|_| self.batch().ids.slice(..ID_LEN));
        HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// The next [`BATCH`] ids, in one buffer.
    fn batch(&self) -> Batch {
        let first = self.counter.fetch_add(BATCH as u64, Ordering::Relaxed);
        // `{:08x}{:012x}` by hand: this runs for every request, and going
        // through `format!` cost more than the rest of the id handling.
        let mut text = vec![0u8; BATCH * ID_LEN];
        for (n, id) in (first..).zip(text.chunks_exact_mut(ID_LEN)) {
            hex_into(&mut id[..8], u64::from(self.prefix));
            hex_into(&mut id[8..], n & 0xffff_ffff_ffff);
        }
        // Shared from the first slice on: every id is cloned into the
        // handler's request, the response and the log.
        Batch {
            instance: self.instance,
            ids: Bytes::from(text),
            next: 0,
        }
    }
}

/// Writes the low `out.len() * 4` bits of `n` into `out` as lower-case hex,
/// zero-padded.
fn hex_into(out: &mut [u8], mut n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for digit in out.iter_mut().rev() {
        *digit = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Short and made of characters that are safe in logs and URLs.
fn is_sane(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'=' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        let ids = RequestIds::new();
        let sane = HeaderValue::from_static("abc-123_X.y:z");
        assert_eq!(ids.for_request(Some(&sane)), sane);
        for bad in ["", "has space", "quote\"", &"x".repeat(129)] {
            let value = HeaderValue::from_str(bad).expect("header");
            let id = ids.for_request(Some(&value));
            assert_ne!(id, value);
            assert_eq!(id.len(), 20);
        }
    }

    #[test]
    fn generated_ids_are_prefix_and_counter_in_hex() {
        let ids = RequestIds::starting_at(0xace9_43c9, 0x5);
        assert_eq!(ids.for_request(None), "ace943c9000000000005");
        assert_eq!(ids.for_request(None), "ace943c9000000000006");
        let ids = RequestIds::starting_at(0x1, 0x1_0000_0000_00ab);
        assert_eq!(
            ids.for_request(None),
            "000000010000000000ab",
            "counter wraps at 48 bits"
        );
    }

    #[test]
    fn generated_ids_are_unique_across_batches_threads_and_generators() {
        let ids = RequestIds::new();
        let other = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        // Interleaved on one thread: each generator keeps its own batch.
        for _ in 0..3 * BATCH {
            for (generator, id) in [
                (&ids, ids.for_request(None)),
                (&other, other.for_request(None)),
            ] {
                let prefix = format!("{:08x}", generator.prefix);
                assert!(
                    id.as_bytes().starts_with(prefix.as_bytes()),
                    "{id:?} is not {prefix}…"
                );
                assert!(seen.insert(id), "an id came twice");
            }
        }
        let from_threads: Vec<HeaderValue> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..2 * BATCH)
                            .map(|_| ids.for_request(None))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("worker"))
                .collect()
        });
        for id in from_threads {
            assert!(seen.insert(id), "an id came twice");
        }
    }
}
