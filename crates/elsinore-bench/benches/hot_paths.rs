//! Micro-benchmarks of the functions every request runs: host
//! normalisation, the host table lookup (1 host vs 10,000), the header
//! rewrite in both directions and request-id generation.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use elsinore_config::{normalize_request_host, HostPattern};
use elsinore_proxy::bench_api::{
    rewrite_request, rewrite_response, RequestContext, RequestIdSource,
};
use elsinore_routes::HostTableBuilder;
use http::{HeaderMap, HeaderName, HeaderValue};

fn table_of(hosts: usize) -> elsinore_routes::HostTable<usize> {
    let mut builder = HostTableBuilder::new();
    for i in 0..hosts {
        let pattern = HostPattern::parse(&format!("tenant{i}.example.com")).expect("valid host");
        builder.insert("bench", &pattern, i);
    }
    let wildcard = HostPattern::parse("*.wild.example.com").expect("valid wildcard");
    builder.insert("bench", &wildcard, hosts);
    builder.finish().0
}

fn host_normalisation(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_request_host");
    group.bench_function("lower-case, no port", |b| {
        b.iter(|| normalize_request_host(black_box("tenant42.example.com")))
    });
    group.bench_function("mixed case with port", |b| {
        b.iter(|| normalize_request_host(black_box("Tenant42.Example.COM:8080")))
    });
    group.finish();
}

fn table_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_table_lookup");
    for hosts in [1usize, 10_000] {
        let table = table_of(hosts);
        group.bench_function(format!("exact hit, {hosts} hosts"), |b| {
            b.iter(|| table.lookup(black_box("tenant0.example.com")))
        });
        group.bench_function(format!("wildcard hit, {hosts} hosts"), |b| {
            b.iter(|| table.lookup(black_box("a.b.wild.example.com")))
        });
        group.bench_function(format!("miss, {hosts} hosts"), |b| {
            b.iter(|| table.lookup(black_box("nobody.example.org")))
        });
    }
    group.finish();
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn header_rewrite(c: &mut Criterion) {
    let context = RequestContext {
        host: HeaderValue::from_static("tenant42.example.com"),
        project: HeaderValue::from_static("horatio"),
        project_key: None,
        request_id: HeaderValue::from_static("ace943c9000000000005"),
        client_ip: HeaderValue::from_static("127.0.0.1"),
    };
    let host = HeaderValue::from_static("tenant42.example.com");
    // What wrk and curl send.
    let minimal = headers(&[
        ("host", "tenant42.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
    ]);
    // A browser navigation: hop-by-hop Connection included.
    let browser = headers(&[
        ("host", "tenant42.example.com"),
        ("connection", "keep-alive"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("cache-control", "max-age=0"),
        ("cookie", "session=0123456789abcdef; theme=dark"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "none"),
        ("upgrade-insecure-requests", "1"),
    ]);
    // Behind another proxy, with spoofed context headers to strip.
    let forwarded = headers(&[
        ("host", "tenant42.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-for", "10.0.0.2"),
        ("x-elsinore-auth", "projectAdmin"),
        ("x-elsinore-host", "evil.example"),
    ]);
    let response = headers(&[
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", "100"),
        ("date", "Sun, 22 Nov 2026 04:27:03 GMT"),
        ("cache-control", "no-cache"),
    ]);

    let mut group = c.benchmark_group("header_rewrite");
    for (name, request) in [
        ("request, 3 headers (curl)", &minimal),
        ("request, 12 headers (browser)", &browser),
        ("request, X-Forwarded-For and spoofed context", &forwarded),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || request.clone(),
                |mut headers| {
                    rewrite_request(&mut headers, &context, Some(host.clone()));
                    headers
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.bench_function("response, 4 headers", |b| {
        b.iter_batched(
            || response.clone(),
            |mut headers| {
                rewrite_response(&mut headers, &context.request_id);
                headers
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let ids = RequestIdSource::new();
    let mut group = c.benchmark_group("request_id");
    group.bench_function("generated", |b| b.iter(|| ids.for_request(black_box(None))));
    let sane = HeaderValue::from_static("client-trace-0123456789");
    group.bench_function("client's, kept", |b| {
        b.iter(|| ids.for_request(black_box(Some(&sane))))
    });
    group.finish();
}

criterion_group!(benches, host_normalisation, table_lookup, header_rewrite);
criterion_main!(benches);
