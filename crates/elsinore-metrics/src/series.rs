//! The per-request series (requests by status class, body bytes, and the
//! two latency histograms), kept so that recording a request writes only
//! memory its own thread owns.
//!
//! prometheus-client's `Histogram` takes a write lock per observation, and
//! its counters are one shared atomic each: every request thread wrote
//! the same few cache lines (two locks and their data, three counters)
//! for every request, so each request paid for moving them from the other
//! core, more so the more cores share them. Here each series has one
//! [`Shard`] per request thread (as many as [`crate::RequestThreads`] the
//! registry was made for, at most [`MAX_SHARDS`]; the recording thread's
//! [`crate::ThreadShard`] comes with each sample), padded to its own cache lines;
//! a scrape adds the shards up. A per-host series (`metrics.per_host`) has a single shard:
//! there may be thousands, each shard is 384 bytes, and the traffic is
//! spread over them anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, LabelSetEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use crate::{RequestLabels, RequestSample, RequestThreads};

/// project → handler → host (empty without per_host) → series.
///
/// Project and handler names come from configuration, so those two levels
/// use [`Fnv`] (SipHash, the default, was the largest part of recording a
/// request). Host labels are declared patterns too, but up to
/// [`crate::MAX_HOST_SERIES`] of them, so they keep the randomly keyed
/// default.
pub(crate) type SeriesMap = HashMap<String, HashMap<String, Hosts, Fnv>, Fnv>;

/// The series of one (project, handler), by host.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hosts {
    /// The empty host: every request without per_host, unknown hosts with.
    none: Option<Arc<Series>>,
    by_host: HashMap<String, Arc<Series>>,
}

impl Hosts {
    pub(crate) fn get(&self, host: &str) -> Option<&Arc<Series>> {
        if host.is_empty() {
            self.none.as_ref()
        } else {
            self.by_host.get(host)
        }
    }

