//! The exporter: a bounded queue the request path drops finished spans
//! into without waiting, and a task on the main runtime that sends them
//! in batches to the OTLP/HTTP collector (protobuf, `POST /v1/traces`).
//!
//! The queue is a `Vec` behind a mutex, held for a push by the request
//! path and for a swap by the task. The request path wakes the task only
//! when the queue reaches a full batch; otherwise the task wakes on its
//! own every export interval. A channel would wake it for every finished
//! request (measured: ~30 µs of p50 at one connection, docs/performance.md).
//!
//! A full queue drops the request's spans and counts them
//! (`elsinore_trace_spans_dropped_total`), as does a batch the collector
//! refused or did not take within the export timeout: a dead or slow
//! collector costs spans, never a request's time.
//!
//! At shutdown, [`SpanSink::shutdown`] has the task export what is still
//! queued, waiting for it no longer than the export timeout: a dead
//! collector costs the last spans, never the shutdown's time.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use elsinore_metrics::Metrics;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::{watch, Notify};

use crate::span::FinishedSpan;
use crate::Error;

/// Requests whose spans may wait for the exporter; past that, dropped.
pub const QUEUE_CAPACITY: usize = 2048;
/// Requests sent in one export at most; a queue this long wakes the
/// exporter at once.
pub const MAX_BATCH: usize = 512;
/// A failing collector is reported at most this often (the metric counts
/// every span).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How the exporter sends.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// The traces URL (`…/v1/traces`).
    pub url: String,
    /// Time between exports of a partial batch.
    pub interval: Duration,
    /// Longest wait for the collector per export, retries included.
    pub timeout: Duration,
    /// `service.instance.id`.
    pub service_instance: String,
    /// `service.version`.
    pub service_version: &'static str,
}

/// Where the request path hands finished spans: never waits.
#[derive(Debug, Clone)]
pub struct SpanSink {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
}

/// What the request path and the exporter's task share.
#[derive(Debug)]
struct Queue {
    pending: Mutex<Pending>,
    /// Requests `pending` holds at most.
    capacity: usize,
    /// Woken when `pending` reaches [`MAX_BATCH`] requests, not before.
    batch_full: Notify,
    /// Asks the task for a last export of everything queued.
    stop: Notify,
    /// `true` once the task has ended (its last export done or failed).
    done: watch::Sender<bool>,
    /// The longest shutdown waits for that last export.
    timeout: Duration,
}

/// The finished requests not yet taken by the exporter.
#[derive(Debug, Default)]
struct Pending {
    spans: Vec<FinishedSpan>,
    /// Set at shutdown: later spans are dropped, nobody would send them.
    closed: bool,
}

impl Queue {
    fn new(capacity: usize, timeout: Duration) -> Self {
        Self {
            pending: Mutex::new(Pending {
                spans: Vec::with_capacity(MAX_BATCH),
                closed: false,
            }),
            capacity,
            batch_full: Notify::new(),
            stop: Notify::new(),
            done: watch::Sender::new(false),
            timeout,
        }
    }

    /// The pending spans are only pushed and swapped under the lock, so
    /// a panic elsewhere cannot leave them half-changed.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `span`, or drops it when full or closed and says how many
    /// spans were lost. Wakes the exporter when this span completes a
    /// batch.
    fn push(&self, span: FinishedSpan) -> Result<(), u64> {
        let mut pending = self.lock();
        if pending.closed || pending.spans.len() >= self.capacity {
            drop(pending);
            return Err(span.len() as u64);
        }
        pending.spans.push(span);
        let batch_full = pending.spans.len() == MAX_BATCH;
        drop(pending);
        if batch_full {
            // Stores a permit if the task is busy exporting: it comes
            // back for this batch as soon as it is done.
            self.batch_full.notify_one();
        }
        Ok(())
    }

    /// Everything pending, swapped for `empty` (whose capacity is kept
    /// for the next spans); `close` drops whatever comes afterwards.
    fn take(&self, empty: Vec<FinishedSpan>, close: bool) -> Vec<FinishedSpan> {
        let mut pending = self.lock();
        pending.closed |= close;
        std::mem::replace(&mut pending.spans, empty)
    }
}

