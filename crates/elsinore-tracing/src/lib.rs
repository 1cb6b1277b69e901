//! Distributed tracing: the W3C trace context of each request and the
//! export of sampled requests' spans over OTLP/HTTP.
//!
//! Owns: parsing and checking the client's `traceparent`/`tracestate`,
//! new trace and span ids (a per-thread generator, no syscall per
//! request), the sampling decision (`tracing.sample_ratio`, or the
//! incoming sampled flag), the spans a sampled request records and their
//! export in batches from a background task with a bounded queue.
//!
//! Propagation never depends on the exporter: every request gets a trace
//! id (logged as `trace=` and sent to the handler) whatever the sampling;
//! only a sampled request with an exporter configured builds a span. This
//! crate does not route, rewrite anything but the two trace headers, or
//! read configuration files.

mod context;
mod export;
mod ids;
mod sampler;
mod span;

pub use context::{TraceContext, Traceparent, MAX_TRACESTATE, TRACEPARENT, TRACESTATE};
pub use export::{start, ExportSettings, SpanSink, MAX_BATCH, QUEUE_CAPACITY};
pub use sampler::Sampler;
pub use span::{FinishedSpan, RequestSpan};

use http::HeaderMap;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP exporter could not be built (an invalid endpoint).
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The request path's handle on tracing: the sampler and, when spans are
/// exported, where finished spans go.
#[derive(Debug, Clone)]
pub struct Tracer {
    sampler: Sampler,
    sink: Option<SpanSink>,
}

impl Default for Tracer {
    fn default() -> Self {
        Self::propagate_only()
    }
}

impl Tracer {
    /// Ids propagated, nothing sampled or exported (no `tracing` block).
    pub fn propagate_only() -> Self {
        Self {
            sampler: Sampler::new(0.0),
            sink: None,
        }
    }

    /// Samples `sample_ratio` of new traces; spans go to `sink` if any.
    pub fn new(sample_ratio: f64, sink: Option<SpanSink>) -> Self {
        Self {
            sampler: Sampler::new(sample_ratio),
            sink,
        }
    }

    /// The trace context of a request with `headers`.
    pub fn context(&self, headers: &HeaderMap) -> TraceContext {
        TraceContext::of_request(headers, &self.sampler)
    }

    /// Whether the request of `cx` records spans: sampled, and exported.
    pub fn records(&self, cx: &TraceContext) -> bool {
        cx.sampled && self.sink.is_some()
    }

    /// Hands a finished request span to the exporter (dropped without one).
    pub fn submit(&self, span: FinishedSpan) {
        if let Some(sink) = &self.sink {
            sink.submit(span);
        }
    }

    /// At shutdown, once no request is left: exports the spans still
    /// queued, waiting no longer than `tracing.export_timeout`.
    pub async fn shutdown(&self) {
        if let Some(sink) = &self.sink {
            sink.shutdown().await;
        }
    }
}
