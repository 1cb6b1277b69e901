//! `GET /` on the operator listener: one server-rendered HTML page for
//! people (no JavaScript, no external assets, every value escaped):
//! projects and hosts, each handler's state, restarts and last error, host
//! conflicts, certificates, the last reload, events' last run, and request
//! rates computed from the metrics counters.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use elsinore_events::RunRecord;
use elsinore_metrics::Metrics;
use elsinore_routes::RouteTable;

use elsinore_live::ReloadReport;

/// Rates are averaged over about this long.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the operator listener samples the counters for rates.
pub const RATE_SAMPLE_EVERY: Duration = Duration::from_secs(10);

type Totals = Vec<(String, &'static str, u64)>;

/// Recent samples of the request counters, to turn them into rates.
#[derive(Debug)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl Default for Rates {
    fn default() -> Self {
        // Counters start at zero with the process: that is the first sample.
        let mut samples = VecDeque::new();
        samples.push_back((Instant::now(), Vec::new()));
        Self {
            samples: Mutex::new(samples),
        }
    }
}

/// One project's request rates.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProjectRate {
    /// Requests per second, all statuses.
    pub per_second: f64,
    /// 5xx responses per second.
    pub errors_per_second: f64,
    /// Requests since start.
    pub total: u64,
}

impl Rates {
    /// Records the counters now and drops samples older than the window.
    pub fn sample(&self, metrics: &Metrics) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        // A page reloaded in a loop must not grow the queue: replace a
        // sample younger than a second instead of adding one.
        if samples.len() > 1
            && samples
                .back()
                .is_some_and(|(at, _)| now.duration_since(*at) < Duration::from_secs(1))
        {
            samples.pop_back();
        }
        samples.push_back((now, metrics.request_totals()));
        // Keep one sample at or beyond the window's start.
        while samples.len() > 2 && now.duration_since(samples[1].0) >= RATE_WINDOW {
            samples.pop_front();
        }
    }

    /// Each project's rate over (about) the last minute.
    pub fn per_project(&self, metrics: &Metrics) -> Vec<(String, ProjectRate)> {
        self.sample(metrics);
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some((first_at, first)), Some((last_at, last))) = (samples.front(), samples.back())
        else {
            return Vec::new();
        };
        let seconds = last_at.duration_since(*first_at).as_secs_f64().max(1.0);
        let mut out: Vec<(String, ProjectRate)> = Vec::new();
        for (project, class, value) in last {
            let before = first
                .iter()
                .find(|(p, c, _)| p == project && c == class)
                .map_or(0, |(_, _, v)| *v);
            let delta = value.saturating_sub(before) as f64 / seconds;
            let index = match out.iter().position(|(p, _)| p == project) {
                Some(index) => index,
                None => {
                    out.push((project.clone(), ProjectRate::default()));
                    out.len() - 1
                }
            };
            let rate = &mut out[index].1;
            rate.per_second += delta;
            rate.total += value;
            if *class == "5xx" {
                rate.errors_per_second += delta;
            }
        }
        out
    }
}

