//! HTTP/1.1 message heads to and from a handler: the request head written
//! into one buffer, the response head parsed with `httparse`.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::ExchangeError;
use crate::headers::{connection_lists, ContextHeaders};

/// Response headers a handler may send at most (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The largest response head taken from a handler. nginx's own default
/// (`proxy_buffer_size`) is 4 or 8 KiB; this is far above anything a
/// working handler sends and bounds what a broken one makes us buffer.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// `parts` as an HTTP/1.1 request head (origin-form target, header names
/// as the map holds them: lower case), `context` after the request's own
/// headers, ready to be written in one go.
pub(crate) fn encode_request(parts: &Parts, context: &ContextHeaders) -> Vec<u8> {
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |target| target.as_str());
    let size = parts.method.as_str().len()
        + target.len()
        + 14
        + parts
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
        + context.as_bytes().len();
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // Already header lines (`name: value\r\n`).
    head.extend_from_slice(context.as_bytes());
    head.extend_from_slice(b"\r\n");
    head
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0 for HEAD, 1xx, 204, 304).
    Length(u64),
    Chunked,
    /// Until the handler closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// The connection can carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// Parses a response head from the front of `buf`, removing it. `None`:
/// not all of it has arrived. An interim (1xx other than 101) response is
/// parsed, removed and reported as `Some(Err(Interim))` by the caller
/// looping: see [`Parsed`].
pub(crate) fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Parsed, ExchangeError> {
    // Uninitialised slots: initialising 100 of them (3.2 KB) cost more
    // than parsing a typical head.
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_BYTES {
                Err(ExchangeError::Malformed("response head too large"))
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Malformed("more than 100 response headers"))
        }
        Err(_) => return Err(ExchangeError::Malformed("invalid response head")),
    };
    let code = response.code.unwrap_or_default();
    let status =
        StatusCode::from_u16(code).map_err(|_| ExchangeError::Malformed("invalid status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        // 100 Continue, 103 Early Hints: the final answer follows.
        let _ = buf.split_to(length);
        return Ok(Parsed::Interim);
    }
    // The names now; for the values, where they sit in the head, so they
    // can share the head's bytes once it is split off instead of each
    // being copied.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(response.headers.len());
    let mut framing_names = FramingNames::default();
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| ExchangeError::Malformed("invalid header name"))?;
        framing_names.see(&name);
        let start = header.value.as_ptr() as usize - base;
        fields.push((name, start, start + header.value.len()));
    }
    let head: Bytes = buf.split_to(length).freeze();
    // Room for the one header Elsinore adds to every response (the
    // request id) without the map growing. Not more: a map of up to six
    // entries (~620 bytes) comes from glibc's per-thread cache, one of
    // twelve (~1.3 KB) from its shared bins at about ten times the cost,
    // so room for CORS and rate-limit headers would be paid by every
    // response of every project; those that add them grow it once.
    let mut headers = HeaderMap::with_capacity(fields.len() + 1);
    for (name, start, end) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| ExchangeError::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    let (framing, framed_keep_alive) = framing(status, version, &headers, framing_names, method)?;
    let keep_alive = framed_keep_alive && persistent(version, &headers, framing_names);
    Ok(Parsed::Final(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// What [`parse_response`] found at the front of the buffer.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A 1xx (not 101) response, now removed: read on.
    Interim,
    Final(ResponseHead),
}

/// Which of the headers that decide the framing a response has, noted
/// while its names are parsed: most have neither `Transfer-Encoding` nor
/// `Connection`, and looking an absent name up in the map costs a hash.
#[derive(Debug, Default, Clone, Copy)]
struct FramingNames {
    transfer_encoding: bool,
    content_length: bool,
    connection: bool,
}

impl FramingNames {
    fn see(&mut self, name: &HeaderName) {
        if name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
        } else if name == CONTENT_LENGTH {
            self.content_length = true;
        } else if name == CONNECTION {
            self.connection = true;
        }
    }
}

