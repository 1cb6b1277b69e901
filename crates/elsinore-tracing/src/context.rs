//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` and `tracestate` a request came with, checked, and the
//! ones Elsinore sends the handler.
//!
//! Only version `00` is understood. A `traceparent` that is not exactly
//! `00-<32 lower-case hex, not all 0>-<16 lower-case hex, not all 0>-<2 hex>`,
//! or that comes twice, is ignored and a new trace started: continuing a
//! malformed one would hand the handler (and the collector) ids nobody
//! can match. `tracestate` belongs to the trace it came with: it is kept
//! only with a valid `traceparent`, and only up to [`MAX_TRACESTATE`]
//! bytes.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ids;
use crate::sampler::Sampler;

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The longest `tracestate` passed on (W3C asks to propagate at least
/// 512 bytes); a longer one is dropped whole rather than cut, since a cut
/// list member would be corrupt.
pub const MAX_TRACESTATE: usize = 512;

/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// The trace a request belongs to and Elsinore's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace: the client's, or a new one.
    pub trace_id: [u8; 16],
    /// Elsinore's span for this request: the parent the handler is told.
    pub span_id: [u8; 8],
    /// The client's span, when the request continued a trace.
    pub remote_parent: Option<[u8; 8]>,
    /// Whether this request's spans are recorded and exported.
    pub sampled: bool,
    /// The client's `tracestate`, kept only with a valid `traceparent`.
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The context of a request with `headers`: its trace continued when
    /// its `traceparent` is valid (the sampled flag then decides), else a
    /// new trace that `sampler` decides on.
    pub fn of_request(headers: &HeaderMap, sampler: &Sampler) -> Self {
        match parse_traceparent(headers) {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                span_id: ids::span_id(),
                remote_parent: Some(parent.span_id),
                sampled: parent.sampled,
                tracestate: tracestate(headers),
            },
            None => {
                let trace_id = ids::trace_id();
                Self {
                    trace_id,
                    span_id: ids::span_id(),
                    remote_parent: None,
                    sampled: sampler.samples(&trace_id),
                    tracestate: None,
                }
            }
        }
    }

    /// The `traceparent` for the handler: this trace, Elsinore's span as
    /// the parent, the sampling decision as the flag.
    pub fn traceparent(&self) -> Traceparent {
        let mut text = [0u8; TRACEPARENT_LEN];
        text[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        hex_into(&self.span_id, &mut text[36..52]);
        text[52] = b'-';
        text[53] = b'0';
        text[54] = if self.sampled { b'1' } else { b'0' };
        Traceparent(text)
    }

    /// The trace id as 32 lower-case hex digits (the access log's
    /// `trace=`).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut text = [0u8; 32];
        hex_into(&self.trace_id, &mut text);
        text
    }
}

/// A `traceparent` value Elsinore made: lower-case hex and dashes only,
/// so always a valid header value, without the allocation of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent([u8; TRACEPARENT_LEN]);

impl Traceparent {
    /// The value's bytes (ASCII).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as text.
    pub fn as_str(&self) -> &str {
        // Hex and dashes: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A valid incoming `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// The one `traceparent` of `headers`, if there is exactly one and it is
/// valid version 00.
fn parse_traceparent(headers: &HeaderMap) -> Option<Parent> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse(value.as_bytes())
}

fn parse(text: &[u8]) -> Option<Parent> {
    if text.len() != TRACEPARENT_LEN || &text[..3] != b"00-" || text[35] != b'-' || text[52] != b'-'
    {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    let mut flags = [0u8; 1];
    hex_from(&text[3..35], &mut trace_id)?;
    hex_from(&text[36..52], &mut span_id)?;
    hex_from(&text[53..55], &mut flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

/// The client's `tracestate` (several headers joined with `,`, as the
/// spec allows splitting it), if it fits in [`MAX_TRACESTATE`] bytes.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return (first.len() <= MAX_TRACESTATE && !first.is_empty()).then(|| first.clone());
    };
    let mut joined = Vec::with_capacity(MAX_TRACESTATE);
    for value in [first, second].into_iter().chain(values) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value.as_bytes());
        if joined.len() > MAX_TRACESTATE {
            return None;
        }
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `out` from lower-case hex `text` (twice as long); `None` on any other
/// character (upper case is invalid in version 00).
fn hex_from(text: &[u8], out: &mut [u8]) -> Option<()> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                (*name).clone(),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_parent() {
        let map = headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, "congo=t61rcWkgMzE")]);
        let cx = TraceContext::of_request(&map, &Sampler::new(0.0));
        assert_eq!(&cx.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(cx.sampled, "the incoming flag wins over ratio 0");
        assert_eq!(
            cx.tracestate,
            Some(HeaderValue::from_static("congo=t61rcWkgMzE"))
        );
        let sent = cx.traceparent();
        let sent = sent.as_str();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
        assert_eq!(parse(sent.as_bytes()).map(|p| p.span_id), Some(cx.span_id));
    }

    #[test]
    fn an_unsampled_parent_stays_unsampled_whatever_the_ratio() {
        let unsampled = VALID.replace("-01", "-00");
        let map = headers(&[(&TRACEPARENT, &unsampled)]);
        let cx = TraceContext::of_request(&map, &Sampler::new(1.0));
        assert!(!cx.sampled);
        assert!(cx.traceparent().as_str().ends_with("-00"));
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace_and_drop_tracestate() {
        let bad = [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "",
        ];
        for value in bad {
            let map = headers(&[(&TRACEPARENT, value), (&TRACESTATE, "a=b")]);
            let cx = TraceContext::of_request(&map, &Sampler::new(0.0));
            assert_ne!(
                &cx.trace_id_hex(),
                b"4bf92f3577b34da6a3ce929d0e0e4736",
                "{value}"
            );
            assert_eq!(cx.remote_parent, None, "{value}");
            assert_eq!(cx.tracestate, None, "{value}");
        }
        let twice = headers(&[(&TRACEPARENT, VALID), (&TRACEPARENT, VALID)]);
        let cx = TraceContext::of_request(&twice, &Sampler::new(0.0));
        assert_eq!(cx.remote_parent, None, "two traceparent headers");
    }

    #[test]
    fn a_new_trace_has_a_valid_traceparent() {
        let cx = TraceContext::of_request(&HeaderMap::new(), &Sampler::new(0.0));
        let sent = cx.traceparent();
        let parsed = parse(sent.as_bytes()).expect("valid");
        assert_eq!(parsed.trace_id, cx.trace_id);
        assert!(!parsed.sampled);
        let sampled = TraceContext::of_request(&HeaderMap::new(), &Sampler::new(1.0));
        assert!(sampled.sampled);
    }

    #[test]
    fn long_or_split_tracestate() {
        let long = "a=".to_owned() + &"x".repeat(MAX_TRACESTATE);
        let map = headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, &long)]);
        assert_eq!(
            TraceContext::of_request(&map, &Sampler::new(0.0)).tracestate,
            None
        );
        let split = headers(&[
            (&TRACEPARENT, VALID),
            (&TRACESTATE, "a=1"),
            (&TRACESTATE, "b=2"),
        ]);
        assert_eq!(
            TraceContext::of_request(&split, &Sampler::new(0.0)).tracestate,
            Some(HeaderValue::from_static("a=1,b=2"))
        );
    }
}