    pub(crate) fn get_or_insert(&mut self, host: &str, series: &Arc<Series>) {
        if host.is_empty() {
            self.none.get_or_insert_with(|| series.clone());
        } else {
            self.by_host
                .entry(host.to_owned())
                .or_insert_with(|| series.clone());
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<Series>> {
        self.none.iter().chain(self.by_host.values())
    }
}

/// FNV-1a: a few instructions per byte for the short, trusted names of
/// [`SeriesMap`]; not for keys a client can choose.
pub(crate) type Fnv = std::hash::BuildHasherDefault<FnvHasher>;

#[derive(Debug)]
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Request threads past this many share shards (the index is clamped).
const MAX_SHARDS: usize = 17;

/// Status classes, indexed as [`Shard::requests`].
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the latency buckets: 1 ms … ~16 s in 15 doubling steps
/// (loopback handlers answer in milliseconds; anything past the top bucket
/// is an incident anyway), then +Inf.
const BUCKETS: usize = 15;

/// Bucket `i`'s upper bound in nanoseconds: 2^i ms.
const fn bound_nanos(i: usize) -> u64 {
    1_000_000 << i
}

/// Bucket `i`'s upper bound in seconds, as the text format prints it
/// (computed as prometheus-client's `exponential_buckets` did, so the `le`
/// labels read exactly as before).
fn bound_seconds(i: usize) -> f64 {
    0.001 * 2f64.powf(i as f64)
}

/// One latency histogram's values on one shard.
#[derive(Debug, Default)]
struct Latencies {
    sum_nanos: AtomicU64,
    /// Not cumulative; the last one is +Inf. The count is their sum.
    buckets: [AtomicU64; BUCKETS + 1],
}

impl Latencies {
    fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        // Most requests land in the first bucket: one comparison.
        let bucket = (0..BUCKETS)
            .find(|&i| nanos <= bound_nanos(i))
            .unwrap_or(BUCKETS);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// One thread's part of a series. Aligned to 128 bytes: x86 fetches cache
/// lines in pairs, so two shards must not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    request_duration: Latencies,
    handler_duration: Latencies,
}

/// Every value of one label set: its shards, added up when scraped.
#[derive(Debug)]
pub(crate) struct Series {
    labels: RequestLabels,
    shards: Box<[Shard]>,
}

/// The index into [`CLASSES`] of a status code's class.
pub(crate) fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

impl Series {
    /// A series with one shard per request thread of `threads` (one in
    /// all with a host label).
    pub(crate) fn new(labels: RequestLabels, threads: RequestThreads) -> Self {
        let shards = if labels.host.is_some() {
            1
        } else {
            threads.shards().clamp(1, MAX_SHARDS)
        };
        Self {
            labels,
            shards: (0..shards).map(|_| Shard::default()).collect(),
        }
    }

    /// Adds `sample` to the shard of the thread that recorded it.
    pub(crate) fn record(&self, sample: &RequestSample<'_>) {
        let shard = &self.shards[sample.shard.index_in(self.shards.len())];
        shard.requests[class_index(sample.status)].fetch_add(1, Ordering::Relaxed);
        shard.request_duration.observe(sample.total);
        if let Some(handler) = sample.handler_time {
            shard.handler_duration.observe(handler);
        }
        if sample.bytes_in > 0 {
            shard.bytes_in.fetch_add(sample.bytes_in, Ordering::Relaxed);
        }
        if sample.bytes_out > 0 {
            shard
                .bytes_out
                .fetch_add(sample.bytes_out, Ordering::Relaxed);
        }
    }

    /// Requests of status class `class` (index into [`CLASSES`]).
    pub(crate) fn requests(&self, class: usize) -> u64 {
        self.sum(|shard| &shard.requests[class])
    }

    fn sum(&self, value: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| value(shard).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// `(sum in seconds, count, per-bucket counts)` of one histogram, as
    /// the encoder takes them.
    fn latencies(&self, which: fn(&Shard) -> &Latencies) -> (f64, u64, Vec<(f64, u64)>) {
        let sum_nanos = self.sum(|shard| &which(shard).sum_nanos);
        let buckets: Vec<(f64, u64)> = (0..=BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS {
                    // What the encoder prints as +Inf.
                    f64::MAX
                } else {
                    bound_seconds(i)
                };
                (bound, self.sum(|shard| &which(shard).buckets[i]))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum_nanos as f64 / 1e9, count, buckets)
    }
}

/// Encodes every [`Series`] of the map at scrape time.
#[derive(Debug)]
pub(crate) struct RequestCollector(pub(crate) Arc<ArcSwap<SeriesMap>>);

/// A series' labels, borrowed for encoding.
struct Labels<'a>(&'a RequestLabels);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let map = self.0.load();
        let mut all: Vec<&Series> = map
            .values()
            .flat_map(|handlers| handlers.values())
            .flat_map(Hosts::values)
            .map(|series| &**series)
            .collect();
        // Same order on every scrape.
        all.sort_by(|a, b| a.labels.cmp(&b.labels));

        let mut requests = encoder.encode_descriptor(
            "requests",
            "Requests answered, by project, handler and status class.",
            None,
            MetricType::Counter,
        )?;
        for series in &all {
            for (class, name) in CLASSES.into_iter().enumerate() {
                let labels = (Labels(&series.labels), [("class", name)]);
                ConstCounter::new(series.requests(class))
                    .encode(requests.encode_family(&labels)?)?;
            }
        }

        for (name, help, which) in [
            (
                "request_duration_seconds",
                "Time from a request's arrival to the last byte of its response.",
                (|shard| &shard.request_duration) as fn(&Shard) -> &Latencies,
            ),
            (
                "handler_duration_seconds",
                "Time from forwarding a request to the handler's response headers.",
                |shard| &shard.handler_duration,
            ),
        ] {
            let mut histogram =
                encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for series in &all {
                let (sum, count, buckets) = series.latencies(which);
                histogram
                    .encode_family(&Labels(&series.labels))?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }

        for (name, help, which) in [
            (
                "request_bytes",
                "Request body bytes received from clients.",
                (|shard| &shard.bytes_in) as fn(&Shard) -> &AtomicU64,
            ),
            (
                "response_bytes",
                "Response body bytes sent to clients.",
                |shard| &shard.bytes_out,
            ),
        ] {
            let mut counter = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for series in &all {
                ConstCounter::new(series.sum(which))
                    .encode(counter.encode_family(&Labels(&series.labels))?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThreadShard;

    fn labels() -> RequestLabels {
        RequestLabels {
            project: "p".into(),
            handler: "h".into(),
            host: None,
        }
    }

    fn observe(series: &Series, total: Duration) {
        observe_on(series, ThreadShard::OTHER, total);
    }

    fn observe_on(series: &Series, shard: ThreadShard, total: Duration) {
        series.record(&RequestSample {
            shard,
            project: "p",
            handler: "h",
            host: None,
            status: 200,
            bytes_in: 1,
            bytes_out: 2,
            total,
            handler_time: None,
        });
    }

    #[test]
    fn buckets_hold_what_is_at_most_their_bound() {
        let series = Series::new(labels(), RequestThreads::default());
        observe(&series, Duration::from_millis(1));
        observe(&series, Duration::from_micros(1001));
        observe(&series, Duration::from_secs(60));
        let (sum, count, buckets) = series.latencies(|shard| &shard.request_duration);
        assert_eq!(count, 3);
        assert!((sum - 60.002_001).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.001, 1), "1 ms is in le=0.001");
        assert_eq!(buckets[1], (0.002, 1), "1.001 ms is in le=0.002");
        assert_eq!(buckets[BUCKETS], (f64::MAX, 1), "a minute is only in +Inf");
        assert!((buckets[BUCKETS - 1].0 - 16.384).abs() < 1e-12);
    }

    #[test]
    fn a_per_host_series_has_one_shard() {
        let threads = RequestThreads::new(2);
        let series = Series::new(
            RequestLabels {
                host: Some("a.test".into()),
                ..labels()
            },
            threads,
        );
        assert_eq!(series.shards.len(), 1);
        observe_on(&series, threads.shard(1), Duration::from_millis(3));
        assert_eq!(series.requests(1), 1);
    }

    #[test]
    fn threads_add_up_across_their_shards() {
        let request_threads = RequestThreads::new(2);
        let series = Arc::new(Series::new(labels(), request_threads));
        assert_eq!(series.shards.len(), 3);
        let threads: Vec<_> = (0..4)
            .map(|index| {
                let series = series.clone();
                std::thread::spawn(move || {
                    // Two request threads, two others (shard 0), and an
                    // index past the shards (clamped to the last).
                    let shard = if index < 2 {
                        request_threads.shard(index * 2)
                    } else {
                        ThreadShard::OTHER
                    };
                    for _ in 0..1000 {
                        observe_on(&series, shard, Duration::from_millis(3));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recording thread");
        }
        assert_eq!(series.requests(1), 4000);
        assert_eq!(series.sum(|shard| &shard.bytes_out), 8000);
        assert_eq!(series.latencies(|shard| &shard.request_duration).1, 4000);
        let used = series
            .shards
            .iter()
            .filter(|shard| shard.requests[1].load(Ordering::Relaxed) > 0)
            .count();
        assert_eq!(
            used, 3,
            "shard 0 (the other two), 1, and the last (clamped)"
        );
    }
}
