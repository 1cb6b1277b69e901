//! The admin API Elsinore answers itself on every host, for the project
//! owning that host: `/admin/api/_keys…` (per-host admin keys) and
//! `/admin/api/_hosts…` (the project's host folders). Paths, bodies and
//! status codes follow Hamlet's admin API; see `docs/admin-api.md`.
//!
//! Every call needs the owning project's key. Key changes run on
//! `spawn_blocking` (SQLite) and reload the [`KeyRing`] before answering,
//! so a revoked key stops working by the time the client hears 204.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use elsinore_config::Hostname;
use elsinore_keys::{
    now_ms, Actor, Caller, CreatedKey, KeyHash, KeyInfo, KeyRing, KeyStore, Scope,
};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, X_HAMLET_HOST_KEY, X_HAMLET_PROJECT_KEY};
use crate::cors::Cors;
use crate::host_folders::{self, RemoveError};
use crate::refresh::TableRefresh;
use crate::throttle::Throttle;
use crate::{ProjectRoute, ProxyBody, ProxyError, RouteTable};

/// Largest request body accepted (bytes).
pub const MAX_BODY: usize = 16 * 1024;
/// How long a host change may take to become live before the API answers
/// 202 instead of 201/204.
pub const LIVE_WAIT: Duration = Duration::from_secs(5);
const LIVE_POLL: Duration = Duration::from_millis(20);
const KEYS: &str = "/admin/api/_keys";
const HOSTS: &str = "/admin/api/_hosts";

/// Whether Elsinore answers `path` itself instead of a handler.
pub fn is_admin_path(path: &str) -> bool {
    [KEYS, HOSTS].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The admin API's state: the key database, the key ring it keeps fresh,
/// the CORS origins and the table-refresh hook (the failure throttle is
/// the proxy's, see [`AdminRequest::throttle`]).
#[derive(Debug)]
pub struct AdminApi {
    store: Arc<KeyStore>,
    ring: Arc<KeyRing>,
    cors: Cors,
    refresh: Option<Arc<dyn TableRefresh>>,
}

/// What the admin API knows about the request besides the request itself.
pub(crate) struct AdminRequest<'a> {
    pub host: &'a str,
    pub project: &'a Arc<ProjectRoute>,
    pub table: &'a ArcSwap<RouteTable>,
    /// The client's address (see [`crate::trust`]): what the throttle
    /// counts and the log names.
    pub client: IpAddr,
    pub request_id: &'a HeaderValue,
    /// The proxy's failure throttle, shared with proxied requests that
    /// present a key: guesses count in one window whichever path they take.
    pub throttle: &'a Throttle,
}

impl AdminApi {
    /// An admin API over `store` that reloads `ring` after every change and
    /// allows the (validated) `cors_origins`.
    pub fn new(store: Arc<KeyStore>, ring: Arc<KeyRing>, cors_origins: &[String]) -> Self {
        Self {
            store,
            ring,
            cors: Cors::new(cors_origins),
            refresh: None,
        }
    }

    /// Asks `refresh` for a rescan after creating or removing a host folder.
    pub fn with_refresh(mut self, refresh: Arc<dyn TableRefresh>) -> Self {
        self.refresh = Some(refresh);
        self
    }

