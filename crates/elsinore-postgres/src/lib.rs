//! Connections to PostgreSQL, for `database` and `state_database` given as
//! `postgres://` URLs.
//!
//! Owns: turning a [`PostgresUrl`] into a connected blocking
//! [`postgres::Client`] with Elsinore's defaults (a connect timeout, an
//! `application_name` that says which part of which front door holds the
//! connection, TLS through rustls when the URL asks for it) and errors that
//! name the URL without its password; advisory locks ([`lock`]) for work
//! one front door of a fleet does at a time; [`StateHealth`], whether a
//! thread following the state database still reaches it.
//!
//! Must not: run on the request path (every call blocks; callers own a
//! thread or use `spawn_blocking`), nor know any table: the shared
//! database's events and the state database's tables live with their
//! owners (`elsinore-events`, `elsinore-store`).

mod connect;
mod health;
mod listen;
pub mod lock;
mod tls;

pub use connect::{connect, describe, PgError, DEFAULT_CONNECT_TIMEOUT};
pub use elsinore_config::PostgresUrl;
pub use health::StateHealth;
pub use listen::wait_for_notification;
pub use postgres;