impl SpanSink {
    /// Queues `span`, or drops and counts it when the queue is full (or
    /// the exporter has stopped).
    pub fn submit(&self, span: FinishedSpan) {
        if let Err(spans) = self.queue.push(span) {
            self.metrics.trace_spans_dropped(spans);
        }
    }

    /// Has the exporter send every span still queued, then stop; returns
    /// when it has, or after the export timeout at most (what was not
    /// sent by then is lost). Spans submitted afterwards are dropped and
    /// counted.
    pub async fn shutdown(&self) {
        let mut done = self.queue.done.subscribe();
        self.queue.stop.notify_one();
        let finished = tokio::time::timeout(self.queue.timeout, done.wait_for(|done| *done));
        if finished.await.is_err() {
            tracing::warn!(
                timeout_ms = self.queue.timeout.as_millis() as u64,
                "trace export: the last spans were not sent within tracing.export_timeout; stopping without them"
            );
        }
    }
}

/// Builds the OTLP exporter and starts its task on the current tokio
/// runtime; the task ends at [`SpanSink::shutdown`], or at its next
/// interval once every [`SpanSink`] is dropped, after a last export.
pub fn start(settings: ExportSettings, metrics: Arc<Metrics>) -> Result<SpanSink, Error> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.url.clone())
        .with_timeout(settings.timeout)
        // No environment headers (OTEL_EXPORTER_OTLP_HEADERS is read by
        // the builder only when none are set here).
        .with_headers(std::collections::HashMap::new())
        .build()
        .map_err(|error| Error::Exporter(error.to_string()))?;
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "elsinore"),
            KeyValue::new("service.instance.id", settings.service_instance.clone()),
            KeyValue::new("service.version", settings.service_version),
        ])
        .build();
    exporter.set_resource(&resource);
    let scope = InstrumentationScope::builder("elsinore")
        .with_version(settings.service_version)
        .build();
    let queue = Arc::new(Queue::new(QUEUE_CAPACITY, settings.timeout));
    let task_queue = queue.clone();
    let task_metrics = metrics.clone();
    tokio::spawn(async move {
        let queue = task_queue;
        let mut ticker = tokio::time::interval(settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = Failures::default();
        let mut spare: Vec<FinishedSpan> = Vec::with_capacity(MAX_BATCH);
        loop {
            let stopping = tokio::select! {
                () = queue.batch_full.notified() => false,
                // Only this task still holds the queue: no sink is left.
                _ = ticker.tick() => Arc::strong_count(&queue) == 1,
                () = queue.stop.notified() => true,
            };
            let mut taken = queue.take(std::mem::take(&mut spare), stopping);
            if stopping {
                last_export(
                    &exporter,
                    &scope,
                    taken,
                    settings.timeout,
                    &task_metrics,
                    &settings.url,
                )
                .await;
                break;
            }
            // While this waits for the collector the queue fills, and
            // past its capacity the request path drops: never blocks.
            while !taken.is_empty() {
                let count = taken.len().min(MAX_BATCH);
                let export = export(&exporter, &scope, &mut taken, count, settings.timeout);
                if let Err((spans, error)) = export.await {
                    task_metrics.trace_spans_dropped(spans);
                    failures.record(spans, &error, &settings.url);
                }
            }
            spare = taken;
        }
        queue.done.send_replace(true);
    });
    Ok(SpanSink { queue, metrics })
}

/// Shutdown's export of everything queued, in batches of [`MAX_BATCH`],
/// all within `timeout`; what does not fit in it is counted as dropped.
async fn last_export(
    exporter: &opentelemetry_otlp::SpanExporter,
    scope: &InstrumentationScope,
    mut queued: Vec<FinishedSpan>,
    timeout: Duration,
    metrics: &Metrics,
    url: &str,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failures = Failures::default();
    while !queued.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let count = queued.len().min(MAX_BATCH);
        let sent = if left.is_zero() {
            let spans = queued.drain(..count).map(|span| span.len()).sum::<usize>() as u64;
            Err((spans, "no time left before shutdown".to_owned()))
        } else {
            export(exporter, scope, &mut queued, count, left).await
        };
        if let Err((spans, error)) = sent {
            metrics.trace_spans_dropped(spans);
            failures.record(spans, &error, url);
        }
    }
}