    /// The key ring the request path checks host keys against.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// Answers one admin API request; errors become JSON responses here so
    /// that they carry CORS headers too.
    pub(crate) async fn handle(
        &self,
        request: Request<Incoming>,
        cx: AdminRequest<'_>,
    ) -> Response<ProxyBody> {
        let origin = self.cors.allow(request.headers().get(ORIGIN));
        let preflight = request.method() == Method::OPTIONS;
        let result = if preflight {
            preflight_response(request.headers(), origin.clone())
        } else {
            self.serve(request, &cx).await
        };
        let mut response = result.unwrap_or_else(|error| {
            if error.status().is_server_error() {
                tracing::warn!(request_id = ?cx.request_id, %error, details = ?error, "admin API request failed");
            }
            error.into_response(cx.request_id)
        });
        let headers = response.headers_mut();
        Cors::add_vary(headers);
        // Bodies may hold a new key: never cache them.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let (Some(origin), false) = (origin, preflight) {
            Cors::add_headers(headers, origin);
        }
        response
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        cx: &AdminRequest<'_>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let ip = cx.client;
        if let Err(retry_after) = cx.throttle.check(ip, Instant::now()) {
            return Err(ProxyError::Throttled { retry_after });
        }
        self.authorize(request.headers(), request.uri().query(), cx)?;
        let (parts, body) = request.into_parts();
        let caller = Caller {
            actor: Actor::Project,
            client: ip.to_string(),
        };
        match Endpoint::parse(&parts.method, parts.uri.path())? {
            Endpoint::ListKeys => self.list_keys(cx).await,
            Endpoint::CreateKey => {
                let body: CreateKeyBody = read_json(&parts.headers, body).await?;
                self.create_key(cx, body, caller).await
            }
            Endpoint::RotateKey(id) => {
                let body: RotateBody = read_json(&parts.headers, body).await?;
                self.rotate_key(cx, id, body, caller).await
            }
            Endpoint::RevokeKey(id) => self.revoke_key(cx, id, caller).await,
            Endpoint::ListHosts => Ok(list_hosts(cx)),
            Endpoint::CreateHost => {
                let body: CreateHostBody = read_json(&parts.headers, body).await?;
                self.create_host(cx, body, caller).await
            }
            Endpoint::DeleteHost(name) => self.delete_host(cx, name, caller).await,
        }
    }

    /// Only the owning project's key opens the admin API: 401 without a
    /// valid credential (counted by the throttle), 403 for a credential that
    /// is valid elsewhere (another project's key, a host key).
    fn authorize(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        cx: &AdminRequest<'_>,
    ) -> Result<(), ProxyError> {
        let project = cx.project;
        let presented = auth::header_str(headers, &X_HAMLET_PROJECT_KEY)
            .or_else(|| auth::bearer(headers))
            .map(Cow::Borrowed)
            .or_else(|| auth::query_key(query));
        let host_key = auth::header_str(headers, &X_HAMLET_HOST_KEY);
        let now = now_ms();
        if let Some(key) = &presented {
            let hash = KeyHash::of(key);
            if project.key_hash.as_ref().is_some_and(|h| h.ct_eq(&hash)) {
                return Ok(());
            }
            let table = cx.table.load();
            let other_project = table.projects.iter().any(|p| {
                p.name != project.name && p.key_hash.as_ref().is_some_and(|h| h.ct_eq(&hash))
            });
            if other_project {
                tracing::warn!(client = %cx.client, host = cx.host, project = %project.name, "admin API: another project's key used");
                return Err(ProxyError::Forbidden {
                    reason: "this key belongs to another project; a project key only opens its own project's hosts".into(),
                });
            }
        }
        let host_key_used = presented
            .as_deref()
            .into_iter()
            .chain(host_key)
            .any(|key| self.ring.opens(cx.host, &project.name, key, now));
        if host_key_used {
            return Err(ProxyError::Forbidden {
                reason: "a host key cannot use the admin API; it needs the project key".into(),
            });
        }
        cx.throttle.record_failure(cx.client, Instant::now());
        tracing::warn!(client = %cx.client, host = cx.host, project = %project.name, "admin API: missing or wrong project key");
        let reason = if project.key_hash.is_none() {
            format!(
                "project {} has no key (config.json \"key\" or \"key_env\"), so its admin API is closed",
                project.name
            )
        } else if presented.is_none() {
            "missing project key: send X-Hamlet-Project-Key or Authorization: Bearer <key>".into()
        } else {
            "wrong project key".into()
        };
        Err(ProxyError::Unauthorized { reason })
    }

    async fn list_keys(&self, cx: &AdminRequest<'_>) -> Result<Response<ProxyBody>, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        let keys = self
            .blocking(move |store, _| store.list(&host, &project))
            .await?;
        let now = now_ms();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "host": cx.host,
                "project": cx.project.name,
                "keys": keys.iter().map(|k| key_json(k, now)).collect::<Vec<_>>(),
            }),
        ))
    }

    async fn create_key(
        &self,
        cx: &AdminRequest<'_>,
        body: CreateKeyBody,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        let created = self
            .blocking(move |store, ring| {
                let created = store.create(&host, &project, &body.label, &caller)?;
                reload(store, ring);
                Ok(created)
            })
            .await?;
        tracing::info!(host = cx.host, project = %cx.project.name, client = %cx.client, key_id = created.info.id, prefix = %created.info.prefix, "admin API: host key created");
        Ok(json_response(StatusCode::CREATED, &created_json(&created)))
    }

    async fn rotate_key(
        &self,
        cx: &AdminRequest<'_>,
        id: i64,
        body: RotateBody,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        let rotated = self
            .blocking(move |store, ring| {
                let scope = Scope::Host {
                    host: &host,
                    project: &project,
                };
                let rotated = store.rotate(scope, id, body.grace_seconds, &caller)?;
                reload(store, ring);
                Ok(rotated)
            })
            .await?;
        tracing::info!(host = cx.host, project = %cx.project.name, client = %cx.client, old_key_id = id, key_id = rotated.new.info.id, grace_seconds = body.grace_seconds, "admin API: host key rotated");
        let mut body = created_json(&rotated.new);
        body["replaces"] = json!(id);
        body["old_key"] = key_json(&rotated.old, now_ms());
        Ok(json_response(StatusCode::CREATED, &body))
    }

    async fn revoke_key(
        &self,
        cx: &AdminRequest<'_>,
        id: i64,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        self.blocking(move |store, ring| {
            let scope = Scope::Host {
                host: &host,
                project: &project,
            };
            let revocation = store.revoke(scope, id, &caller)?;
            reload(store, ring);
            Ok(revocation)
        })
        .await?;
        tracing::info!(host = cx.host, project = %cx.project.name, client = %cx.client, key_id = id, "admin API: host key revoked");
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    async fn create_host(
        &self,
        cx: &AdminRequest<'_>,
        body: CreateHostBody,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(text) = body.hostname else {
            return Err(ProxyError::BadRequest {
                reason: "expected a JSON body {\"hostname\": \"…\"}".into(),
            });
        };
        let name = parse_hostname(&text)?;
        let project = cx.project.name.as_str();
        {
            let table = cx.table.load();
            if declares(&table, project, name.as_str()) {
                return Err(ProxyError::Conflict {
                    reason: format!("{name} is already a host of this project"),
                    entries: Vec::new(),
                });
            }
            if table
                .hosts
                .lookup(name.as_str())
                .is_some_and(|owner| owner.project.name != project)
            {
                return Err(ProxyError::Conflict {
                    reason: format!("{name} is served by another project"),
                    entries: Vec::new(),
                });
            }
        }
        let (dir, folder) = (cx.project.path.clone(), name.clone());
        let created = tokio::task::spawn_blocking(move || host_folders::create(&dir, &folder))
            .await
            .map_err(join_error)?
            .map_err(|err| {
                tracing::error!(project, host = %name, %err, "admin API: cannot create a host folder");
                ProxyError::Internal {
                    reason: format!("cannot create the folder hosts/{name}/; the details are in Elsinore's log"),
                }
            })?;
        self.audit_host(&name, project, "host_create", caller).await;
        tracing::info!(project, host = %name, client = %cx.client, ?created, "admin API: host folder created");
        let live = self
            .wait_live(cx.table, |table| declares(table, project, name.as_str()))
            .await;
        Ok(host_change_response(
            &name,
            project,
            live,
            StatusCode::CREATED,
        ))
    }

    async fn delete_host(
        &self,
        cx: &AdminRequest<'_>,
        text: &str,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let name = parse_hostname(text)?;
        let project = cx.project.name.as_str();
        let (dir, folder) = (cx.project.path.clone(), name.clone());
        tokio::task::spawn_blocking(move || host_folders::remove(&dir, &folder))
            .await
            .map_err(join_error)?
            .map_err(|err| match err {
                RemoveError::NotFound => ProxyError::NotFound {
                    reason: format!("this project has no host folder for {name}"),
                },
                RemoveError::NotEmpty(entries) => ProxyError::Conflict {
                    reason: format!(
                        "hosts/{name}/ is not empty; Elsinore only removes empty host folders: move its content away first"
                    ),
                    entries,
                },
                RemoveError::Symlink => ProxyError::Conflict {
                    reason: format!("hosts/{name} is a symbolic link; an operator must remove it"),
                    entries: Vec::new(),
                },
                RemoveError::Io(err) => {
                    tracing::error!(project, host = %name, %err, "admin API: cannot remove a host folder");
                    ProxyError::Internal {
                        reason: format!("cannot remove hosts/{name}/; the details are in Elsinore's log"),
                    }
                }
            })?;
        self.audit_host(&name, project, "host_delete", caller).await;
        tracing::info!(project, host = %name, client = %cx.client, "admin API: host folder removed");
        let gone = self
            .wait_live(cx.table, |table| !declares(table, project, name.as_str()))
            .await;
        if gone {
            Ok(empty_response(StatusCode::NO_CONTENT))
        } else {
            Ok(host_change_response(
                &name,
                project,
                false,
                StatusCode::NO_CONTENT,
            ))
        }
    }

    /// Asks for a rescan, then waits (at most [`LIVE_WAIT`]) until `done`
    /// holds for the live table.
    async fn wait_live(
        &self,
        table: &ArcSwap<RouteTable>,
        done: impl Fn(&RouteTable) -> bool,
    ) -> bool {
        if let Some(refresh) = &self.refresh {
            refresh.request_rescan();
        }
        let deadline = Instant::now() + LIVE_WAIT;
        loop {
            if done(&table.load()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(LIVE_POLL).await;
        }
    }

    /// The folder change is done whether or not its audit row is written;
    /// a failure to record it is logged loudly instead of failing the call.
    async fn audit_host(
        &self,
        name: &Hostname,
        project: &str,
        action: &'static str,
        caller: Caller,
    ) {
        let (host, project_name) = (name.to_string(), project.to_owned());
        let result = self
            .blocking(move |store, _| {
                store.record_host_change(&host, &project_name, action, &caller)
            })
            .await;
        if result.is_err() {
            tracing::error!(host = %name, project, action, "admin API: the change is done but its audit row was not written");
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&KeyStore, &KeyRing) -> elsinore_keys::Result<T> + Send + 'static,
    ) -> Result<T, ProxyError> {
        let (store, ring) = (self.store.clone(), self.ring.clone());
        tokio::task::spawn_blocking(move || work(&store, &ring))
            .await
            .map_err(join_error)?
            .map_err(key_error)
    }
}

/// After a change: reload the ring now. If that fails the change is still
/// committed, and the ring's watcher picks it up within a second.
fn reload(store: &KeyStore, ring: &KeyRing) {
    if let Err(err) = ring.reload(store) {
        tracing::warn!(%err, "cannot reload the key ring; the watcher will retry");
    }
}

/// The admin API's endpoints.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'a> {
    ListKeys,
    CreateKey,
    RotateKey(i64),
    RevokeKey(i64),
    ListHosts,
    CreateHost,
    DeleteHost(&'a str),
}

impl<'a> Endpoint<'a> {
    fn parse(method: &Method, path: &'a str) -> Result<Self, ProxyError> {
        let wrong = |allow| ProxyError::WrongMethod {
            method: method.to_string(),
            allow,
        };
        let not_found = || ProxyError::NotFound {
            reason: format!("no admin API endpoint {method} {path}"),
        };
        let (base, rest) = if let Some(rest) = path.strip_prefix(KEYS) {
            (KEYS, rest)
        } else if let Some(rest) = path.strip_prefix(HOSTS) {
            (HOSTS, rest)
        } else {
            return Err(not_found());
        };
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        match (base, rest) {
            (KEYS, "") => match *method {
                Method::GET => Ok(Self::ListKeys),
                Method::POST => Ok(Self::CreateKey),
                _ => Err(wrong("GET, POST, OPTIONS")),
            },
            (KEYS, rest) => match rest.split_once('/') {
                None => match *method {
                    Method::DELETE => Ok(Self::RevokeKey(parse_id(rest)?)),
                    _ => Err(wrong("DELETE, OPTIONS")),
                },
                Some((id, "rotate")) => match *method {
                    Method::POST => Ok(Self::RotateKey(parse_id(id)?)),
                    _ => Err(wrong("POST, OPTIONS")),
                },
                Some(_) => Err(not_found()),
            },
            (_, "") => match *method {
                Method::GET => Ok(Self::ListHosts),
                Method::POST => Ok(Self::CreateHost),
                _ => Err(wrong("GET, POST, OPTIONS")),
            },
            (_, name) => match *method {
                Method::DELETE => Ok(Self::DeleteHost(name)),
                _ => Err(wrong("DELETE, OPTIONS")),
            },
        }
    }
}

fn parse_id(text: &str) -> Result<i64, ProxyError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ProxyError::BadRequest {
            reason: format!("a key id is a positive whole number, not {text:?}"),
        })
}

