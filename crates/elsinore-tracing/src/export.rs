//! The exporter: a bounded queue the request path drops finished spans
//! into without waiting, and a task on the main runtime that sends them
//! in batches to the OTLP/HTTP collector (protobuf, `POST /v1/traces`).
//!
//! A full queue drops the request's spans and counts them
//! (`elsinore_trace_spans_dropped_total`), as does a batch the collector
//! refused or did not take within the export timeout: a dead or slow
//! collector costs spans, never a request's time.
//!
//! At shutdown, [`SpanSink::shutdown`] has the task export what is still
//! queued, waiting for it no longer than the export timeout: a dead
//! collector costs the last spans, never the shutdown's time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use elsinore_metrics::Metrics;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, watch, Notify};

use crate::span::FinishedSpan;
use crate::Error;

/// Requests whose spans may wait for the exporter; past that, dropped.
pub const QUEUE_CAPACITY: usize = 2048;
/// Requests sent in one export at most.
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
    queue: mpsc::Sender<FinishedSpan>,
    metrics: Arc<Metrics>,
    stop: Arc<Stop>,
}

/// Shutdown's handle on the exporter's task.
#[derive(Debug)]
struct Stop {
    /// Asks the task for a last export of everything queued.
    requested: Notify,
    /// `true` once the task has ended (its last export done or failed).
    done: watch::Sender<bool>,
    /// The longest shutdown waits for that last export.
    timeout: Duration,
}

impl SpanSink {
    /// Queues `span`, or drops and counts it when the queue is full (or
    /// the exporter has stopped).
    pub fn submit(&self, span: FinishedSpan) {
        if let Err(error) = self.queue.try_send(span) {
            let span = match error {
                mpsc::error::TrySendError::Full(span) | mpsc::error::TrySendError::Closed(span) => {
                    span
                }
            };
            self.metrics.trace_spans_dropped(span.len() as u64);
        }
    }

    /// Has the exporter send every span still queued, then stop; returns
    /// when it has, or after the export timeout at most (what was not
    /// sent by then is lost). Spans submitted afterwards are dropped and
    /// counted.
    pub async fn shutdown(&self) {
        let mut done = self.stop.done.subscribe();
        self.stop.requested.notify_one();
        let finished = tokio::time::timeout(self.stop.timeout, done.wait_for(|done| *done));
        if finished.await.is_err() {
            tracing::warn!(
                timeout_ms = self.stop.timeout.as_millis() as u64,
                "trace export: the last spans were not sent within tracing.export_timeout; stopping without them"
            );
        }
    }
}

/// Builds the OTLP exporter and starts its task on the current tokio
/// runtime; the task ends at [`SpanSink::shutdown`], or when every
/// [`SpanSink`] is dropped, after a last export.
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
    let (queue, mut finished) = mpsc::channel::<FinishedSpan>(QUEUE_CAPACITY);
    let task_metrics = metrics.clone();
    let stop = Arc::new(Stop {
        requested: Notify::new(),
        done: watch::Sender::new(false),
        timeout: settings.timeout,
    });
    let task_stop = stop.clone();
    tokio::spawn(async move {
        let mut batch: Vec<FinishedSpan> = Vec::with_capacity(MAX_BATCH);
        let mut ticker = tokio::time::interval(settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = Failures::default();
        loop {
            // `batch` is below MAX_BATCH here (a full one was exported), so
            // `recv_many` returns 0 only when every sink is gone.
            let room = MAX_BATCH - batch.len();
            let (open, due) = tokio::select! {
                received = finished.recv_many(&mut batch, room) => (received > 0, false),
                _ = ticker.tick() => (true, true),
                () = task_stop.requested.notified() => {
                    // Nothing is sent after this: later spans are counted
                    // as dropped by `submit`.
                    finished.close();
                    while let Ok(span) = finished.try_recv() {
                        batch.push(span);
                    }
                    last_export(&exporter, &scope, batch, settings.timeout, &task_metrics, &settings.url).await;
                    break;
                }
            };
            if !batch.is_empty() && (due || !open || batch.len() >= MAX_BATCH) {
                // While this waits for the collector the queue fills, and
                // past its capacity the request path drops: never blocks.
                let export = export(&exporter, &scope, &mut batch, settings.timeout);
                if let Err((spans, error)) = export.await {
                    task_metrics.trace_spans_dropped(spans);
                    failures.record(spans, &error, &settings.url);
                }
            }
            if !open {
                break;
            }
        }
        task_stop.done.send_replace(true);
    });
    Ok(SpanSink {
        queue,
        metrics,
        stop,
    })
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
        let rest = queued.split_off(queued.len().min(MAX_BATCH));
        let mut batch = std::mem::replace(&mut queued, rest);
        let sent = if left.is_zero() {
            let spans = batch.iter().map(FinishedSpan::len).sum::<usize>() as u64;
            Err((spans, "no time left before shutdown".to_owned()))
        } else {
            export(exporter, scope, &mut batch, left).await
        };
        if let Err((spans, error)) = sent {
            metrics.trace_spans_dropped(spans);
            failures.record(spans, &error, url);
        }
    }
}

/// Sends `batch` (emptied); on failure, how many spans were lost and why.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    scope: &InstrumentationScope,
    batch: &mut Vec<FinishedSpan>,
    timeout: Duration,
) -> Result<(), (u64, String)> {
    let mut spans: Vec<SpanData> = Vec::with_capacity(batch.len() * 4);
    for finished in batch.drain(..) {
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

    #[test]
    fn a_full_queue_drops_without_waiting_and_counts_every_span() {
        let metrics = Arc::new(Metrics::new(false));
        let (queue, _held) = mpsc::channel(1);
        let sink = SpanSink {
            queue,
            metrics: metrics.clone(),
            stop: Arc::new(Stop {
                requested: Notify::new(),
                done: watch::Sender::new(false),
                timeout: Duration::from_secs(1),
            }),
        };
        for _ in 0..3 {
            sink.submit(finished());
        }
        let text = metrics.encode().expect("encode");
        // Two requests of two spans each (server + queue) did not fit.
        assert!(
            text.lines()
                .any(|line| line == "elsinore_trace_spans_dropped_total 4"),
            "{text}"
        );
    }
}