/// Sends (and removes) the first `count` requests of `queued`; on
/// failure, how many spans were lost and why.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    scope: &InstrumentationScope,
    queued: &mut Vec<FinishedSpan>,
    count: usize,
    timeout: Duration,
) -> Result<(), (u64, String)> {
    let mut spans: Vec<SpanData> = Vec::with_capacity(count * 4);
    for finished in queued.drain(..count) {
        finished.into_span_data(scope, &mut spans);
    }
    let count = spans.len() as u64;
    match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err((count, error.to_string())),
        Err(_) => Err((
            count,
            format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// Failed exports not yet reported in the log.
#[derive(Debug, Default)]
struct Failures {
    last_warned: Option<Instant>,
    unreported: u64,
}

impl Failures {
    /// Logs the first failure, then at most once per [`WARN_EVERY`] with
    /// the spans lost since: a dead collector must not flood the log.
    fn record(&mut self, spans: u64, error: &str, url: &str) {
        self.unreported += spans;
        if self.last_warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        tracing::warn!(
            collector = url,
            spans = self.unreported,
            error,
            "trace export failed; spans dropped (counted in elsinore_trace_spans_dropped_total)"
        );
        self.last_warned = Some(Instant::now());
        self.unreported = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::time::Instant;

    use http::HeaderMap;

    use super::*;
    use crate::{RequestSpan, Sampler, TraceContext};

    fn finished() -> FinishedSpan {
        let cx = TraceContext::of_request(&HeaderMap::new(), &Sampler::new(1.0));
        let mut span = RequestSpan::begin(&cx, Instant::now());
        span.child("queue", Instant::now(), Instant::now());
        span.finish(200, Some(5))
    }

    fn sink(capacity: usize) -> SpanSink {
        SpanSink {
            queue: Arc::new(Queue::new(capacity, Duration::from_secs(1))),
            metrics: Arc::new(Metrics::new(false)),
        }
    }

    fn dropped(sink: &SpanSink) -> String {
        let text = sink.metrics.encode().expect("encode");
        text.lines()
            .find(|line| line.starts_with("elsinore_trace_spans_dropped_total "))
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the exporter would wake now (consumes the wake-up).
    fn woken(queue: &Queue) -> bool {
        pin!(queue.batch_full.notified()).enable()
    }

    #[test]
    fn a_full_queue_drops_without_waiting_and_counts_every_span() {
        let sink = sink(1);
        for _ in 0..3 {
            sink.submit(finished());
        }
        // Two requests of two spans each (server + queue) did not fit.
        assert_eq!(dropped(&sink), "elsinore_trace_spans_dropped_total 4");
    }

    #[test]
    fn only_the_span_that_completes_a_batch_wakes_the_exporter() {
        let sink = sink(QUEUE_CAPACITY);
        for _ in 0..MAX_BATCH - 1 {
            sink.submit(finished());
        }
        assert!(
            !woken(&sink.queue),
            "a partial batch waits for the interval"
        );
        sink.submit(finished());
        assert!(woken(&sink.queue), "a full batch goes at once");
        for _ in 0..10 {
            sink.submit(finished());
        }
        assert!(!woken(&sink.queue), "one wake-up per batch");
        assert_eq!(sink.queue.take(Vec::new(), false).len(), MAX_BATCH + 10);
    }

    #[test]
    fn after_shutdown_takes_the_queue_later_spans_are_dropped_and_counted() {
        let sink = sink(QUEUE_CAPACITY);
        sink.submit(finished());
        assert_eq!(sink.queue.take(Vec::new(), true).len(), 1);
        sink.submit(finished());
        assert_eq!(dropped(&sink), "elsinore_trace_spans_dropped_total 2");
    }
}