/// A hostname from the API: an exact name (no wildcard, no port), never a
/// path. The text is used as given: `%2e%2e` is not decoded, so it is
/// refused like `..` and `/`.
fn parse_hostname(text: &str) -> Result<Hostname, ProxyError> {
    if text.starts_with("*.") {
        return Err(ProxyError::BadRequest {
            reason: format!("{text:?}: wildcard hosts are declared by the operator (a folder hosts/{text}/), not through the API"),
        });
    }
    Hostname::parse(text).map_err(|err| ProxyError::BadRequest {
        reason: format!(
            "{err}; a hostname is dot-separated labels of letters, digits, '-' and '_'"
        ),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    #[serde(default)]
    label: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_seconds: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateHostBody {
    hostname: Option<String>,
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; an empty body is `{}`.
async fn read_json<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Incoming,
) -> Result<T, ProxyError> {
    let too_large = ProxyError::BodyTooLarge { limit: MAX_BODY };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large);
    }
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|err| {
            if err.downcast_ref::<LengthLimitError>().is_some() {
                too_large.clone()
            } else {
                ProxyError::BadRequest {
                    reason: "the request body could not be read".into(),
                }
            }
        })?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|err| ProxyError::BadRequest {
        reason: format!("invalid JSON body: {err}"),
    })
}

