//! One HTTP/1.1 request, without a body or with one of declared length,
//! and its response, over a handler connection the request's own task
//! drives.
//!
//! Most requests a handler gets (GET, HEAD, DELETE, a form POST) have no
//! body or one whose length the client declared, and ask for no upgrade.
//! For them hyper's client connection is more machinery than the exchange
//! needs: a task of its own per connection, a channel carrying the request
//! to it and another carrying the response back, and the body through a
//! third, so each request wakes two tasks and crosses three queues.
//! Counted with callgrind it was a third of all instructions per proxied
//! request. Here the request's task writes the head in one write (the
//! context headers straight after the request's own, never inserted into
//! its map), reads the response head into one buffer, and the response
//! body is read off the socket as the client takes it
//! (`docs/performance.md`).
//!
//! A body is written as the client sends it, while anything the handler
//! sends meanwhile is read: an interim `100 Continue` is skipped, a final
//! answer ends the upload (and the connection is not reused, as the
//! handler has not read the whole body). Bodies of unknown length (chunked
//! uploads) and requests asking to switch protocols still go through
//! hyper's client (`crate::client`).

mod body;
mod head;
mod stream;
mod upload;

use std::io;

use bytes::BytesMut;
use http::request::Parts;
use http::{Method, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) use body::FramedBody;
pub(crate) use stream::HandlerStream;

use crate::headers::{connection_lists, ContextHeaders};
use crate::limits::RequestBody;
use head::{Parsed, ResponseHead};
use upload::{Upload, Uploaded};

/// Bytes read at once while waiting for the response head.
const HEAD_READ: usize = 8 * 1024;

/// What is written of a request before its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// The request's own head.
    pub(crate) parts: &'a Parts,
    /// What Elsinore adds, written after the request's own headers.
    pub(crate) context: &'a ContextHeaders,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// The handler closed the connection before any of its response.
    #[error("the handler closed the connection before responding")]
    Closed,
    /// What the handler sent is not HTTP/1.1 we take.
    #[error("{0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(io::Error),
}

/// A failed exchange, and whether the request may go out again on
/// another connection.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: ExchangeError,
    /// A connection taken from the pool turned out closed, and nothing of
    /// the request can have been acted on: the write itself failed, or
    /// the method is idempotent and not a byte of answer came (the
    /// handler closed the idle connection as the request arrived).
    pub(crate) retry: bool,
}

/// Sends `request` (and `body`, with the length it declared) on `stream`
/// and reads the response head. `reused`: the connection has carried a
/// request before (see [`Failure::retry`]).
pub(crate) async fn exchange(
    mut stream: HandlerStream,
    request: Outgoing<'_>,
    body: Option<(&mut RequestBody, u64)>,
    reused: bool,
) -> Result<(Response<()>, FramedBody), Failure> {
    let parts = request.parts;
    let request_head = head::encode_request(parts, request.context);
    let idempotent = parts.method.is_idempotent();
    let mut buf = BytesMut::with_capacity(HEAD_READ);
    // The body was not all sent: the handler answered first.
    let mut cut_short = false;
    let head = match body {
        None => {
            if let Err(err) = stream.write_all(&request_head).await {
                return Err(Failure {
                    error: ExchangeError::Io(err),
                    retry: reused,
                });
            }
            read_head(&mut stream, &mut buf, &parts.method, reused && idempotent).await?
        }
        Some((body, length)) => {
            let mut upload = Upload::new(request_head, length);
            loop {
                let sent = upload.send(&mut stream, body, &mut buf).await;
                let retry = reused && upload.untouched();
                match sent {
                    Ok(Uploaded::All) => {
                        break read_head(&mut stream, &mut buf, &parts.method, false).await?;
                    }
                    // A 100 Continue is skipped and the upload goes on;
                    // a final answer ends it.
                    Ok(Uploaded::Answered) => match parse_final(&mut buf, &parts.method)? {
                        Some(head) => {
                            cut_short = true;
                            break head;
                        }
                        None => continue,
                    },
                    Err(ExchangeError::Closed) if !buf.is_empty() => {
                        return Err(Failure {
                            error: ExchangeError::Malformed(CLOSED_MID_HEAD),
                            retry: false,
                        })
                    }
                    Err(error) => return Err(Failure { error, retry }),
                }
            }
        }
    };
    let keep_alive = head.keep_alive && !cut_short && !connection_lists(&parts.headers, "close");
    let body = FramedBody::new(stream, buf, head.framing, keep_alive);
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Ok((response, body))
}

const CLOSED_MID_HEAD: &str =
    "the handler closed the connection in the middle of the response head";

/// The final response head at the front of `buf` (interim ones skipped),
/// or `None` while it is not all there.
fn parse_final(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, Failure> {
    loop {
        match head::parse_response(buf, method) {
            Ok(Parsed::Final(head)) => return Ok(Some(head)),
            Ok(Parsed::Interim) if !buf.is_empty() => {}
            Ok(Parsed::Interim | Parsed::Partial) => return Ok(None),
            Err(error) => {
                return Err(Failure {
                    error,
                    retry: false,
                })
            }
        }
    }
}

/// Reads from `stream` into `buf` until a final response head is there.
/// `may_retry`: a close before any byte may be retried.
async fn read_head(
    stream: &mut HandlerStream,
    buf: &mut BytesMut,
    method: &Method,
    may_retry: bool,
) -> Result<ResponseHead, Failure> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse_final(buf, method)? {
                return Ok(head);
            }
        }
        if buf.capacity() - buf.len() < HEAD_READ / 2 {
            buf.reserve(HEAD_READ);
        }
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(Failure {
                    error: ExchangeError::Closed,
                    retry: may_retry,
                })
            }
            Ok(0) => {
                return Err(Failure {
                    error: ExchangeError::Malformed(CLOSED_MID_HEAD),
                    retry: false,
                })
            }
            Ok(_) => {}
            // A reset before any of the answer is a close too (a handler
            // that exits with the request unread resets the connection).
            Err(err) if err.kind() == io::ErrorKind::ConnectionReset && buf.is_empty() => {
                return Err(Failure {
                    error: ExchangeError::Closed,
                    retry: may_retry,
                })
            }
            Err(err) => {
                return Err(Failure {
                    error: ExchangeError::Io(err),
                    retry: false,
                })
            }
        }
    }
}
