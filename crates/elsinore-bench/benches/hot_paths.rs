//! Micro-benchmarks of the functions every request runs: host
//! normalisation and the host table lookup (1 host vs 10,000).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use elsinore_config::{normalize_request_host, HostPattern};
use elsinore_routes::HostTableBuilder;

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

criterion_group!(benches, host_normalisation, table_lookup);
criterion_main!(benches);