/// Names the project declares in the live table (exact or wildcard).
fn declares(table: &RouteTable, project: &str, name: &str) -> bool {
    table
        .hosts
        .entries()
        .iter()
        .any(|(host, owner)| host == name && owner.project.name == project)
}

fn list_hosts(cx: &AdminRequest<'_>) -> Response<ProxyBody> {
    let table = cx.table.load();
    let hosts: Vec<String> = table
        .hosts
        .entries()
        .into_iter()
        .filter(|(_, owner)| owner.project.name == cx.project.name)
        .map(|(host, _)| host)
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"project": cx.project.name, "hosts": hosts}),
    )
}

fn host_change_response(
    name: &Hostname,
    project: &str,
    live: bool,
    done: StatusCode,
) -> Response<ProxyBody> {
    if live {
        return json_response(
            done,
            &json!({"hostname": name.as_str(), "project": project, "live": true}),
        );
    }
    let message = if done == StatusCode::CREATED {
        format!("hosts/{name}/ was created but is not served yet; it will be once Elsinore rescans the project's hosts (GET /admin/api/_hosts shows it then)")
    } else {
        format!("hosts/{name}/ was removed but the host is still served; it stops once Elsinore rescans the project's hosts")
    };
    json_response(
        StatusCode::ACCEPTED,
        &json!({"hostname": name.as_str(), "project": project, "live": done == StatusCode::NO_CONTENT, "message": message}),
    )
}

