//! Paths Elsinore answers itself on a project's own hosts, and the hook
//! that answers them.
//!
//! The proxy decides *that* a (normalised) path is reserved and for which
//! routed host and project; the preview host and hosts answered by
//! `default_project` are refused before any hook sees the request. What a
//! reserved path does (today the tenant admin API, crate
//! `elsinore-tenant-admin`) is the hook's business: no admin code lives in
//! the proxy, and the proxy links none of its dependencies (SQLite).
//! A project with `admin_api: "handler"` has no reserved paths: the proxy
//! routes them to its handler (the disguised-path 400 still applies).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use elsinore_routes::{ProjectRoute, RouteTable};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::throttle::Throttle;
use crate::ProxyBody;

/// The tenant admin API's path prefixes (Hamlet's admin API).
const RESERVED: [&str; 2] = ["/admin/api/_keys", "/admin/api/_hosts"];

/// Whether Elsinore answers `path` (normalised) itself instead of a
/// handler: a reserved prefix, alone or followed by `/`.
pub fn is_reserved(path: &str) -> bool {
    RESERVED.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// Whether `path` (normalised, not reserved itself) becomes a reserved
/// path once its encoded separators are read as separators:
/// `/admin%2Fapi/_keys`, `/admin/api%5C_keys`. The normal form keeps `%2F`
/// as data, but many servers (WSGI's `PATH_INFO`, some routers) decode it
/// before routing, so a handler could be reached on the admin API's path
/// without Elsinore answering. Only paths with a `%` are looked at again.
pub fn is_disguised_reserved(path: &str) -> bool {
    if !path.contains('%') {
        return false;
    }
    let mut decoded = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        if escape.eq_ignore_ascii_case("%2F") || escape.eq_ignore_ascii_case("%5C") {
            decoded.push('/');
            rest = &rest[at + 3..];
        } else {
            decoded.push('%');
            rest = &rest[at + 1..];
        }
    }
    decoded.push_str(rest);
    is_reserved(&elsinore_config::normalize_path(&decoded))
}

/// The answer of a [`ReservedPaths`] hook. Boxed on purpose: held in
/// place, the admin API's future (~2 KB) would be part of every request's
/// future, and copied with it, proxied or not.
pub type ReservedFuture<'a> = Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'a>>;

/// Answers requests to reserved paths ([`is_reserved`]) on a host a
/// project declares. Set with [`Proxy::with_reserved`](crate::Proxy::with_reserved);
/// without one, reserved paths answer 503.
pub trait ReservedPaths: Send + Sync + fmt::Debug {
    /// Answers one request; never fails (errors become JSON responses
    /// through [`ProxyError`](crate::ProxyError), the one error writer).
    fn answer<'a>(
        &'a self,
        request: Request<Incoming>,
        cx: ReservedContext<'a>,
    ) -> ReservedFuture<'a>;
}

