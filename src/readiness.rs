//! When a starting server counts as ready: its listeners bound (done
//! before this is asked) and every handler of the route table able to
//! take a request. What systemd's `READY=1` and an upgrade's hand-over
//! wait for.

use std::sync::Arc;

use arc_swap::ArcSwap;
use elsinore_routes::RouteTable;
use elsinore_supervisor::Unavailable;

/// Waits for every handler in `table` to be ready (each bounded by its own
/// start timeout); returns those that are not, as `project/handler: why`.
pub async fn handlers_ready(table: &Arc<ArcSwap<RouteTable>>) -> Result<(), Vec<String>> {
    let table = table.load_full();
    // One task each: awaited one after another, the start timeouts of
    // handlers that never become ready would add up.
    let checks: Vec<_> = table
        .projects
        .iter()
        .flat_map(|p| p.handlers.iter().cloned())
        .map(|handler| {
            tokio::spawn(async move {
                handler.ready().await.map_err(|why| {
                    let why = match why {
                        Unavailable::Starting { waited } => {
                            format!("not ready after {}", humantime::format_duration(waited))
                        }
                        Unavailable::Crashed { reason, .. } => format!("exited: {reason}"),
                        Unavailable::Stopped => "stopped".to_owned(),
                    };
                    format!("{}/{}: {why}", handler.project(), handler.name())
                })
            })
        })
        .collect();
    let mut failed = Vec::new();
    for check in checks {
        match check.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failed.push(why),
            Err(err) => failed.push(format!("readiness check failed: {err}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}
