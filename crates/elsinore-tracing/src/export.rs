//! The exporter: a bounded queue the request path drops finished spans
//! into without waiting, and a task on the main runtime that sends them
//! in batches to the OTLP/HTTP collector (protobuf, `POST /v1/traces`).
//!
//! A full queue drops the request's spans and counts them
//! (`elsinore_trace_spans_dropped_total`), as does a batch the collector
//! refused or did not take within the export timeout: a dead or slow
//! collector costs spans, never a request's time.

use std::sync::Arc;
use std::time::Duration;

use elsinore_metrics::Metrics;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tokio::sync::mpsc;

use crate::span::FinishedSpan;
use crate::Error;

/// Requests whose spans may wait for the exporter; past that, dropped.
pub const QUEUE_CAPACITY: usize = 2048;
/// Requests sent in one export at most.
pub const MAX_BATCH: usize = 512;

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
}

/// Builds the OTLP exporter and starts its task on the current tokio
/// runtime; the task ends when every [`SpanSink`] is dropped, after a
/// last export.
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
    tokio::spawn(async move {
        let mut batch: Vec<FinishedSpan> = Vec::with_capacity(MAX_BATCH);
        let mut ticker = tokio::time::interval(settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let open = tokio::select! {
                received = finished.recv_many(&mut batch, MAX_BATCH) => received > 0,
                _ = ticker.tick() => true,
            };
            if !batch.is_empty() && (batch.len() >= MAX_BATCH || !open || finished.is_empty()) {
                // While this waits for the collector the queue fills, and
                // past its capacity the request path drops: never blocks.
                export(
                    &exporter,
                    &scope,
                    &mut batch,
                    settings.timeout,
                    &task_metrics,
                )
                .await;
            }
            if !open {
                break;
            }
        }
    });
    Ok(SpanSink { queue, metrics })
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    scope: &InstrumentationScope,
    batch: &mut Vec<FinishedSpan>,
    timeout: Duration,
    metrics: &Metrics,
) {
    let mut spans: Vec<SpanData> = Vec::with_capacity(batch.len() * 4);
    for finished in batch.drain(..) {
        finished.into_span_data(scope, &mut spans);
    }
    let count = spans.len() as u64;
    let outcome = tokio::time::timeout(timeout, exporter.export(spans)).await;
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} ms", timeout.as_millis()),
    };
    metrics.trace_spans_dropped(count);
    tracing::warn!(spans = count, error = %failure, "trace export failed; spans dropped");
}
