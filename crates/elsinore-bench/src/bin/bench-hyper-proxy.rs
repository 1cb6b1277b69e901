//! `bench-hyper-proxy --port P --upstream HOST:PORT [--threads N]`: the
//! least a hyper reverse proxy does, as a floor to compare Elsinore with.
//! Elsinore's threading (one current-thread runtime per thread, each on
//! its own `SO_REUSEPORT` socket, handler connections pooled per thread)
//! and nothing else: no routing, no header rules, no limits, no metrics,
//! no timeouts. Requests go to the upstream unchanged. It prints
//! `ready on 127.0.0.1:P` once it listens.

use std::cell::RefCell;
use std::net::SocketAddr;

use elsinore_proxy::ThreadListeners;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

thread_local! {
    /// This thread's upstream connections; a busy one is skipped.
    static POOL: RefCell<Vec<SendRequest<Incoming>>> = const { RefCell::new(Vec::new()) };
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port: u16 = 0;
    let mut upstream: Option<SocketAddr> = None;
    let mut threads: usize = 2;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--port" => port = value.parse()?,
            "--upstream" => upstream = Some(value.parse()?),
            "--threads" => threads = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let upstream = upstream.ok_or("--upstream is required")?;
    // Elsinore's own listening sockets: one per thread.
    let threads = threads.max(1);
    let listeners = ThreadListeners::bind(SocketAddr::from(([127, 0, 0, 1], port)), threads)?;
    println!("ready on {}", listeners.local_addr());
    let workers: Vec<_> = listeners
        .into_per_thread(threads)?
        .into_iter()
        .map(|socket| {
            std::thread::spawn(move || -> std::io::Result<()> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(async move { serve(TcpListener::from_std(socket)?, upstream).await })
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a thread panicked")??;
    }
    Ok(())
}

async fn serve(listener: TcpListener, upstream: SocketAddr) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(request, upstream));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    request: http::Request<Incoming>,
    upstream: SocketAddr,
) -> Result<http::Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let ready = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.retain(|sender| !sender.is_closed());
        let index = pool.iter().rposition(SendRequest::is_ready)?;
        Some(pool.swap_remove(index))
    });
    let mut sender = match ready {
        Some(sender) => sender,
        None => {
            let stream = TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            sender
        }
    };
    let response = sender.send_request(request).await?;
    // Ready again once the response body has gone through.
    POOL.with(|pool| pool.borrow_mut().push(sender));
    Ok(response)
}