fn key_json(key: &KeyInfo, now: i64) -> Value {
    json!({
        "id": key.id,
        "label": key.label,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "grace_until": key.grace_until,
        "status": key.status(now).as_str(),
    })
}

fn created_json(created: &CreatedKey) -> Value {
    let info = &created.info;
    json!({
        "id": info.id,
        "key": created.key.expose(),
        "label": info.label,
        "prefix": info.prefix,
        "host": info.host,
        "created_at": info.created_at,
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty_response(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

/// OPTIONS: a CORS preflight from an allowed origin gets 204 and the CORS
/// headers; from any other origin 403 without them; without `Origin` (not
/// a preflight) 204 with `Allow`.
fn preflight_response(
    headers: &HeaderMap,
    origin: Option<HeaderValue>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut response = empty_response(StatusCode::NO_CONTENT);
    match (headers.get(ORIGIN), origin) {
        (None, _) => {
            response.headers_mut().insert(
                ALLOW,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
        }
        (Some(_), Some(origin)) => Cors::add_preflight_headers(response.headers_mut(), origin),
        (Some(sent), None) => {
            return Err(ProxyError::OriginNotAllowed {
                origin: String::from_utf8_lossy(sent.as_bytes()).into_owned(),
            })
        }
    }
    Ok(response)
}

fn key_error(err: elsinore_keys::Error) -> ProxyError {
    use elsinore_keys::Error as E;
    match err {
        E::NotFound { .. } => ProxyError::NotFound {
            reason: err.to_string(),
        },
        E::AlreadyRevoked { .. } => ProxyError::Conflict {
            reason: err.to_string(),
            entries: Vec::new(),
        },
        E::InvalidLabel(_) | E::InvalidGrace { .. } => ProxyError::BadRequest {
            reason: err.to_string(),
        },
        _ => {
            tracing::error!(error = %err, "admin API: key database failed");
            ProxyError::Internal {
                reason: "the key database failed; the details are in Elsinore's log".into(),
            }
        }
    }
}

fn join_error(err: tokio::task::JoinError) -> ProxyError {
    tracing::error!(error = %err, "admin API: a blocking task failed");
    ProxyError::Internal {
        reason: "an internal task failed; the details are in Elsinore's log".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths() {
        for path in [
            "/admin/api/_keys",
            "/admin/api/_keys/",
            "/admin/api/_keys/3/rotate",
            "/admin/api/_hosts",
            "/admin/api/_hosts/a.localhost",
        ] {
            assert!(is_admin_path(path), "{path}");
        }
        for path in ["/admin/api/_keysX", "/admin/api/other", "/admin/", "/"] {
            assert!(!is_admin_path(path), "{path}");
        }
    }

    #[test]
    fn endpoints() {
        let parse = |method: Method, path| Endpoint::parse(&method, path);
        assert_eq!(
            parse(Method::GET, "/admin/api/_keys"),
            Ok(Endpoint::ListKeys)
        );
        assert_eq!(
            parse(Method::POST, "/admin/api/_keys/"),
            Ok(Endpoint::CreateKey)
        );
        assert_eq!(
            parse(Method::DELETE, "/admin/api/_keys/7"),
            Ok(Endpoint::RevokeKey(7))
        );
        assert_eq!(
            parse(Method::POST, "/admin/api/_keys/7/rotate"),
            Ok(Endpoint::RotateKey(7))
        );
        assert_eq!(
            parse(Method::GET, "/admin/api/_hosts"),
            Ok(Endpoint::ListHosts)
        );
        assert_eq!(
            parse(Method::POST, "/admin/api/_hosts"),
            Ok(Endpoint::CreateHost)
        );
        assert_eq!(
            parse(Method::DELETE, "/admin/api/_hosts/../etc"),
            Ok(Endpoint::DeleteHost("../etc"))
        );
        assert!(matches!(
            parse(Method::PUT, "/admin/api/_keys"),
            Err(ProxyError::WrongMethod { .. })
        ));
        assert!(matches!(
            parse(Method::DELETE, "/admin/api/_keys/abc"),
            Err(ProxyError::BadRequest { .. })
        ));
        assert!(matches!(
            parse(Method::DELETE, "/admin/api/_keys/0"),
            Err(ProxyError::BadRequest { .. })
        ));
        assert!(matches!(
            parse(Method::POST, "/admin/api/_keys/7/other"),
            Err(ProxyError::NotFound { .. })
        ));
    }

    #[test]
    fn hostnames_cannot_be_paths() {
        assert_eq!(
            parse_hostname("New.Localhost").map(|h| h.to_string()),
            Ok("new.localhost".to_owned())
        );
        for bad in [
            "..",
            "../x",
            "a/b",
            "/etc",
            "%2e%2e",
            "..%2fx",
            "a\\b",
            "*.example.com",
            "blog.localhost:80",
            "",
            ".",
            "a..b",
        ] {
            assert!(
                matches!(parse_hostname(bad), Err(ProxyError::BadRequest { .. })),
                "{bad:?} should be refused"
            );
        }
    }
}
