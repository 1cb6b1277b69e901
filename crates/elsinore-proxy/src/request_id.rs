//! `X-Request-Id`: keep a sane one from the client, else make one.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

const MAX_LEN: usize = 128;

/// Generates ids unique within this process and, with overwhelming
/// probability, across restarts: a random 32-bit prefix chosen at startup
/// and a counter. Cheaper than a UUID and just as useful to grep for.
#[derive(Debug)]
pub(crate) struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        // RandomState is seeded from the OS; no extra dependency needed.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            prefix: (seed >> 32) as u32 ^ seed as u32,
            counter: AtomicU64::new(0),
        }
    }

    /// The client's id if it is sane, else a new one.
    pub(crate) fn for_request(&self, incoming: Option<&HeaderValue>) -> HeaderValue {
        match incoming {
            Some(value) if is_sane(value.as_bytes()) => value.clone(),
            _ => self.generate(),
        }
    }

    fn generate(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // `{:08x}{:012x}` by hand: this runs on every request, and going
        // through `format!` cost more than the rest of the id handling.
        let mut text = [0u8; 20];
        hex_into(&mut text[..8], u64::from(self.prefix));
        hex_into(&mut text[8..], n & 0xffff_ffff_ffff);
        // Reference-counted from the start: the id is cloned into the
        // handler's request, the response and the log, and a plain `Vec`
        // backed value would allocate again at its first clone.
        HeaderValue::from_maybe_shared(Bytes::from_owner(text))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
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
        let ids = RequestIds {
            prefix: 0xace9_43c9,
            counter: AtomicU64::new(0x5),
        };
        assert_eq!(ids.for_request(None), "ace943c9000000000005");
        let ids = RequestIds {
            prefix: 0x1,
            counter: AtomicU64::new(0x1_0000_0000_00ab),
        };
        assert_eq!(
            ids.for_request(None),
            "000000010000000000ab",
            "counter wraps at 48 bits"
        );
    }

    #[test]
    fn generated_ids_are_unique() {
        let ids = RequestIds::new();
        let a = ids.for_request(None);
        let b = ids.for_request(None);
        assert_ne!(a, b);
    }
}
