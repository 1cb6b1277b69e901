//! Elsinore's Prometheus metrics: one [`Metrics`] registry, created once at
//! startup, shared by the request path (which only bumps atomics) and the
//! operator listener (which encodes it for `GET /metrics`).
//!
//! This crate owns the metric names, their labels and help texts, and the
//! text encoding (done by `prometheus-client`, never by hand). Values that
//! already live elsewhere (handler states and restarts, table swaps, reload
//! failures, events rows deleted) are read at scrape time through
//! [`ScrapeSource`] instead of being copied on every change.
//!
//! Label cardinality is bounded by configuration: project and handler names
//! come from config.json and project.toml, status classes are five fixed
//! strings, and the `host` label is only added when `metrics.per_host` is
//! on. Its value is the host pattern as declared (`*.example.com` for any
//! name under that wildcard), [`DEFAULT_HOST_LABEL`] for hosts answered by
//! `default_project`, or the preview host: never a name the client chose.
//! Per-host series are capped at [`MAX_HOST_SERIES`]; past it, new hosts
//! are counted under [`OTHER_HOST_LABEL`]. Requests for unknown hosts are
//! counted with empty project and handler labels and no host.

mod series;
mod threads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel as _, EncodeLabelSet, EncodeMetric as _, LabelSetEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use series::{class_index, RequestCollector, Series, SeriesMap, CLASSES};
pub use threads::{RequestThreads, ThreadShard};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Handler label for requests answered by Elsinore's admin API.
pub const ADMIN_HANDLER: &str = "_admin";
/// The handler label of static files Elsinore served from a host
/// folder's `public/`.
pub const STATIC_HANDLER: &str = "_static";

/// The `host` label of requests `default_project` answers for a host no
/// project declares (one series for all of them).
pub const DEFAULT_HOST_LABEL: &str = "_default";
/// The `host` label of requests to hosts past [`MAX_HOST_SERIES`].
pub const OTHER_HOST_LABEL: &str = "_other";
/// Per-host series (one per project, handler and host) kept at most with
/// `metrics.per_host`: each costs a few hundred bytes of memory and ~1 KB
/// of every scrape.
pub const MAX_HOST_SERIES: usize = 10_000;

/// Tenant hosts whose rate-limited requests are tallied one by one.
const MAX_LIMITED_HOSTS: usize = 10_000;
/// Where further hosts' rate-limited requests are tallied.
const OTHER_HOSTS: &str = "_other";

/// Every handler state, in the order `elsinore_handler_state` lists them.
pub const HANDLER_STATES: [&str; 7] = [
    "starting", "ready", "backoff", "stopping", "stopped", "external", "sleeping",
];

/// Labels of the per-request families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestLabels {
    /// Project name; empty when the host is unknown.
    pub project: String,
    /// Handler name, [`ADMIN_HANDLER`], or empty when none was chosen.
    pub handler: String,
    /// The host label, only with `metrics.per_host`.
    pub host: Option<String>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("project", self.project.as_str()).encode(encoder.encode_label())?;
        ("handler", self.handler.as_str()).encode(encoder.encode_label())?;
        // Absent rather than empty: with per_host off there is no host
        // dimension at all.
        if let Some(host) = &self.host {
            ("host", host.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of `elsinore_handler_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ErrorLabels {
    project: String,
    handler: String,
    kind: &'static str,
}

impl EncodeLabelSet for ErrorLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("project", self.project.as_str()).encode(encoder.encode_label())?;
        ("handler", self.handler.as_str()).encode(encoder.encode_label())?;
        ("kind", self.kind).encode(encoder.encode_label())
    }
}

/// Labels of `elsinore_key_auth_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AuthLabels {
    project: String,
    status: u16,
}

impl EncodeLabelSet for AuthLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("project", self.project.as_str()).encode(encoder.encode_label())?;
        ("status", self.status).encode(encoder.encode_label())
    }
}

/// Labels of `elsinore_rate_limited_total`: a project and one of
/// `per_ip`, `per_host`, `per_project` (bounded by the config).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LimitedLabels {
    project: String,
    scope: &'static str,
}

impl EncodeLabelSet for LimitedLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("project", self.project.as_str()).encode(encoder.encode_label())?;
        ("scope", self.scope).encode(encoder.encode_label())
    }
}

