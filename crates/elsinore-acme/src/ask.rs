//! `acme.ask`: before an on-demand order, the name's own project is asked
//! `GET <ask>?domain=<name>`. The request goes to Elsinore's own plain
//! listener with `Host: <name>`, so it is routed, authenticated and given
//! the usual context headers exactly like a visitor's request.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A project that does not answer within this is taken as a refusal.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the project serving `name` allows a certificate for it:
/// `Ok(())` on a 2xx, else why not.
pub(crate) async fn ask(listener: SocketAddr, path: &str, name: &str) -> Result<(), String> {
    match tokio::time::timeout(ASK_TIMEOUT, request(listener, path, name)).await {
        Ok(Ok(status)) if status.is_success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{path} answered {status}")),
        Ok(Err(err)) => Err(format!("{path} could not be asked: {err}")),
        Err(_) => Err(format!("{path} did not answer within {ASK_TIMEOUT:?}")),
    }
}

async fn request(listener: SocketAddr, path: &str, name: &str) -> Result<StatusCode, String> {
    let query: String = form_urlencoded_pair("domain", name);
    let stream = TcpStream::connect(listener)
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let request = Request::get(format!("{path}?{query}"))
        .header(http::header::HOST, name)
        .header(http::header::USER_AGENT, "elsinore-acme-ask")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    Ok(response.status())
}

/// `key=value`; `value` is a validated host name (letters, digits, `-`
/// and `.`), which needs no escaping.
fn form_urlencoded_pair(key: &str, value: &str) -> String {
    format!("{key}={value}")
}
