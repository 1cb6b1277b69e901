//! `tracing` in config.json into the request path's [`Tracer`]: the
//! sampler, and when `otlp_endpoint` is set the exporter's task (on the
//! main runtime, off the request threads).

use std::sync::Arc;

use anyhow::Context as _;
use elsinore_config::TracingConfig;
use elsinore_metrics::Metrics;
use elsinore_tracing::{ExportSettings, Tracer};

/// The tracer `config` asks for; starts the exporter if it has an
/// endpoint. Call inside the main runtime.
pub fn tracer(config: &TracingConfig, metrics: Arc<Metrics>) -> anyhow::Result<Tracer> {
    let Some(url) = &config.otlp_traces_url else {
        if config.sample_ratio > 0.0 {
            tracing::warn!(
                sample_ratio = config.sample_ratio,
                "tracing.sample_ratio is set but tracing.otlp_endpoint is not: trace ids are propagated, no span is exported"
            );
        }
        return Ok(Tracer::propagate_only());
    };
    let settings = ExportSettings {
        url: url.clone(),
        interval: config.export_interval,
        timeout: config.export_timeout,
        service_instance: config
            .service_instance
            .clone()
            .unwrap_or_else(default_instance),
        service_version: env!("CARGO_PKG_VERSION"),
    };
    tracing::info!(
        endpoint = %url,
        sample_ratio = config.sample_ratio,
        instance = %settings.service_instance,
        "exporting traces over OTLP/HTTP"
    );
    let sink = elsinore_tracing::start(settings, metrics)
        .context("cannot start trace export (config.json `tracing.otlp_endpoint`)")?;
    Ok(Tracer::new(config.sample_ratio, Some(sink)))
}

/// `service.instance.id` without `tracing.service_instance`: this
/// machine's name and the process id, unique among running Elsinores.
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