/// Why a request to a handler failed, for `elsinore_handler_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerErrorKind {
    /// The connection was refused (nothing listening, or connect timed out).
    Refused,
    /// The connection broke or the handler answered something not HTTP.
    Reset,
    /// No response headers within the handler's response timeout.
    Timeout,
    /// The handler was starting, crashed or stopped: Elsinore did not try.
    Unavailable,
}

impl HandlerErrorKind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One finished request, as the request path reports it.
#[derive(Debug)]
pub struct RequestSample<'a> {
    /// The thread that answered it: the request metrics are split per
    /// request thread (see [`RequestThreads`]).
    pub shard: ThreadShard,
    /// Project name; empty when the host is unknown.
    pub project: &'a str,
    /// Handler name, [`ADMIN_HANDLER`], or empty when none was chosen.
    pub handler: &'a str,
    /// The routed host's label (the host pattern as declared,
    /// [`DEFAULT_HOST_LABEL`], or the preview host); used only with
    /// `metrics.per_host`.
    pub host: Option<&'a str>,
    /// The response status code.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// From the request's arrival to the last byte of the response.
    pub total: Duration,
    /// From sending to the handler to its response headers, when a
    /// handler was asked.
    pub handler_time: Option<Duration>,
}

/// One handler as seen at scrape time.
#[derive(Debug, Clone)]
pub struct HandlerSample {
    /// Project name.
    pub project: String,
    /// Handler name.
    pub handler: String,
    /// One of [`HANDLER_STATES`].
    pub state: &'static str,
    /// Unexpected exits since the handler was (re)created.
    pub restarts: u64,
    /// Starts asked for by a request while it slept (`idle_stop`,
    /// `start = "on_demand"`) since the handler was (re)created.
    pub wakes: u64,
}

/// One name with an automatic (ACME) certificate, as seen at scrape time.
#[derive(Debug, Clone)]
pub struct AcmeSample {
    /// The host name.
    pub name: String,
    /// `notAfter` of the certificate served, in seconds since the epoch;
    /// `None` before the first one is issued.
    pub not_after: Option<i64>,
    /// Whether the last order for the name failed (until one succeeds).
    pub failing: bool,
}

/// Values read at scrape time from the parts that own them.
pub trait ScrapeSource: std::fmt::Debug + Send + Sync + 'static {
    /// Every name ACME serves or tries to (none without `acme`).
    fn acme(&self) -> Vec<AcmeSample> {
        Vec::new()
    }
    /// Every handler of the live table.
    fn handlers(&self) -> Vec<HandlerSample>;
    /// Route-table swaps since start.
    fn table_swaps(&self) -> u64;
    /// Reloads refused (the old table kept) since start.
    fn reload_failures(&self) -> u64;
    /// Rows deleted by the framework events since start.
    fn events_rows_deleted(&self) -> u64;
}

/// Every metric Elsinore exports. Create once, share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    per_host: bool,
    /// How many ways request series are split.
    threads: RequestThreads,
    registry: Mutex<Registry>,
    handler_errors: Family<ErrorLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    rate_limited: Family<LimitedLabels, Counter>,
    /// 429s by rate_limits per tenant host, for the status page's most
    /// limited hosts (not a metric label: names under a wildcard are the
    /// client's choice). At most [`MAX_LIMITED_HOSTS`] names, then
    /// [`OTHER_HOSTS`].
    limited_hosts: Mutex<HashMap<String, u64>>,
    open_connections: Gauge,
    /// Spans dropped by the trace exporter (queue full, export failed).
    trace_spans_dropped: Counter,
    /// Every request series (requests by class, body bytes, latencies),
    /// created once per (project, handler, host): recording a request is
    /// then two FNV-hashed `&str` lookups (and a host one with per_host)
    /// in an `ArcSwap` snapshot (no lock, no allocation) plus atomic adds
    /// on its thread's own shard (see `series`). Encoded at scrape time.
    series: Arc<ArcSwap<SeriesMap>>,
    /// Per-host series created so far; held while a series is created, so
    /// creations (once per label set) are counted one at a time.
    host_series: Mutex<usize>,
    /// [`MAX_HOST_SERIES`], lowered by tests.
    max_host_series: usize,
}

