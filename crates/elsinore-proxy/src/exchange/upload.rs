//! A request head and its body of declared length written to a handler,
//! while watching for an answer that comes before the body is all sent.

use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body;
use tokio::io::AsyncWrite;

use super::{ExchangeError, HandlerStream, HEAD_READ};
use crate::limits::RequestBody;

/// How the upload ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Uploaded {
    /// Head and all `length` bytes of the body were written.
    All,
    /// The handler sent something first, now in the read buffer.
    Answered,
}

/// Writes a request head, then its body of declared length as it arrives
/// from the client. The first piece of the body goes out with the head in
/// one write when the client has already sent it.
pub(super) struct Upload {
    /// What is left to write of the head.
    head: Bytes,
    /// What is left to write of the body piece in hand.
    chunk: Bytes,
    /// Body bytes not yet taken from the client.
    left: u64,
    body_taken: bool,
    /// The client's body has ended (all its declared bytes taken).
    body_done: bool,
    /// Some of the head has been written.
    written: bool,
}

impl Upload {
    /// An upload of `head` and a body declaring `length` bytes.
    pub(super) fn new(head: Vec<u8>, length: u64) -> Self {
        Self {
            head: Bytes::from(head),
            chunk: Bytes::new(),
            left: length,
            body_taken: false,
            body_done: false,
            written: false,
        }
    }

    /// Nothing has been written and nothing taken from the client: the
    /// request can go out whole on another connection.
    pub(super) fn untouched(&self) -> bool {
        !self.written && !self.body_taken
    }

    /// Goes on writing on `stream` until the body is all sent or the
    /// handler sends something, read into `answer` (an interim 100
    /// Continue, or its answer).
    pub(super) async fn send(
        &mut self,
        stream: &mut HandlerStream,
        body: &mut RequestBody,
        answer: &mut BytesMut,
    ) -> Result<Uploaded, ExchangeError> {
        poll_fn(|cx| self.poll(cx, stream, body, answer)).await
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut HandlerStream,
        body: &mut RequestBody,
        answer: &mut BytesMut,
    ) -> Poll<Result<Uploaded, ExchangeError>> {
        loop {
            // An answer before the body is all sent ends the upload. No
            // syscall while nothing has arrived: tokio knows the socket is
            // not readable.
            if answer.capacity() - answer.len() < HEAD_READ / 2 {
                answer.reserve(HEAD_READ);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, answer) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ExchangeError::Closed)),
                Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Uploaded::Answered)),
                // A reset is a close too (see `read_head`).
                Poll::Ready(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Poll::Ready(Err(ExchangeError::Closed))
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(ExchangeError::Io(err))),
                Poll::Pending => {}
            }
            if self.head.is_empty() && self.chunk.is_empty() {
                if self.body_done {
                    return Poll::Ready(Ok(Uploaded::All));
                }
                match ready!(self.poll_body(cx, body)) {
                    Ok(()) => {}
                    Err(error) => return Poll::Ready(Err(error)),
                }
                continue;
            }
            // The head waits for the first piece of the body if the client
            // has sent it already: one write for both.
            if !self.head.is_empty() && self.chunk.is_empty() && !self.body_done {
                if let Poll::Ready(Err(error)) = self.poll_body(cx, body) {
                    return Poll::Ready(Err(error));
                }
            }
            let parts = [IoSlice::new(&self.head), IoSlice::new(&self.chunk)];
            let written = match ready!(Pin::new(&mut *stream).poll_write_vectored(cx, &parts)) {
                Ok(0) => {
                    return Poll::Ready(Err(ExchangeError::Io(
                        std::io::ErrorKind::WriteZero.into(),
                    )))
                }
                Ok(written) => written,
                // The handler is gone before answering (it closed or
                // reset with the request unread).
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Poll::Ready(Err(ExchangeError::Closed))
                }
                Err(err) => return Poll::Ready(Err(ExchangeError::Io(err))),
            };
            self.written = true;
            let from_head = written.min(self.head.len());
            self.head.advance(from_head);
            self.chunk.advance(written - from_head);
        }
    }

    /// Takes the next piece of the client's body into `chunk` (or notes
    /// its end). Pending while the client has not sent more.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut RequestBody,
    ) -> Poll<Result<(), ExchangeError>> {
        loop {
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    self.body_taken = true;
                    // Trailers of a body with a declared length: HTTP/1.1
                    // has nowhere to put them; dropped, as hyper does.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let size = data.len() as u64;
                    if size > self.left {
                        // The client's fault, not the handler's: never
                        // reported as a bad answer.
                        return Poll::Ready(Err(ExchangeError::Io(std::io::Error::other(
                            "the client sent more body than it declared",
                        ))));
                    }
                    self.left -= size;
                    self.body_done = self.left == 0;
                    if data.is_empty() {
                        continue;
                    }
                    self.chunk = data;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(err)) => {
                    self.body_taken = true;
                    return Poll::Ready(Err(ExchangeError::Io(std::io::Error::other(err))));
                }
                None if self.left == 0 => {
                    self.body_done = true;
                    return Poll::Ready(Ok(()));
                }
                None => {
                    return Poll::Ready(Err(ExchangeError::Io(std::io::Error::other(
                        "the client's body ended before its declared length",
                    ))))
                }
            }
        }
    }
}
