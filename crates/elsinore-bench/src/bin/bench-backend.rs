//! `bench-backend --port P --body-bytes N`: answers every request with
//! `200 OK` and N bytes of `x` once it has read the request body, over
//! HTTP/1.1 keep-alive, as fast as hyper can. It prints `ready on 127.0.0.1:P` once it listens.
//!
//! `--unix PATH` listens on a Unix socket instead; `--from-env` listens
//! where Elsinore says when it runs the backend as a handler:
//! `$ELSINORE_SOCKET` (a handler with `socket = true`) or `$PORT`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port: u16 = 0;
    let mut body_bytes: usize = 100;
    let mut threads: usize = 1;
    let mut unix: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--from-env" {
            match std::env::var("ELSINORE_SOCKET") {
                Ok(path) => unix = Some(path),
                Err(_) => port = std::env::var("PORT")?.parse()?,
            }
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--port" => port = value.parse()?,
            "--unix" => unix = Some(value),
            "--body-bytes" => body_bytes = value.parse()?,
            "--threads" => threads = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let body = Bytes::from(vec![b'x'; body_bytes]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    match unix {
        Some(path) => runtime.block_on(serve_unix(&path, body)),
        None => runtime.block_on(serve(port, body)),
    }
}

async fn serve_unix(path: &str, body: Bytes) -> Result<(), Box<dyn std::error::Error>> {
    // A socket file left by an earlier run would make the bind fail.
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    println!("ready on unix:{path}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, body.clone()));
    }
}

async fn serve(port: u16, body: Bytes) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("ready on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, body.clone()));
    }
}

/// HTTP/1.1 on one accepted connection, TCP or Unix.
async fn serve_connection<I>(stream: I, body: Bytes)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let mut response = Response::new(Full::new(body.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        async move {
            // Read the request body to its end, as applications do (and as
            // `reuse_after_body` promises): the POST scenarios measure a
            // handler connection that can be kept. Nothing to read for a GET.
            let _ = request.into_body().collect().await;
            Ok::<_, Infallible>(response)
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
