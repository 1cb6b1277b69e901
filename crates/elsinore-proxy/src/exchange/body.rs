//! A handler's response body read straight off its connection, delimited
//! by the head's [`Framing`].

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use hyper::body::Frame;

use super::head::Framing;
use super::{ExchangeError, HandlerStream};

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 16 * 1024;
/// A chunk-size line (with extensions) may be this long at most.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The trailer section may be this long at most.
const MAX_TRAILERS: usize = 16 * 1024;

/// The body of one response, and the connection it arrives on.
#[derive(Debug)]
pub(crate) struct FramedBody {
    /// `None` once the body has ended and the connection was taken back,
    /// or after a failure.
    stream: Option<HandlerStream>,
    /// Read but not yet handed on.
    buf: BytesMut,
    state: State,
    /// The head allows another request on the connection.
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes left.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk left.
    ChunkData(u64),
    /// The CRLF after a chunk's data is next.
    ChunkEnd,
    /// The trailer section (perhaps empty) after the last chunk is next.
    Trailers,
    /// Until the handler closes.
    UntilClose,
    Done,
    Failed,
}

/// One step of [`FramedBody::decode`].
enum Step {
    Frame(Frame<Bytes>),
    /// The buffer holds no more of the body: read.
    Read,
    End,
}

impl FramedBody {
    /// The body after a head with `framing`; `buf` holds what was read
    /// past the head.
    pub(crate) fn new(
        stream: HandlerStream,
        buf: BytesMut,
        framing: Framing,
        keep_alive: bool,
    ) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self {
            stream: Some(stream),
            buf,
            state,
            keep_alive,
        }
    }

    /// The body has been read to its end.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    /// The exact length left, when known.
    pub(crate) fn exact_remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(length) => Some(length),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The connection, once the body has ended cleanly and the handler
    /// may take another request on it: nothing read past the response,
    /// and the head did not close it.
    pub(crate) fn take_reusable(&mut self) -> Option<HandlerStream> {
        if self.state == State::Done && self.keep_alive && self.buf.is_empty() {
            self.stream.take()
        } else {
            None
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ExchangeError>>> {
        loop {
            match self.decode() {
                Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::Read) => {}
                Err(err) => {
                    self.fail();
                    return Poll::Ready(Some(Err(err)));
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(None);
            };
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                self.buf.reserve(READ_SIZE);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(stream),
                cx,
                &mut self.buf
            ));
            match read {
                Ok(0) if self.state == State::UntilClose => {
                    self.state = State::Done;
                    self.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.fail();
                    return Poll::Ready(Some(Err(ExchangeError::Malformed(
                        "the handler closed the connection before the body ended",
                    ))));
                }
                Ok(_) => {}
                Err(err) => {
                    self.fail();
                    return Poll::Ready(Some(Err(ExchangeError::Io(err))));
                }
            }
        }
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.stream = None;
    }

    /// What the buffer holds of the next `left` bytes, and how many are
    /// still to come after it.
    fn take_up_to(&mut self, left: u64) -> (Bytes, u64) {
        let take = self
            .buf
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        (self.buf.split_to(take).freeze(), left - take as u64)
    }

    /// The next frame from what has been read, if any.
    fn decode(&mut self) -> Result<Step, ExchangeError> {
        loop {
            match self.state {
                State::Done | State::Failed => return Ok(Step::End),
                State::Length(left) => {
                    if self.buf.is_empty() {
                        return Ok(Step::Read);
                    }
                    let (data, left) = self.take_up_to(left);
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(Step::Frame(Frame::data(data)));
                }
                State::UntilClose => {
                    if self.buf.is_empty() {
                        return Ok(Step::Read);
                    }
                    return Ok(Step::Frame(Frame::data(self.buf.split().freeze())));
                }
                State::ChunkSize => match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((line, size))) => {
                        let _ = self.buf.split_to(line);
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_CHUNK_LINE => {
                        return Ok(Step::Read)
                    }
                    _ => return Err(ExchangeError::Malformed("invalid chunk size line")),
                },
                State::ChunkData(left) => {
                    if self.buf.is_empty() {
                        return Ok(Step::Read);
                    }
                    let (data, left) = self.take_up_to(left);
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Ok(Step::Frame(Frame::data(data)));
                }
                State::ChunkEnd => {
                    if self.buf.len() < 2 {
                        return Ok(Step::Read);
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Err(ExchangeError::Malformed("chunk data not followed by CRLF"));
                    }
                    let _ = self.buf.split_to(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    if self.buf.starts_with(b"\r\n") {
                        let _ = self.buf.split_to(2);
                        self.state = State::Done;
                        return Ok(Step::End);
                    }
                    let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                        if self.buf.len() >= MAX_TRAILERS {
                            return Err(ExchangeError::Malformed("trailer section too large"));
                        }
                        return Ok(Step::Read);
                    };
                    let section = self.buf.split_to(end + 4).freeze();
                    self.state = State::Done;
                    return Ok(Step::Frame(Frame::trailers(trailers(&section)?)));
                }
            }
        }
    }
}

/// The trailer fields of a complete trailer section.
fn trailers(section: &Bytes) -> Result<HeaderMap, ExchangeError> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let malformed = || ExchangeError::Malformed("invalid trailer section");
    let (_, fields) = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete(parsed)) => parsed,
        _ => return Err(malformed()),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| malformed())?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| malformed())?;
        map.append(name, value);
    }
    Ok(map)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes, as reads would.
    fn decode_all(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool), ExchangeError> {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        a.set_nonblocking(true).expect("nonblocking");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        let stream = HandlerStream::Unix(tokio::net::UnixStream::from_std(a).expect("tokio"));
        let mut body = FramedBody::new(stream, BytesMut::new(), framing, true);
        let mut data = Vec::new();
        let mut trailers = None;
        for piece in wire.chunks(step) {
            body.buf.extend_from_slice(piece);
            while let Step::Frame(frame) = body.decode()? {
                match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
        }
        let reusable = body.take_reusable().is_some();
        Ok((data, trailers, reusable))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let wire = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, trailers, reusable) =
                decode_all(Framing::Chunked, wire, step).expect("valid");
            assert_eq!(data, b"hello world", "step {step}");
            assert!(trailers.is_none());
            assert!(reusable, "step {step}");
        }
    }

    #[test]
    fn trailers_are_kept() {
        let wire = b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nX-Other: y\r\n\r\n";
        for step in [1, 5, wire.len()] {
            let (data, trailers, reusable) =
                decode_all(Framing::Chunked, wire, step).expect("valid");
            assert_eq!(data, b"abc");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-checksum"], "42");
            assert_eq!(trailers["x-other"], "y");
            assert!(reusable);
        }
    }

    #[test]
    fn bad_chunks_fail() {
        for wire in [
            &b"zz\r\nabc\r\n"[..],
            b"3\r\nabcXY0\r\n\r\n",
            b"3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
        ] {
            assert!(
                decode_all(Framing::Chunked, wire, wire.len()).is_err(),
                "{wire:?}"
            );
        }
        let long = [b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_all(Framing::Chunked, &long, long.len()).is_err());
    }

    #[test]
    fn lengths_stop_where_they_say_and_extra_bytes_spoil_reuse() {
        let (data, _, reusable) = decode_all(Framing::Length(5), b"hello", 2).expect("valid");
        assert_eq!(data, b"hello");
        assert!(reusable);
        let (data, _, reusable) = decode_all(Framing::Length(5), b"helloEXTRA", 10).expect("valid");
        assert_eq!(data, b"hello");
        assert!(
            !reusable,
            "bytes past the response: the connection is not reused"
        );
    }
}
