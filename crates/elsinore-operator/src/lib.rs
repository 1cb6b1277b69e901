//! The operator listener behind `admin_listen`: health, readiness, the
//! live route table and forced reloads as JSON for scripts and people with
//! curl, framework events, Prometheus metrics at `/metrics` and an HTML
//! status page at `/`.
//!
//! It owns:
//! - who it answers ([`guard`]): the `Host` (this listener's address,
//!   `localhost`, `admin_hosts`; against DNS rebinding), then the optional
//!   bearer token of `admin_token_env` (not for `/healthz`, `/readyz`),
//!   then `Origin`/`Sec-Fetch-Site` on state changes;
//! - its endpoints ([`Operator`]) and the JSON they answer;
//! - the scrape-time half of `/metrics` ([`LiveSource`]): handler states,
//!   swaps, reload failures and event rows, read when scraped;
//! - the status page and the request rates it shows ([`Rates`]);
//! - every error it answers, with its status code ([`OperatorError`]: one
//!   exhaustive match), written by the proxy's one JSON error writer.
//!
//! It is served by the proxy's server machinery ([`start`], [`serve`] over
//! [`elsinore_proxy::serve_with`]), like the public listeners:
//! `limits.max_connections` and `max_connections_per_ip`, the header read
//! and idle timeouts, HTTP/1.1 and h2c, and a drain within
//! `shutdown_grace` on shutdown. A bare port still binds on loopback:
//! without a token, the listener must only be reachable from a trusted
//! interface.
//!
//! It must not: serve tenants (their hosts and the tenant admin API are
//! the public listeners'), bind its own socket (the binary binds
//! `admin_listen` and hands it the listener), touch SQLite other than
//! through the [`elsinore_events::EventScheduler`] it is handed, change
//! the live state other than through [`elsinore_live::Live::reload`], or
//! write its own error JSON.

mod endpoints;
mod error;
pub mod guard;
mod listener;
mod metrics_source;
mod routes_json;
mod status_page;

pub use endpoints::Operator;
pub use error::OperatorError;
pub use listener::{serve, start};
pub use metrics_source::LiveSource;
pub use status_page::{ProjectRate, Rates, RATE_SAMPLE_EVERY, RATE_WINDOW};
