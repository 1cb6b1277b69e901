//! The spans of one sampled request, recorded as plain timestamps on the
//! request path and turned into OpenTelemetry `SpanData` only on the
//! exporter's task.
//!
//! One server span per request and up to three children: `queue` (waiting
//! for a turn at the handler), `connect` (a new connection to the
//! handler) and `handler` (from sending the request to the handler's
//! response headers). Attributes are the route and names from config and
//! manifests, never the path, the query, a header value or a key.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::context::TraceContext;
use crate::ids;

/// A child span of the request's.
#[derive(Debug, Clone, Copy)]
struct Child {
    name: &'static str,
    start: Instant,
    end: Instant,
}

/// What is known so far of a sampled request's span.
#[derive(Debug)]
pub struct RequestSpan {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    remote_parent: Option<[u8; 8]>,
    /// Wall-clock time at `start`: every other instant is placed from it
    /// with the monotonic clock (one `SystemTime` read per request).
    wall_start: SystemTime,
    start: Instant,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    children: Vec<Child>,
}

/// A finished request span, waiting in the exporter's queue.
#[derive(Debug)]
pub struct FinishedSpan {
    span: RequestSpan,
    end: Instant,
    error: bool,
}

impl RequestSpan {
    /// Starts the span of the request of `cx`, now.
    pub fn begin(cx: &TraceContext, start: Instant) -> Self {
        Self {
            trace_id: cx.trace_id,
            span_id: cx.span_id,
            remote_parent: cx.remote_parent,
            wall_start: SystemTime::now() - start.elapsed(),
            start,
            name: Cow::Borrowed("request"),
            attributes: Vec::with_capacity(8),
            children: Vec::new(),
        }
    }

    /// Names the span (`GET /api`, `static`, `admin_api`, …).
    pub fn set_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.name = name.into();
    }

    /// Adds an attribute. Callers pass route prefixes and configured
    /// names only (see the module documentation).
    pub fn attribute(&mut self, key: &'static str, value: impl Into<Value>) {
        self.attributes.push(KeyValue::new(key, value));
    }

    /// Adds a child span `name` from `start` to `end`.
    pub fn child(&mut self, name: &'static str, start: Instant, end: Instant) {
        self.children.push(Child { name, start, end });
    }

    /// Ends the span now with `status` (an HTTP status: 5xx is an error
    /// for a server span) and `bytes_out` response body bytes.
    pub fn finish(mut self, status: u16, bytes_out: Option<u64>) -> FinishedSpan {
        self.attribute("http.response.status_code", i64::from(status));
        if let Some(bytes) = bytes_out {
            self.attribute(
                "http.response.body.size",
                i64::try_from(bytes).unwrap_or(i64::MAX),
            );
        }
        FinishedSpan {
            span: self,
            end: Instant::now(),
            error: status >= 500,
        }
    }
}

impl FinishedSpan {
    /// How many spans this becomes.
    pub fn len(&self) -> usize {
        1 + self.span.children.len()
    }

    /// Never: there is always the server span.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The server span and its children, as the SDK's exporters take them.
    pub fn into_span_data(self, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
        let span = self.span;
        let at = |instant: Instant| span.wall_start + instant.saturating_duration_since(span.start);
        let trace_id = TraceId::from_bytes(span.trace_id);
        let sampled = |id: [u8; 8]| {
            SpanContext::new(
                trace_id,
                SpanId::from_bytes(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            )
        };
        let server_id = SpanId::from_bytes(span.span_id);
        for child in &span.children {
            out.push(SpanData {
                span_context: sampled(ids::span_id()),
                parent_span_id: server_id,
                parent_span_is_remote: false,
                span_kind: if child.name == "handler" {
                    SpanKind::Client
                } else {
                    SpanKind::Internal
                },
                name: Cow::Borrowed(child.name),
                start_time: at(child.start),
                end_time: at(child.end),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: Status::Unset,
                instrumentation_scope: scope.clone(),
            });
        }
        out.push(SpanData {
            span_context: sampled(span.span_id),
            parent_span_id: span
                .remote_parent
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: span.remote_parent.is_some(),
            span_kind: SpanKind::Server,
            name: span.name,
            start_time: span.wall_start,
            end_time: at(self.end),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if self.error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: scope.clone(),
        });
    }
}