/// How the body after this head is delimited, and whether the framing
/// leaves the connection usable afterwards (RFC 9112 §6.3; hyper's
/// client decides the same way).
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    names: FramingNames,
    method: &Method,
) -> Result<(Framing, bool), ExchangeError> {
    // The connection is the handler's to switch: it never goes back.
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok((Framing::Length(0), false));
    }
    if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || method == Method::HEAD
    {
        return Ok((Framing::Length(0), true));
    }
    if names.transfer_encoding {
        if version == Version::HTTP_10 {
            return Err(ExchangeError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        // Both Transfer-Encoding and Content-Length: the first wins (RFC
        // 9112 §6.3), but such a handler is not trusted with another
        // request on the connection.
        let clean = !names.content_length;
        return Ok(if is_chunked(headers) {
            (Framing::Chunked, clean)
        } else {
            (Framing::UntilClose, false)
        });
    }
    if !names.content_length {
        return Ok((Framing::UntilClose, false));
    }
    match content_length(headers) {
        Some(Ok(length)) => Ok((Framing::Length(length), true)),
        Some(Err(())) => Err(ExchangeError::Malformed("invalid Content-Length")),
        None => Ok((Framing::UntilClose, false)),
    }
}

/// `chunked` is the last transfer coding.
fn is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
}

/// The Content-Length, when every copy and list item says the same
/// number; `Some(Err)` when they disagree or one is not a number.
fn content_length(headers: &HeaderMap) -> Option<Result<u64, ()>> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&byte| byte == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Some(Err(()));
            }
            let Some(length) = std::str::from_utf8(item)
                .ok()
                .and_then(|item| item.parse::<u64>().ok())
            else {
                return Some(Err(()));
            };
            if found.is_some_and(|seen| seen != length) {
                return Some(Err(()));
            }
            found = Some(length);
        }
    }
    found.map(Ok)
}

/// Whether the handler keeps the connection open after this response:
/// HTTP/1.1 unless it says `close`, HTTP/1.0 only if it says `keep-alive`.
fn persistent(version: Version, headers: &HeaderMap, names: FramingNames) -> bool {
    if version == Version::HTTP_10 {
        names.connection && connection_lists(headers, "keep-alive")
    } else {
        !(names.connection && connection_lists(headers, "close"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, method: Method) -> Result<Parsed, ExchangeError> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_response(&mut buf, &method)
    }

    fn head(text: &str) -> ResponseHead {
        match parse(text, Method::GET) {
            Ok(Parsed::Final(head)) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn request_heads_are_origin_form_with_every_header() {
        let (mut parts, ()) = http::Request::builder()
            .method("DELETE")
            .uri("/items/1?x=2")
            .header("host", "a.test")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(())
            .expect("request")
            .into_parts();
        parts.version = Version::HTTP_11;
        let text =
            String::from_utf8(encode_request(&parts, &ContextHeaders::default())).expect("ascii");
        assert_eq!(
            text,
            "DELETE /items/1?x=2 HTTP/1.1\r\nhost: a.test\r\nx-two: 1\r\nx-two: 2\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            (
                "HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                Framing::Length(0),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
                Framing::Length(0),
                false,
            ),
        ];
        for (text, want, keep_alive) in cases {
            let head = head(text);
            assert_eq!(
                (head.framing, head.keep_alive),
                (want, keep_alive),
                "{text:?}"
            );
        }
        match parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD) {
            Ok(Parsed::Final(head)) => assert_eq!(head.framing, Framing::Length(0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_heads_are_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse(text, Method::GET), Err(ExchangeError::Malformed(_))),
                "{text:?}"
            );
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "x-a: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse(&many, Method::GET),
            Err(ExchangeError::Malformed(_))
        ));
    }

    #[test]
    fn partial_and_interim_heads() {
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\ncontent-le", Method::GET),
            Ok(Parsed::Partial)
        ));
        let mut buf = BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..]);
        assert!(matches!(
            parse_response(&mut buf, &Method::GET),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse_response(&mut buf, &Method::GET),
            Ok(Parsed::Final(_))
        ));
        assert!(buf.is_empty());
        let huge = BytesMut::from(
            format!("HTTP/1.1 200 OK\r\nx-a: {}", "a".repeat(MAX_HEAD_BYTES)).as_bytes(),
        );
        assert!(matches!(
            parse_response(&mut huge.clone(), &Method::GET),
            Err(ExchangeError::Malformed(_))
        ));
    }

    #[test]
    fn values_keep_their_bytes_and_order() {
        let head = head("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Y: z\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n");
        let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(head.headers["x-y"], "z");
    }
}