impl Metrics {
    /// All metrics, registered and at zero. With `per_host`, request
    /// metrics carry a `host` label.
    pub fn new(per_host: bool) -> Self {
        let mut registry = Registry::with_prefix("elsinore");
        let series = Arc::new(ArcSwap::default());
        // elsinore_requests, _request_duration_seconds,
        // _handler_duration_seconds, _request_bytes, _response_bytes.
        registry.register_collector(Box::new(RequestCollector(Arc::clone(&series))));
        let handler_errors = Family::<ErrorLabels, Counter>::default();
        let auth_failures = Family::<AuthLabels, Counter>::default();
        let rate_limited = Family::<LimitedLabels, Counter>::default();
        let open_connections = Gauge::default();
        let trace_spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans of sampled requests not exported: the exporter's queue was full, or the collector refused or did not answer an export",
            trace_spans_dropped.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429 by rate_limits, by project and scope (per_ip, per_host, per_project)",
            rate_limited.clone(),
        );
        registry.register(
            "handler_errors",
            "Requests a handler could not answer, by kind (refused, reset, timeout, unavailable)",
            handler_errors.clone(),
        );
        registry.register(
            "key_auth_failures",
            "Admin API requests refused for their key (401 missing/invalid, 403 insufficient, 429 throttled)",
            auth_failures.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open on the public listener",
            open_connections.clone(),
        );
        Self {
            per_host,
            registry: Mutex::new(registry),
            handler_errors,
            auth_failures,
            rate_limited,
            limited_hosts: Mutex::default(),
            open_connections,
            trace_spans_dropped,
            series,
            host_series: Mutex::new(0),
            max_host_series: MAX_HOST_SERIES,
            threads: RequestThreads::default(),
        }
    }

    /// Splits each request series (without a host label) into one shard
    /// per request thread of `threads`, so that recording a request writes
    /// only its own thread's cache lines. Without it, one shard.
    #[must_use]
    pub fn with_request_threads(mut self, threads: RequestThreads) -> Self {
        self.threads = threads;
        self
    }

    /// The series of one label set, created (once per label set) when
    /// missing; past the per-host cap, the (project, handler) series of
    /// [`OTHER_HOST_LABEL`] instead.
    fn create_series(&self, project: &str, handler: &str, host: &str) -> Arc<Series> {
        let mut host_series = self
            .host_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Only this function stores a new map, under the lock: the snapshot
        // is the latest, and another thread may have created the series.
        let map = self.series.load_full();
        let hosts = map.get(project).and_then(|handlers| handlers.get(handler));
        if let Some(series) = hosts.and_then(|hosts| hosts.get(host)) {
            return series.clone();
        }
        let host = if !host.is_empty() && *host_series >= self.max_host_series {
            if let Some(series) = hosts.and_then(|hosts| hosts.get(OTHER_HOST_LABEL)) {
                return series.clone();
            }
            OTHER_HOST_LABEL
        } else {
            host
        };
        if !host.is_empty() {
            *host_series += 1;
        }
        let series = Arc::new(Series::new(
            RequestLabels {
                project: project.to_owned(),
                handler: handler.to_owned(),
                host: self.per_host.then(|| host.to_owned()),
            },
            self.threads,
        ));
        let mut map = SeriesMap::clone(&map);
        map.entry(project.to_owned())
            .or_default()
            .entry(handler.to_owned())
            .or_default()
            .get_or_insert(host, &series);
        self.series.store(Arc::new(map));
        series
    }

    /// Counts `spans` spans the trace exporter dropped.
    pub fn trace_spans_dropped(&self, spans: u64) {
        self.trace_spans_dropped.inc_by(spans);
    }

    /// Whether request metrics carry a `host` label.
    pub fn per_host(&self) -> bool {
        self.per_host
    }

    /// Adds the scrape-time values (handler states, restarts, swaps,
    /// reload failures, events rows). Call once at startup.
    pub fn register_source(&self, source: impl ScrapeSource) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_collector(Box::new(SourceCollector(Box::new(source))));
    }

    /// Records one finished request: the counters and histograms.
    pub fn record(&self, sample: &RequestSample<'_>) {
        let host = match (self.per_host, sample.host) {
            (true, Some(host)) => host,
            _ => "",
        };
        // Looked up in the snapshot, no reference count taken: the common
        // case. Created once per label set.
        let map = self.series.load();
        let created;
        let series = match map
            .get(sample.project)
            .and_then(|handlers| handlers.get(sample.handler))
            .and_then(|hosts| hosts.get(host))
        {
            Some(series) => series,
            None => {
                created = self.create_series(sample.project, sample.handler, host);
                &created
            }
        };
        series.record(sample);
    }

    /// Counts a failed request to a handler.
    pub fn handler_error(&self, project: &str, handler: &str, kind: HandlerErrorKind) {
        self.handler_errors
            .get_or_create(&ErrorLabels {
                project: project.to_owned(),
                handler: handler.to_owned(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts an admin API request refused for its key (401, 403 or 429).
    pub fn key_auth_failure(&self, project: &str, status: u16) {
        self.auth_failures
            .get_or_create(&AuthLabels {
                project: project.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a request for `host` refused by the `scope` rate limit of
    /// `project`.
    pub fn rate_limited(&self, project: &str, scope: &'static str, host: Option<&str>) {
        self.rate_limited
            .get_or_create(&LimitedLabels {
                project: project.to_owned(),
                scope,
            })
            .inc();
        let Some(host) = host else {
            return;
        };
        let mut hosts = self
            .limited_hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = hosts.get_mut(host) {
            *count += 1;
        } else if hosts.len() < MAX_LIMITED_HOSTS {
            hosts.insert(host.to_owned(), 1);
        } else {
            *hosts.entry(OTHER_HOSTS.to_owned()).or_default() += 1;
        }
    }

    /// The `n` tenant hosts with the most 429s from rate_limits since
    /// start, most first.
    pub fn most_limited_hosts(&self, n: usize) -> Vec<(String, u64)> {
        let hosts = self
            .limited_hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut top: Vec<(String, u64)> = hosts.iter().map(|(h, c)| (h.clone(), *c)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(n);
        top
    }

    /// Marks a client connection open until the guard is dropped.
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.open_connections.inc();
        ConnectionGuard(self.open_connections.clone())
    }

    /// The registry in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }

    /// Requests counted so far per `(project, class)`, summed over
    /// handlers and hosts: what the status page turns into rates.
    pub fn request_totals(&self) -> Vec<(String, &'static str, u64)> {
        let mut totals = Vec::new();
        for (project, handlers) in self.series.load().iter() {
            for (index, class) in CLASSES.into_iter().enumerate() {
                let count: u64 = handlers
                    .values()
                    .flat_map(series::Hosts::values)
                    .map(|series| series.requests(index))
                    .sum();
                totals.push((project.clone(), class, count));
            }
        }
        totals
    }
}

/// `2xx` for 200 and so on.
pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

/// Decrements `elsinore_open_connections` when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug)]
struct SourceCollector(Box<dyn ScrapeSource>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HandlerLabels<'a> {
    project: &'a str,
    handler: &'a str,
}

impl EncodeLabelSet for HandlerLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("project", self.project).encode(encoder.encode_label())?;
        ("handler", self.handler).encode(encoder.encode_label())
    }
}

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let handlers = self.0.handlers();

        let restarts = encoder.encode_descriptor(
            "handler_restarts",
            "Unexpected handler exits (each followed by a restart) since the handler was created",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        let mut restarts = restarts;
        for h in &handlers {
            let labels = HandlerLabels {
                project: &h.project,
                handler: &h.handler,
            };
            ConstCounter::new(h.restarts).encode(restarts.encode_family(&labels)?)?;
        }

        let mut wakes = encoder.encode_descriptor(
            "handler_wakes",
            "Starts of a sleeping handler asked for by a request (idle_stop, start = \"on_demand\") since the handler was created",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for h in &handlers {
            let labels = HandlerLabels {
                project: &h.project,
                handler: &h.handler,
            };
            ConstCounter::new(h.wakes).encode(wakes.encode_family(&labels)?)?;
        }

        let mut states = encoder.encode_descriptor(
            "handler_state",
            "1 for each handler's current state (starting, ready, backoff, stopping, stopped, external, sleeping), else 0",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for h in &handlers {
            for state in HANDLER_STATES {
                let labels = (
                    HandlerLabels {
                        project: &h.project,
                        handler: &h.handler,
                    },
                    [("state", state)],
                );
                ConstGauge::new(i64::from(h.state == state))
                    .encode(states.encode_family(&labels)?)?;
            }
        }

        let acme = self.0.acme();
        if !acme.is_empty() {
            let mut expiry = encoder.encode_descriptor(
                "acme_certificate_expiry_timestamp_seconds",
                "notAfter of the ACME certificate served for each name (absent before the first issuance)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for sample in &acme {
                if let Some(not_after) = sample.not_after {
                    ConstGauge::new(not_after)
                        .encode(expiry.encode_family(&[("name", sample.name.as_str())])?)?;
                }
            }
            let mut failing = encoder.encode_descriptor(
                "acme_order_failing",
                "1 while the last ACME order for the name failed (retried with backoff), else 0",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for sample in &acme {
                ConstGauge::new(i64::from(sample.failing))
                    .encode(failing.encode_family(&[("name", sample.name.as_str())])?)?;
            }
        }

        for (name, help, value) in [
            (
                "table_swaps",
                "Route tables put in service (startup and each reload that changed something)",
                self.0.table_swaps(),
            ),
            (
                "reload_failures",
                "Reloads refused because config or a project was invalid (the previous table kept serving)",
                self.0.reload_failures(),
            ),
            (
                "events_rows_deleted",
                "Rows deleted by SoftDeleteCleanup and SessionExpiry since start",
                self.0.events_rows_deleted(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_limited_hosts_are_counted_most_first_and_bounded() {
        let metrics = Metrics::new(false);
        for _ in 0..3 {
            metrics.rate_limited("p", "per_ip", Some("busy.test"));
        }
        metrics.rate_limited("p", "per_host", Some("quiet.test"));
        metrics.rate_limited("p", "per_project", None);
        assert_eq!(
            metrics.most_limited_hosts(10),
            [("busy.test".to_owned(), 3), ("quiet.test".to_owned(), 1)]
        );
        // Names past the cap (clients choose names under a wildcard) are
        // counted together.
        for i in 0..MAX_LIMITED_HOSTS {
            metrics.rate_limited("p", "per_ip", Some(&format!("h{i}.test")));
        }
        let top = metrics.most_limited_hosts(1);
        assert_eq!(top[0].0, "busy.test");
        let all = metrics.most_limited_hosts(usize::MAX);
        assert_eq!(all.len(), MAX_LIMITED_HOSTS + 1);
        assert!(all
            .iter()
            .any(|(host, count)| host == OTHER_HOSTS && *count == 2));
    }

    #[derive(Debug)]
    struct Fixed;

    impl ScrapeSource for Fixed {
        fn handlers(&self) -> Vec<HandlerSample> {
            vec![HandlerSample {
                project: "othello".into(),
                handler: "web".into(),
                state: "ready",
                restarts: 2,
                wakes: 3,
            }]
        }
        fn table_swaps(&self) -> u64 {
            3
        }
        fn reload_failures(&self) -> u64 {
            1
        }
        fn events_rows_deleted(&self) -> u64 {
            7
        }
    }

    #[test]
    fn encodes_every_family_with_labels() {
        let metrics = Metrics::new(false);
        metrics.register_source(Fixed);
        metrics.record(&RequestSample {
            shard: ThreadShard::OTHER,
            project: "othello",
            handler: "web",
            host: Some("ignored.test"),
            status: 204,
            bytes_in: 10,
            bytes_out: 20,
            total: Duration::from_millis(3),
            handler_time: Some(Duration::from_millis(2)),
        });
        metrics.handler_error("othello", "web", HandlerErrorKind::Timeout);
        metrics.key_auth_failure("othello", 401);
        metrics.rate_limited("othello", "per_ip", Some("othello.test"));
        let _open = metrics.connection_opened();
        let text = metrics.encode().expect("encodes");
        for needle in [
            "elsinore_requests_total{project=\"othello\",handler=\"web\",class=\"2xx\"} 1",
            "elsinore_request_bytes_total{project=\"othello\",handler=\"web\"} 10",
            "elsinore_response_bytes_total{project=\"othello\",handler=\"web\"} 20",
            "elsinore_request_duration_seconds_count{project=\"othello\",handler=\"web\"} 1",
            "elsinore_handler_duration_seconds_count{project=\"othello\",handler=\"web\"} 1",
            "elsinore_handler_errors_total{project=\"othello\",handler=\"web\",kind=\"timeout\"} 1",
            "elsinore_key_auth_failures_total{project=\"othello\",status=\"401\"} 1",
            "elsinore_rate_limited_total{project=\"othello\",scope=\"per_ip\"} 1",
            "elsinore_open_connections 1",
            "elsinore_handler_restarts_total{project=\"othello\",handler=\"web\"} 2",
            "elsinore_handler_state{project=\"othello\",handler=\"web\",state=\"ready\"} 1",
            "elsinore_handler_state{project=\"othello\",handler=\"web\",state=\"backoff\"} 0",
            "elsinore_handler_state{project=\"othello\",handler=\"web\",state=\"sleeping\"} 0",
            "elsinore_handler_wakes_total{project=\"othello\",handler=\"web\"} 3",
            "elsinore_table_swaps_total 3",
            "elsinore_reload_failures_total 1",
            "elsinore_events_rows_deleted_total 7",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text.contains("ignored.test"),
            "no host label without per_host"
        );
        let totals = metrics.request_totals();
        assert!(
            totals.contains(&("othello".to_owned(), "2xx", 1)),
            "{totals:?}"
        );
        assert!(
            totals.contains(&("othello".to_owned(), "5xx", 0)),
            "{totals:?}"
        );
    }

    fn sample<'a>(handler: &'a str, host: &'a str) -> RequestSample<'a> {
        RequestSample {
            shard: ThreadShard::OTHER,
            project: "p",
            handler,
            host: Some(host),
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            total: Duration::ZERO,
            handler_time: None,
        }
    }

    #[test]
    fn per_host_series_past_the_cap_count_as_other() {
        let metrics = Metrics {
            max_host_series: 3,
            ..Metrics::new(true)
        };
        for host in ["a.test", "*.b.test", "c.test", "d.test", "e.test", "a.test"] {
            metrics.record(&sample("web", host));
        }
        // A new handler of a host already counted is a new series too.
        metrics.record(&sample("api", "a.test"));
        let text = metrics.encode().expect("encodes");
        let count = |handler: &str, host: &str| {
            let needle = format!(
                "elsinore_requests_total{{project=\"p\",handler=\"{handler}\",host=\"{host}\",class=\"2xx\"}} "
            );
            text.lines()
                .find_map(|line| line.strip_prefix(needle.as_str()))
                .map(|n| n.parse::<u64>().expect("a count"))
        };
        assert_eq!(count("web", "a.test"), Some(2), "{text}");
        assert_eq!(count("web", "*.b.test"), Some(1), "{text}");
        assert_eq!(count("web", "c.test"), Some(1), "{text}");
        assert_eq!(count("web", OTHER_HOST_LABEL), Some(2), "{text}");
        assert_eq!(count("api", OTHER_HOST_LABEL), Some(1), "{text}");
        for absent in ["d.test", "e.test", "handler=\"api\",host=\"a.test\""] {
            assert!(!text.contains(absent), "{absent} has a series:\n{text}");
        }
    }

    #[test]
    fn concurrent_first_requests_share_one_series() {
        let metrics = Arc::new(Metrics::new(true));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        metrics.record(&sample("web", "*.x.test"));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(
            metrics.request_totals(),
            [
                ("p".to_owned(), "1xx", 0),
                ("p".to_owned(), "2xx", 400),
                ("p".to_owned(), "3xx", 0),
                ("p".to_owned(), "4xx", 0),
                ("p".to_owned(), "5xx", 0)
            ]
        );
        assert_eq!(*metrics.host_series.lock().expect("lock"), 1);
    }

    #[test]
    fn host_label_only_when_given() {
        let metrics = Metrics::new(true);
        metrics.record(&RequestSample {
            shard: ThreadShard::OTHER,
            project: "p",
            handler: "h",
            host: Some("a.test"),
            status: 500,
            bytes_in: 0,
            bytes_out: 0,
            total: Duration::ZERO,
            handler_time: None,
        });
        let text = metrics.encode().expect("encodes");
        assert!(text.contains(
            "elsinore_requests_total{project=\"p\",handler=\"h\",host=\"a.test\",class=\"5xx\"} 1"
        ));
    }
}
