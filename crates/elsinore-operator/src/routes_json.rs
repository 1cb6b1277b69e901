//! The JSON of `GET /routes` and `POST /reload`: hosts, projects and
//! their handlers from the live table, certificates, a reload report.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use elsinore_live::ReloadReport;
use elsinore_routes::RouteTable;
use elsinore_supervisor::HandlerHandle;
use elsinore_tls::CertStore;
use serde_json::{json, Value};

pub fn hosts_json(table: &RouteTable) -> Value {
    let hosts: serde_json::Map<String, Value> = table
        .hosts
        .entries()
        .into_iter()
        .map(|(host, route)| {
            let project = &route.project;
            let handlers: Vec<Value> = project
                .handlers
                .iter()
                .zip(&project.routes)
                .map(|(handle, routes)| {
                    json!({"name": handle.name(), "routes": routes, "state": handle.state().as_str()})
                })
                .collect();
            let public = route.site.as_ref().map(|site| site.root().display().to_string());
            (
                host,
                json!({"project": project.name, "handlers": handlers, "public": public}),
            )
        })
        .collect();
    Value::Object(hosts)
}

pub fn projects_json(table: &RouteTable) -> Value {
    let projects: serde_json::Map<String, Value> = table
        .projects
        .iter()
        .map(|project| {
            let handlers: Vec<Value> = project
                .handlers
                .iter()
                .zip(&project.routes)
                .map(|(handle, routes)| handler_json(handle, routes))
                .collect();
            let hosts: Vec<String> = table
                .hosts_of(&project.name)
                .iter()
                .map(ToString::to_string)
                .collect();
            (
                project.name.clone(),
                json!({
                    "path": project.path.display().to_string(),
                    "hosts": hosts,
                    "handlers": handlers,
                }),
            )
        })
        .collect();
    Value::Object(projects)
}

fn handler_json(handle: &HandlerHandle, routes: &[String]) -> Value {
    let status = handle.status();
    json!({
        "name": handle.name(),
        "routes": routes,
        "state": status.state.as_str(),
        "address": handle.address().to_string(),
        "pid": status.pid,
        "restarts": status.restarts,
        "wakes": status.wakes,
        "last_error": status.last_error,
        "in_flight": handle.in_flight(),
        "queued": handle.queued(),
    })
}

pub fn report_json(report: &ReloadReport) -> Value {
    json!({
        "at": humantime::format_rfc3339_millis(report.at).to_string(),
        "at_ms": report.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "trigger": report.trigger,
        "ok": report.ok(),
        "swapped": report.swapped,
        "took_ms": report.took.as_secs_f64() * 1000.0,
        "changes": report.changes,
        "errors": report.errors,
        "warnings": report.warnings,
    })
}

/// The `certificates` section of `/routes`: per host folder (and
/// `(default)`), what is served and whether newer files were refused.
pub fn certificates_json(certs: &CertStore, now: SystemTime) -> Value {
    let entries: serde_json::Map<String, Value> = certs
        .slots()
        .map(|(owner, slot)| {
            let cert = slot.cert.as_ref();
            (
                owner.to_string(),
                json!({
                    "names": cert.map_or(&[][..], |c| &c.names[..]),
                    "not_after": cert.map(|c| rfc3339(c.not_after)),
                    "days_left": cert.map(|c| c.days_left(now)),
                    "cert": path(&slot.cert_path),
                    "key": path(&slot.key_path),
                    "serving": cert.is_some(),
                    "error": slot.refused,
                }),
            )
        })
        .collect();
    Value::Object(entries)
}

fn path(path: &Path) -> String {
    path.display().to_string()
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
