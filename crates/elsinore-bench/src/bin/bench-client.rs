//! `bench-client --addr 127.0.0.1:P --host H --conns C --requests N
//! [--new-conn] [--post-bytes B]`: sends exactly N keep-alive `GET /`
//! (with `--post-bytes`, `POST /` with a body of B bytes) requests over C
//! connections (each connection one request at a time; with `--new-conn`,
//! C clients each opening a new connection per request and sending
//! `Connection: close`), then prints the count, the elapsed time, req/s and
//! the p50/p99 latency.
//!
//! wrk is time-based; instruction counts per request (valgrind's
//! callgrind, `bench/callgrind.py`) need a fixed number of requests, and
//! a client that does as little as possible. The client speaks just enough
//! HTTP/1.1 to read a response with a `Content-Length` (what
//! `bench-backend` and Elsinore send); anything else is an error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut addr: Option<SocketAddr> = None;
    let mut host = String::from("localhost");
    let mut path = String::from("/");
    let mut conns: u64 = 8;
    let mut requests: u64 = 10_000;
    let mut new_conn = false;
    let mut post_bytes: usize = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--new-conn" {
            new_conn = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--addr" => addr = Some(value.parse()?),
            "--host" => host = value,
            "--path" => path = value,
            "--conns" => conns = value.parse()?,
            "--requests" => requests = value.parse()?,
            "--post-bytes" => post_bytes = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    let conns = conns.clamp(1, requests.max(1));
    let close = if new_conn {
        "Connection: close\r\n"
    } else {
        ""
    };
    let request = if post_bytes > 0 {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-client\r\n\
             Content-Length: {post_bytes}\r\n{close}\r\n"
        );
        request.push_str(&"x".repeat(post_bytes));
        request
    } else {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-client\r\n{close}\r\n")
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(addr, request.into_bytes(), conns, requests, new_conn))
}

async fn run(
    addr: SocketAddr,
    request: Vec<u8>,
    conns: u64,
    requests: u64,
    new_conn: bool,
) -> Result<(), Error> {
    let request: Arc<[u8]> = request.into();
    let remaining = Arc::new(AtomicU64::new(requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (request, remaining) = (request.clone(), remaining.clone());
        tasks.push(tokio::spawn(connection(addr, request, remaining, new_conn)));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get(latencies.len().saturating_sub(1) * p / 100)
            .copied()
            .unwrap_or_default()
            .as_micros()
    };
    println!(
        "requests {} elapsed_s {:.3} req_per_s {:.0} p50_us {} p99_us {}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(50),
        pct(99),
    );
    Ok(())
}

/// Takes requests from `remaining` until none are left, one at a time,
/// on one connection or (`new_conn`) a new connection each.
async fn connection(
    addr: SocketAddr,
    request: Arc<[u8]>,
    remaining: Arc<AtomicU64>,
    new_conn: bool,
) -> Result<Vec<Duration>, Error> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut latencies = Vec::new();
    let mut first = true;
    while remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let sent = Instant::now();
        if new_conn && !first {
            stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
        }
        first = false;
        stream.write_all(&request).await?;
        read_response(&mut stream, &mut buf).await?;
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}

/// Reads one response (head, then `Content-Length` bytes of body).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Error> {
    buf.clear();
    let (head_end, length) = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("unexpected response: {head}").into());
            }
            let length = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .ok_or("response without content-length")?
                .1
                .trim()
                .parse::<usize>()?;
            break (end + 4, length);
        }
        read_more(stream, buf).await?;
    };
    while buf.len() < head_end + length {
        read_more(stream, buf).await?;
    }
    Ok(())
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Error> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err("connection closed".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