/// What the proxy knows about a reserved-path request besides the request.
#[derive(Debug, Clone, Copy)]
pub struct ReservedContext<'a> {
    /// The normalised host (one the project declares).
    pub host: &'a str,
    /// The project declaring it.
    pub project: &'a Arc<ProjectRoute>,
    /// The live table (other projects' keys, the hosts each declares).
    pub table: &'a ArcSwap<RouteTable>,
    /// The client's address (see `trusted_proxies`), not a trusted proxy's
    /// in front of it: what the throttle counts and the log names.
    pub client: IpAddr,
    /// This request's `X-Request-Id`, for error bodies and the log.
    pub request_id: &'a HeaderValue,
    /// The proxy's failure throttle, shared with proxied requests that
    /// present a key: guesses count in one window whichever path they take.
    pub throttle: &'a Throttle,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use elsinore_config::HostPattern;
    use elsinore_routes::HostTableBuilder;
    use http_body_util::{Either, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use elsinore_routes::HostRoute;

    use crate::{Proxy, ServeSettings};

    /// What the hook was handed: host, project, client, path.
    type Seen = (String, String, IpAddr, String);

    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<Seen>>,
    }

    impl ReservedPaths for Recorder {
        fn answer<'a>(
            &'a self,
            request: Request<Incoming>,
            cx: ReservedContext<'a>,
        ) -> ReservedFuture<'a> {
            self.seen.lock().expect("lock").push((
                cx.host.to_owned(),
                cx.project.name.clone(),
                cx.client,
                request.uri().path().to_owned(),
            ));
            Box::pin(async { Response::new(Either::Right(Full::new(Bytes::from("hook")))) })
        }
    }

    fn project(name: &str) -> Arc<ProjectRoute> {
        Arc::new(ProjectRoute::new(name, PathBuf::from("/p"), None, Vec::new()).expect("route"))
    }

    /// horatio declares blog.localhost; every other host is answered by
    /// `default_project`.
    fn table() -> Arc<ArcSwap<RouteTable>> {
        let horatio = project("horatio");
        let mut hosts = HostTableBuilder::new();
        let pattern = HostPattern::parse("blog.localhost").expect("pattern");
        hosts.insert(
            "horatio",
            &pattern,
            HostRoute {
                project: horatio.clone(),
                site: None,
                label: "blog.localhost".into(),
            },
        );
        let (hosts, _) = hosts.finish();
        Arc::new(ArcSwap::from_pointee(RouteTable {
            hosts,
            projects: vec![horatio],
            default_project: Some(project("fallback")),
            ..RouteTable::default()
        }))
    }

    /// Serves `proxy` on 127.0.0.1:0 and sends each raw request on its own
    /// connection; returns the status line and body of each answer.
    async fn ask(proxy: Proxy, requests: &[&str]) -> Vec<(String, String)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve_with(
            listener,
            Arc::new(proxy),
            async {
                let _ = stopped.await;
            },
            ServeSettings::with_grace(Duration::from_secs(1)),
        ));
        let mut answers = Vec::new();
        for request in requests {
            let exchange = async {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream.write_all(request.as_bytes()).await.expect("write");
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.expect("read");
                answer
            };
            let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
                .await
                .expect("the proxy answers within 10 s");
            let status = answer.lines().next().unwrap_or_default().to_owned();
            let body = answer
                .split_once("\r\n\r\n")
                .map(|(_, body)| body.to_owned())
                .unwrap_or_default();
            answers.push((status, body));
        }
        let _ = stop.send(());
        server.await.expect("server task");
        answers
    }

    fn get(path: &str, host: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn reserved_paths_reach_the_hook_only_on_a_projects_own_hosts() {
        let hook = Arc::new(Recorder::default());
        let proxy = Proxy::new(table()).with_reserved(hook.clone());
        let answers = ask(
            proxy,
            &[
                // Normalised first: this is /admin/api/_keys/.
                &get("//admin/api/%5Fkeys/", "Blog.Localhost:8080"),
                &get("/admin/api/_hosts", "other.localhost"),
            ],
        )
        .await;
        assert!(answers[0].0.contains(" 200 "), "{answers:?}");
        assert_eq!(answers[0].1, "hook");
        assert!(answers[1].0.contains(" 404 "), "{answers:?}");
        assert!(
            answers[1].1.contains("default_project"),
            "the refusal says why: {answers:?}"
        );
        let seen = hook.seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            [(
                "blog.localhost".to_owned(),
                "horatio".to_owned(),
                IpAddr::from([127, 0, 0, 1]),
                "/admin/api/_keys/".to_owned(),
            )],
            "only the declared host's request, with its project and client"
        );
    }

    #[tokio::test]
    async fn without_a_hook_reserved_paths_answer_503() {
        let answers = ask(
            Proxy::new(table()),
            &[&get("/admin/api/_keys", "blog.localhost")],
        )
        .await;
        assert!(answers[0].0.contains(" 503 "), "{answers:?}");
    }

    #[test]
    fn reserved_paths() {
        for path in [
            "/admin/api/_keys",
            "/admin/api/_keys/",
            "/admin/api/_keys/3/rotate",
            "/admin/api/_hosts",
            "/admin/api/_hosts/a.localhost",
        ] {
            assert!(is_reserved(path), "{path}");
        }
        for path in ["/admin/api/_keysX", "/admin/api/other", "/admin/", "/"] {
            assert!(!is_reserved(path), "{path}");
        }
    }

    #[test]
    fn encoded_separators_do_not_disguise_reserved_paths() {
        for path in [
            "/admin%2Fapi/_keys",
            "/admin%2fapi%2F_hosts/a.test",
            "/admin/api%5C_keys",
            "/x%2F..%2Fadmin/api/_keys",
        ] {
            assert!(!is_reserved(path), "{path}");
            assert!(is_disguised_reserved(path), "{path}");
        }
        for path in [
            "/api/a%2Fb",
            "/admin/api/other%2Fx",
            "/admin/api/_keys",
            "/%2",
        ] {
            assert!(!is_disguised_reserved(path), "{path}");
        }
    }
}
