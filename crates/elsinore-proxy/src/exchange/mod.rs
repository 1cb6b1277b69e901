//! One HTTP/1.1 request without a body, and its response, over a handler
//! connection the request's own task drives.
//!
//! Most requests a handler gets (GET, HEAD, DELETE, a POST with an empty
//! body) have no body and ask for no upgrade. For them hyper's client
//! connection is more machinery than the exchange needs: a task of its
//! own per connection, a channel carrying the request to it and another
//! carrying the response back, and the body through a third, so each
//! request wakes two tasks and crosses three queues. Counted with
//! callgrind it was a third of all instructions per proxied request.
//! Here the request's task writes the head in one write, reads the
//! response head into one buffer, and the response body is read off the
//! socket as the client takes it (`docs/performance.md`).
//!
//! Requests with a body, or asking to switch protocols, still go through
//! hyper's client (`crate::client`): a body must be sent while the
//! response may already be arriving, and a 101 hands the connection over.

mod body;
mod head;
mod stream;

use std::io;

use bytes::BytesMut;
use http::request::Parts;
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) use body::FramedBody;
pub(crate) use head::asks_close;
pub(crate) use stream::HandlerStream;

use head::Parsed;

/// Bytes read at once while waiting for the response head.
const HEAD_READ: usize = 8 * 1024;

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

/// Sends the head of `parts` (a request without a body) on `stream` and
/// reads the response head. `reused`: the connection has carried a
/// request before (see [`Failure::retry`]).
pub(crate) async fn exchange(
    mut stream: HandlerStream,
    parts: &Parts,
    reused: bool,
) -> Result<(Response<()>, FramedBody), Failure> {
    let request_head = head::encode_request(parts);
    if let Err(err) = stream.write_all(&request_head).await {
        return Err(Failure {
            error: ExchangeError::Io(err),
            retry: reused,
        });
    }
    let may_retry = reused && parts.method.is_idempotent();
    let mut buf = BytesMut::with_capacity(HEAD_READ);
    let head = loop {
        if !buf.is_empty() {
            match head::parse_response(&mut buf, &parts.method) {
                Ok(Parsed::Final(head)) => break head,
                Ok(Parsed::Interim) => continue,
                Ok(Parsed::Partial) => {}
                Err(error) => {
                    return Err(Failure {
                        error,
                        retry: false,
                    })
                }
            }
        }
        if buf.capacity() - buf.len() < HEAD_READ / 2 {
            buf.reserve(HEAD_READ);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => {
                return Err(Failure {
                    error: ExchangeError::Closed,
                    retry: may_retry,
                })
            }
            Ok(0) => {
                return Err(Failure {
                    error: ExchangeError::Malformed(
                        "the handler closed the connection in the middle of the response head",
                    ),
                    retry: false,
                })
            }
            Ok(_) => {}
            Err(err) => {
                let reset = err.kind() == io::ErrorKind::ConnectionReset;
                return Err(Failure {
                    error: ExchangeError::Io(err),
                    retry: may_retry && reset && buf.is_empty(),
                });
            }
        }
    };
    let keep_alive = head.keep_alive && !asks_close(&parts.headers);
    let body = FramedBody::new(stream, buf, head.framing, keep_alive);
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    Ok((response, body))
}