/// Everything the page shows.
#[derive(Debug)]
pub struct StatusInput<'a> {
    pub table: &'a RouteTable,
    pub last_reload: &'a ReloadReport,
    pub pending_restart: &'a [String],
    pub swaps: u64,
    pub rates: &'a [(String, ProjectRate)],
    /// The newest events run, or why it could not be read.
    pub last_event_run: Result<Option<RunRecord>, String>,
    pub events_rows_deleted: u64,
    /// Names with automatic certificates, when `acme` is configured.
    pub acme: Option<Vec<(String, elsinore_acme::NameStatus)>>,
    /// The tenant hosts with the most 429s from `rate_limits`, most first.
    pub most_limited: Vec<(String, u64)>,
    /// A PostgreSQL state database's reachability (`reachable`, or
    /// `unreachable since …`); `None` with a SQLite one.
    pub state_database: Option<String>,
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted
/// attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}\
th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ready,.external,.ok{color:#166d2a;font-weight:600}\
.starting,.stopping{color:#8a6100;font-weight:600}.sleeping{color:#555;font-style:italic}\
.backoff,.stopped,.failed{color:#b00020;font-weight:600}\
code{font-size:.95em}ul{margin:.2rem 0}";

/// What a browser gets instead of a page when `admin_token_env` is set and
/// it sent no token (with the 401). It holds no data of the server's: its
/// script takes the token from `#token=…` (a fragment never reaches any
/// server or log), keeps it in this tab's `sessionStorage`, removes it from
/// the address bar, and fetches the page it was opened on with
/// `Authorization: Bearer`, so the status page, its links and Refresh work.
/// The status page itself still carries no script.
pub const TOKEN_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Elsinore status: token needed</title></head><body style="font-family:system-ui,sans-serif;margin:1.5rem">
<h1>This operator listener needs a token</h1>
<p id="why">Open this page once as <code>/#token=TOKEN</code>, where TOKEN is the value of the
environment variable that config.json <code>"admin_token_env"</code> names. This tab keeps it and
sends it as <code>Authorization: Bearer</code>; it is never put in a URL sent to the server.
Scripts: <code>curl -H "Authorization: Bearer $TOKEN" http://HOST:PORT/routes</code>.</p>
<script>
(async () => {
  const KEY = "elsinore-operator-token";
  const why = document.getElementById("why");
  const given = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (given) {
    sessionStorage.setItem(KEY, decodeURIComponent(given[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = sessionStorage.getItem(KEY);
  if (!token) return;
  let response;
  try {
    response = await fetch(location.pathname + location.search,
      {headers: {Authorization: "Bearer " + token}, cache: "no-store"});
  } catch (err) {
    why.textContent = "Cannot reach the operator listener: " + err;
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    why.textContent = "The token was refused (401). Open /#token=TOKEN with the right one.";
    return;
  }
  const text = await response.text();
  if ((response.headers.get("content-type") || "").startsWith("text/html")) {
    document.open();
    document.write(text);
    document.close();
  } else {
    const pre = document.createElement("pre");
    pre.textContent = text;
    document.body.replaceChildren(pre);
  }
})();
</script>
</body></html>
"#;

/// The whole page.
pub fn render(input: &StatusInput<'_>) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let now = humantime::format_rfc3339_seconds(SystemTime::now());
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Elsinore status</title><style>{STYLE}</style></head><body>\n\
         <h1>Elsinore status</h1>\n<p>Generated {now}. {} projects, {} hosts, {} table swaps. \
         Refresh the page to update; JSON at <a href=\"/routes\">/routes</a>, \
         metrics at <a href=\"/metrics\">/metrics</a>.</p>\n",
        input.table.projects.len(),
        input.table.hosts.len(),
        input.swaps,
    );
    state_section(&mut html, input);
    reload_section(&mut html, input);
    projects_section(&mut html, input);
    handlers_section(&mut html, input);
    conflicts_section(&mut html, input);
    certificates_section(&mut html, input);
    acme_section(&mut html, input);
    limited_section(&mut html, input);
    events_section(&mut html, input);
    html.push_str("</body></html>\n");
    html
}

/// Shown only with a PostgreSQL state database.
fn state_section(html: &mut String, input: &StatusInput<'_>) {
    let Some(state) = &input.state_database else {
        return;
    };
    let class = if state == "reachable" { "ok" } else { "failed" };
    let _ = writeln!(
        html,
        "<h2 id=\"state-database\">State database</h2>\n<p class=\"{class}\">PostgreSQL: {}.{}</p>",
        escape(state),
        if class == "ok" {
            ""
        } else {
            " Requests are served with the keys held; admin API changes answer 503 until it is back."
        }
    );
}

fn certificates_section(html: &mut String, input: &StatusInput<'_>) {
    html.push_str("<h2 id=\"certificates\">Certificates</h2>\n");
    let now = std::time::SystemTime::now();
    let mut slots = input.table.certs.slots().peekable();
    if slots.peek().is_none() {
        html.push_str(
            "<p>None loaded: without <code>tls_listen</code> and a <code>tls/</code> folder \
             in a host folder, Elsinore serves plain HTTP only.</p>\n",
        );
        return;
    }
    html.push_str(
        "<table><thead><tr><th>For</th><th>Names</th><th>Expires</th><th>Days left</th>\
         <th>Problem</th></tr></thead><tbody>\n",
    );
    for (owner, slot) in slots {
        let cert = slot.cert.as_ref();
        let names = cert.map(|c| c.names.join(", ")).unwrap_or_default();
        let expires = cert
            .map(|c| humantime::format_rfc3339_seconds(c.not_after).to_string())
            .unwrap_or_else(|| "not serving".to_owned());
        let days = cert.map_or_else(String::new, |c| c.days_left(now).to_string());
        let soon = cert.is_some_and(|c| c.days_left(now) < 14);
        let problem = slot.refused.as_deref().unwrap_or("");
        let _ = writeln!(
            html,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if soon || !problem.is_empty() {
                " class=\"failed\""
            } else {
                ""
            },
            escape(&owner.to_string()),
            escape(&names),
            escape(&expires),
            escape(&days),
            escape(problem),
        );
    }
    html.push_str("</tbody></table>\n");
}

/// The hosts `rate_limits` refused most often (nothing until one was).
fn limited_section(html: &mut String, input: &StatusInput<'_>) {
    if input.most_limited.is_empty() {
        return;
    }
    html.push_str(
        "<h2 id=\"rate-limited\">Most rate-limited hosts</h2>\n\
         <table><thead><tr><th>Host</th><th>Requests refused (429) since start</th></tr></thead><tbody>\n",
    );
    for (host, count) in &input.most_limited {
        let _ = writeln!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(host));
    }
    html.push_str("</tbody></table>\n");
}

/// Automatic certificates: per name, the certificate served, when it is
/// renewed, and why the last order failed.
fn acme_section(html: &mut String, input: &StatusInput<'_>) {
    let Some(names) = &input.acme else {
        return;
    };
    html.push_str("<h2 id=\"acme\">Automatic certificates (ACME)</h2>\n");
    if names.is_empty() {
        html.push_str("<p>No name has or waits for one yet.</p>\n");
        return;
    }
    let mut names: Vec<_> = names.iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    html.push_str(
        "<table><thead><tr><th>Name</th><th>Issuer</th><th>Expires</th>\
         <th>Next renewal</th><th>Last error</th></tr></thead><tbody>\n",
    );
    let time = |time: Option<SystemTime>| {
        time.map(|time| humantime::format_rfc3339_seconds(time).to_string())
            .unwrap_or_default()
    };
    for (name, status) in names {
        let error = match (&status.last_error, status.retry_at) {
            (Some(error), Some(retry)) => format!("{error} (retry at {})", time(Some(retry))),
            (Some(error), None) => error.clone(),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            html,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if error.is_empty() {
                ""
            } else {
                " class=\"failed\""
            },
            escape(name),
            escape(status.issuer.as_deref().unwrap_or("")),
            escape(&time(status.not_after)),
            escape(&time(status.next_renewal)),
            escape(&error),
        );
    }
    html.push_str("</tbody></table>\n");
}

fn reload_section(html: &mut String, input: &StatusInput<'_>) {
    let report = input.last_reload;
    let (class, result) = if report.ok() {
        ("ok", "applied")
    } else {
        ("failed", "refused")
    };
    let _ = write!(
        html,
        "<h2 id=\"reload\">Last reload</h2>\n<p>Result: <span class=\"{class}\">{result}</span>; \
         trigger <code>{}</code> at {}, took {:.1} ms, {} changes.</p>\n",
        escape(&report.trigger),
        humantime::format_rfc3339_seconds(report.at),
        report.took.as_secs_f64() * 1000.0,
        report.changes.len(),
    );
    list(html, "Errors", &report.errors);
    list(html, "Warnings", &report.warnings);
    list(html, "Changes", &report.changes);
    list(html, "Waiting for a restart", input.pending_restart);
}

fn list(html: &mut String, title: &str, items: &[impl std::fmt::Display]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(html, "<p>{title}:</p><ul>");
    for item in items {
        let _ = write!(html, "<li>{}</li>", escape(&item.to_string()));
    }
    html.push_str("</ul>\n");
}

fn projects_section(html: &mut String, input: &StatusInput<'_>) {
    html.push_str(
        "<h2 id=\"projects\">Projects</h2>\n<table><thead><tr><th>Project</th><th>Hosts</th>\
         <th>Requests/s (last minute)</th><th>5xx/s</th><th>Requests since start</th>\
         </tr></thead><tbody>\n",
    );
    for project in &input.table.projects {
        let rate = input
            .rates
            .iter()
            .find(|(name, _)| *name == project.name)
            .map(|(_, rate)| rate.clone())
            .unwrap_or_default();
        let hosts: Vec<String> = input
            .table
            .hosts_of(&project.name)
            .iter()
            .map(|h| format!("<li>{}</li>", escape(&h.to_string())))
            .collect();
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><ul>{}</ul></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&project.name),
            hosts.concat(),
            format_rate(rate.per_second),
            format_rate(rate.errors_per_second),
            rate.total,
        );
    }
    html.push_str("</tbody></table>\n");
}

fn handlers_section(html: &mut String, input: &StatusInput<'_>) {
    // The rows first, counting states on the way: the count goes above
    // the table (with hundreds of projects asleep under `idle_stop`, it
    // is what an operator looks for).
    let mut rows = String::new();
    let mut states: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for project in &input.table.projects {
        for (handle, routes) in project.handlers.iter().zip(&project.routes) {
            let status = handle.status();
            let state = status.state.as_str();
            *states.entry(state).or_default() += 1;
            let _ = writeln!(
                rows,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td>\
                 <td class=\"{state}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(handle.project()),
                escape(handle.name()),
                escape(&routes.join(" ")),
                status.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
                status.restarts,
                handle.in_flight(),
                escape(status.last_error.as_deref().unwrap_or("-")),
            );
        }
    }
    let total: usize = states.values().sum();
    let noun = if total == 1 { "handler" } else { "handlers" };
    let counts: Vec<String> = states
        .iter()
        .map(|(state, n)| format!("<span class=\"{state}\">{n} {state}</span>"))
        .collect();
    let _ = writeln!(
        html,
        "<h2 id=\"handlers\">Handlers</h2>\n<p>{total} {noun}: {}.</p>",
        counts.join(", ")
    );
    html.push_str(
        "<table><thead><tr><th>Project</th><th>Handler</th>\
         <th>Routes</th><th>State</th><th>PID</th><th>Restarts</th><th>In flight</th>\
         <th>Last error</th></tr></thead><tbody>\n",
    );
    html.push_str(&rows);
    html.push_str("</tbody></table>\n");
}

fn conflicts_section(html: &mut String, input: &StatusInput<'_>) {
    html.push_str("<h2 id=\"conflicts\">Host conflicts</h2>\n");
    if input.table.conflicts.is_empty() {
        html.push_str("<p>None.</p>\n");
        return;
    }
    html.push_str(
        "<table><thead><tr><th>Host</th><th>Served by</th><th>Refused for</th></tr></thead><tbody>\n",
    );
    for conflict in &input.table.conflicts {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&conflict.host),
            escape(&conflict.kept_by),
            escape(&conflict.refused_for),
        );
    }
    html.push_str("</tbody></table>\n");
}

fn events_section(html: &mut String, input: &StatusInput<'_>) {
    let _ = write!(
        html,
        "<h2 id=\"events\">Events</h2>\n<p>Rows deleted since start: {}.</p>\n",
        input.events_rows_deleted
    );
    match &input.last_event_run {
        Ok(Some(run)) => {
            let _ = writeln!(
                html,
                "<p>Last run: #{} ({}) finished {}; {} rows deleted, {} unreadable, {} blocked, {} errors.</p>",
                run.run_id,
                escape(&run.trigger),
                epoch_ms(run.finished_at),
                run.deleted,
                run.unreadable,
                run.blocked,
                run.errors,
            );
        }
        Ok(None) => html.push_str("<p>Last run: none yet.</p>\n"),
        Err(err) => {
            let _ = writeln!(
                html,
                "<p class=\"failed\">Cannot read the run log: {}</p>",
                escape(err)
            );
        }
    }
}

/// `1.25/s`, or `42/s` from ten up.
fn format_rate(per_second: f64) -> String {
    if per_second >= 10.0 {
        format!("{per_second:.0}/s")
    } else {
        format!("{per_second:.2}/s")
    }
}

fn epoch_ms(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
