//! The admin API Elsinore answers itself on every host, for the project
//! owning that host: `/admin/api/_keys…` (per-host admin keys) and
//! `/admin/api/_hosts…` (the project's host folders). Paths, bodies and
//! status codes follow Hamlet's admin API; see `docs/admin-api.md`.
//!
//! Every call needs the owning project's key. Key changes run on
//! `spawn_blocking` (SQLite) and refill the [`KeyRing`] before answering,
//! so a revoked key stops working by the time the client hears 204.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use elsinore_config::{AdminApiMode, Hostname};
use elsinore_keys::{now_ms, KeyHash, KeyRing};
use elsinore_proxy::credentials::{self, X_HAMLET_HOST_KEY, X_HAMLET_PROJECT_KEY};
use elsinore_proxy::{ProxyBody, ProxyError, ReservedContext, ReservedFuture, ReservedPaths};
use elsinore_routes::{CorsPolicy, RouteTable};
use elsinore_store::keys::{
    Actor, Caller, CreatedKey, KeyError, KeyInfo, KeyStore, Revocation, Scope,
};
use elsinore_store::OwnerRecords;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::cors;
use crate::endpoint::{
    parse_hostname, read_json, CreateHostBody, CreateKeyBody, Endpoint, RotateBody,
};
use crate::hamlet;
use crate::host_folders::{self, RemoveError};
use crate::rescan::RescanRequests;

/// How long a host change may take to become live before the API answers
/// 202 instead of 201/204.
pub const LIVE_WAIT: Duration = Duration::from_secs(5);
const LIVE_POLL: Duration = Duration::from_millis(20);

/// The tenant admin API: the key database, the key ring it keeps fresh,
/// the CORS policy (top-level `cors_origins`) and the way to ask the
/// control plane for a rescan. The failure throttle is the proxy's (see
/// [`ReservedContext::throttle`]).
#[derive(Debug)]
pub struct TenantAdminApi {
    store: Arc<KeyStore>,
    ring: Arc<KeyRing>,
    cors: CorsPolicy,
    rescans: Option<RescanRequests>,
    /// The recorded host owners: `created_at` of Hamlet-shaped host rows.
    owners: Option<Arc<OwnerRecords>>,
}

type Cx<'a> = ReservedContext<'a>;

impl ReservedPaths for TenantAdminApi {
    fn answer<'a>(&'a self, request: Request<Incoming>, cx: Cx<'a>) -> ReservedFuture<'a> {
        Box::pin(self.handle(request, cx))
    }
}

impl TenantAdminApi {
    /// An admin API over `store` that refills `ring` after every change and
    /// allows the (validated) `cors_origins`.
    pub fn new(store: Arc<KeyStore>, ring: Arc<KeyRing>, cors_origins: &[String]) -> Self {
        Self {
            store,
            ring,
            cors: cors::policy(cors_origins),
            rescans: None,
            owners: None,
        }
    }

    /// Reads when each host was first served from `owners` (the
    /// `created_at` of `admin_api: "hamlet"` host rows; null without).
    pub fn with_owner_records(mut self, owners: Arc<OwnerRecords>) -> Self {
        self.owners = Some(owners);
        self
    }

    /// Asks the control plane for a rescan through `rescans` after
    /// creating or removing a host folder.
    pub fn with_rescans(mut self, rescans: RescanRequests) -> Self {
        self.rescans = Some(rescans);
        self
    }

    /// Answers one admin API request; errors become JSON responses here so
    /// that they carry CORS headers too.
    async fn handle(&self, request: Request<Incoming>, cx: Cx<'_>) -> Response<ProxyBody> {
        let origin = request.headers().get(ORIGIN).cloned();
        let preflight = request.method() == Method::OPTIONS;
        let result = if preflight {
            self.preflight_response(request.headers())
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
        if preflight {
            cors::add_vary(headers);
        } else {
            self.cors.decorate(origin.as_ref(), headers);
        }
        // Bodies may hold a new key: never cache them.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// OPTIONS: a CORS preflight from an allowed origin gets 204 and the
    /// CORS headers; from any other origin 403 without them; without
    /// `Origin` (not a preflight) 204 with `Allow`.
    fn preflight_response(&self, headers: &HeaderMap) -> Result<Response<ProxyBody>, ProxyError> {
        let mut response = empty_response(StatusCode::NO_CONTENT);
        let Some(sent) = headers.get(ORIGIN) else {
            response.headers_mut().insert(
                ALLOW,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
            return Ok(response);
        };
        if !self.cors.allows(sent) {
            return Err(ProxyError::OriginNotAllowed {
                origin: String::from_utf8_lossy(sent.as_bytes()).into_owned(),
            });
        }
        self.cors
            .add_preflight_headers(response.headers_mut(), sent.clone(), None);
        Ok(response)
    }

    async fn serve(
        &self,
        request: Request<Incoming>,
        cx: &Cx<'_>,
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
        let endpoint = Endpoint::parse(&parts.method, parts.uri.path())?;
        match cx.project.admin_api {
            AdminApiMode::Hamlet => {
                self.serve_hamlet(endpoint, &parts.headers, body, cx, caller)
                    .await
            }
            // `handler` never reaches the hook: the proxy forwards those
            // paths to the project's handler.
            AdminApiMode::Elsinore | AdminApiMode::Handler => {
                self.serve_elsinore(endpoint, &parts.headers, body, cx, caller)
                    .await
            }
        }
    }

    /// Elsinore's own shapes (`admin_api: "elsinore"`, the default).
    async fn serve_elsinore(
        &self,
        endpoint: Endpoint<'_>,
        headers: &HeaderMap,
        body: Incoming,
        cx: &Cx<'_>,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        match endpoint {
            Endpoint::ListKeys => {
                let keys = self.keys_of(cx).await?;
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
            Endpoint::CreateKey => {
                let body: CreateKeyBody = read_json(headers, body).await?;
                let created = self.new_key(cx, body.label, caller).await?;
                Ok(json_response(StatusCode::CREATED, &created_json(&created)))
            }
            Endpoint::RotateKey(id) => {
                let body: RotateBody = read_json(headers, body).await?;
                self.rotate_key(cx, id, body, caller).await
            }
            Endpoint::RevokeKey(id) => {
                // Already revoked is fine here: the key is refused either way.
                self.revoke(cx, id, caller).await?;
                Ok(empty_response(StatusCode::NO_CONTENT))
            }
            Endpoint::ListHosts => Ok(list_hosts(cx)),
            Endpoint::CreateHost => {
                let body: CreateHostBody = read_json(headers, body).await?;
                let Some(text) = body.hostname else {
                    return Err(ProxyError::BadRequest {
                        reason: "expected a JSON body {\"hostname\": \"…\"}".into(),
                    });
                };
                let (name, live) = self.add_host(cx, &text, caller).await?;
                Ok(host_change_response(
                    &name,
                    &cx.project.name,
                    live,
                    StatusCode::CREATED,
                ))
            }
            Endpoint::DeleteHost(text) => {
                let (name, gone) = self.remove_host(cx, text, caller).await?;
                if gone {
                    Ok(empty_response(StatusCode::NO_CONTENT))
                } else {
                    Ok(host_change_response(
                        &name,
                        &cx.project.name,
                        false,
                        StatusCode::NO_CONTENT,
                    ))
                }
            }
        }
    }

    /// Hamlet's shapes (`admin_api: "hamlet"`): the same calls, checks and
    /// statuses, with Hamlet's bodies (see `hamlet.rs`) and Hamlet's
    /// endpoints only (no rotation).
    async fn serve_hamlet(
        &self,
        endpoint: Endpoint<'_>,
        headers: &HeaderMap,
        body: Incoming,
        cx: &Cx<'_>,
        caller: Caller,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let project = cx.project.name.as_str();
        match endpoint {
            Endpoint::ListKeys => {
                let keys = self.keys_of(cx).await?;
                // Newest first, as Hamlet lists them.
                let rows: Vec<Value> = keys.iter().rev().map(hamlet::key_row).collect();
                Ok(json_response(StatusCode::OK, &Value::Array(rows)))
            }
            Endpoint::CreateKey => {
                let body: hamlet::CreateKeyBody = read_json(headers, body).await?;
                let created = self.new_key(cx, body.into_label(), caller).await?;
                Ok(json_response(
                    StatusCode::CREATED,
                    &hamlet::created_row(&created),
                ))
            }
            Endpoint::RotateKey(id) => Err(ProxyError::NotFound {
                reason: format!(
                    "no admin API endpoint POST /admin/api/_keys/{id}/rotate with admin_api \"hamlet\" (Hamlet has none): create a new key, then DELETE the old one"
                ),
            }),
            // Hamlet answers 404 for a key already revoked: nothing changed.
            Endpoint::RevokeKey(id) => match self.revoke(cx, id, caller).await? {
                Revocation::Revoked(_) => Ok(empty_response(StatusCode::NO_CONTENT)),
                Revocation::AlreadyRevoked(_) => Err(ProxyError::NotFound {
                    reason: format!("key {id} is already revoked"),
                }),
            },
            Endpoint::ListHosts => {
                let served = self.first_served(project).await?;
                let rows: Vec<Value> = own_hosts(cx)
                    .iter()
                    .map(|name| hamlet::host_row(name, project, served_at(&served, name)))
                    .collect();
                Ok(json_response(StatusCode::OK, &Value::Array(rows)))
            }
            Endpoint::CreateHost => {
                let body: hamlet::CreateHostBody = read_json(headers, body).await?;
                let filled = |field: Option<String>| field.filter(|text| !text.is_empty());
                let (Some(text), Some(named)) = (filled(body.hostname), filled(body.project))
                else {
                    return Err(ProxyError::BadRequest {
                        reason: "hostname and project are required".into(),
                    });
                };
                if named != project {
                    return Err(ProxyError::Forbidden {
                        reason: format!(
                            "project {named:?} is not this host's project ({project}); a project key only adds hosts to its own project"
                        ),
                    });
                }
                let (name, live) = self.add_host(cx, &text, caller).await?;
                let served = self.first_served(project).await?;
                // The record of a new name is written just after the table
                // swap; until then, now is when it started being served.
                let created_at = served_at(&served, name.as_str()).unwrap_or_else(now_ms);
                let status = if live {
                    StatusCode::CREATED
                } else {
                    StatusCode::ACCEPTED
                };
                Ok(json_response(
                    status,
                    &hamlet::host_row(name.as_str(), project, Some(created_at)),
                ))
            }
            // The id of a Hamlet host row is its hostname (`hamlet.rs`),
            // so by id or by hostname is one lookup.
            Endpoint::DeleteHost(text) => {
                let (name, gone) = self.remove_host(cx, text, caller).await?;
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
        }
    }

    /// Only the owning project's key opens the admin API: 401 without a
    /// valid credential (counted by the throttle), 403 for a credential that
    /// is valid elsewhere (another project's key, a host key).
    fn authorize(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        cx: &Cx<'_>,
    ) -> Result<(), ProxyError> {
        let project = cx.project;
        let presented = credentials::header_str(headers, &X_HAMLET_PROJECT_KEY)
            .or_else(|| credentials::bearer(headers))
            .map(Cow::Borrowed)
            .or_else(|| credentials::query_key(query));
        let host_key = credentials::header_str(headers, &X_HAMLET_HOST_KEY);
        let now = now_ms();
        if let Some(key) = &presented {
            let hash = KeyHash::of(key);
            if project.key_is(&hash) {
                return Ok(());
            }
            let table = cx.table.load();
            let other_project = table
                .projects
                .iter()
                .any(|p| p.name != project.name && p.key_is(&hash));
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
        let reason = if !project.has_key() {
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

    /// This host's keys (of this project), oldest first.
    async fn keys_of(&self, cx: &Cx<'_>) -> Result<Vec<KeyInfo>, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        self.blocking(move |store, _| store.list(&host, &project))
            .await
    }

    /// Creates a key for this host; it opens the host once this returns.
    async fn new_key(
        &self,
        cx: &Cx<'_>,
        label: String,
        caller: Caller,
    ) -> Result<CreatedKey, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        let created = self
            .blocking(move |store, ring| {
                let created = store.create(&host, &project, &label, &caller)?;
                refill(store, ring);
                Ok(created)
            })
            .await?;
        tracing::info!(host = cx.host, project = %cx.project.name, client = %cx.client, key_id = created.info.id, prefix = %created.info.prefix, "admin API: host key created");
        Ok(created)
    }

    async fn rotate_key(
        &self,
        cx: &Cx<'_>,
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
                refill(store, ring);
                Ok(rotated)
            })
            .await?;
        tracing::info!(host = cx.host, project = %cx.project.name, client = %cx.client, old_key_id = id, key_id = rotated.new.info.id, grace_seconds = body.grace_seconds, "admin API: host key rotated");
        let mut body = created_json(&rotated.new);
        body["replaces"] = json!(id);
        body["old_key"] = key_json(&rotated.old, now_ms());
        Ok(json_response(StatusCode::CREATED, &body))
    }

    /// Revokes key `id` of this host; refused from the moment this returns.
    async fn revoke(&self, cx: &Cx<'_>, id: i64, caller: Caller) -> Result<Revocation, ProxyError> {
        let (host, project) = (cx.host.to_owned(), cx.project.name.clone());
        let revocation = self
            .blocking(move |store, ring| {
                let scope = Scope::Host {
                    host: &host,
                    project: &project,
                };
                let revocation = store.revoke(scope, id, &caller)?;
                refill(store, ring);
                Ok(revocation)
            })
            .await?;
        tracing::info!(host = cx.host, project = %cx.project.name, client = %cx.client, key_id = id, "admin API: host key revoked");
        Ok(revocation)
    }

    /// When each of `project`'s names was first served for it (epoch ms),
    /// from the recorded host owners; empty without them.
    async fn first_served(&self, project: &str) -> Result<HashMap<String, i64>, ProxyError> {
        let Some(owners) = self.owners.clone() else {
            return Ok(HashMap::new());
        };
        let project = project.to_owned();
        let rows = tokio::task::spawn_blocking(move || owners.first_served(&project))
            .await
            .map_err(join_error)?
            .map_err(|err| key_error(KeyError::Store(err)))?;
        Ok(rows.into_iter().collect())
    }

    /// Creates the project's folder for `text` and waits for it to be
    /// served; returns the name and whether it is live.
    async fn add_host(
        &self,
        cx: &Cx<'_>,
        text: &str,
        caller: Caller,
    ) -> Result<(Hostname, bool), ProxyError> {
        let name = parse_hostname(text)?;
        let project = cx.project.name.as_str();
        {
            let table = cx.table.load();
            if declares(&table, project, name.as_str()) {
                return Err(ProxyError::Conflict {
                    reason: format!("{name} is already a host of this project"),
                    entries: Vec::new(),
                });
            }
            // Owned exactly or covered by another project's wildcard: a
            // folder here would only be a conflict (it never moves the
            // name), so refuse it now and say whose it is.
            if let Some(owner) = table
                .hosts
                .lookup(name.as_str())
                .filter(|owner| owner.project.name != project)
            {
                return Err(ProxyError::Conflict {
                    reason: format!(
                        "{name} is owned by project {} (host {}); only config.json `host_owners` can give it to this project",
                        owner.project.name, owner.label
                    ),
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
        Ok((name, live))
    }

    /// Removes the project's (empty) folder for `text` and waits for the
    /// name to stop being served; returns the name and whether it is gone.
    async fn remove_host(
        &self,
        cx: &Cx<'_>,
        text: &str,
        caller: Caller,
    ) -> Result<(Hostname, bool), ProxyError> {
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
        Ok((name, gone))
    }

    /// Asks the control plane for a rescan, then waits (at most
    /// [`LIVE_WAIT`] in all) until `done` holds for the live table.
    async fn wait_live(
        &self,
        table: &ArcSwap<RouteTable>,
        done: impl Fn(&RouteTable) -> bool,
    ) -> bool {
        let deadline = Instant::now() + LIVE_WAIT;
        if let Some(rescans) = &self.rescans {
            // The reply says the rescan ran (or was handed to the folder
            // watcher); the table, polled below, says whether it is live.
            let _ = tokio::time::timeout_at(deadline.into(), rescans.rescan()).await;
        }
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
        work: impl FnOnce(&KeyStore, &KeyRing) -> elsinore_store::keys::Result<T> + Send + 'static,
    ) -> Result<T, ProxyError> {
        let (store, ring) = (self.store.clone(), self.ring.clone());
        tokio::task::spawn_blocking(move || work(&store, &ring))
            .await
            .map_err(join_error)?
            .map_err(key_error)
    }
}

/// After a change: refill the ring now. If that fails the change is still
/// committed, and the ring's watcher picks it up within a second.
fn refill(store: &KeyStore, ring: &KeyRing) {
    if let Err(err) = store.refresh(ring) {
        tracing::warn!(%err, "cannot reload the key ring; the watcher will retry");
    }
}

/// Names the project declares in the live table (exact or wildcard).
fn declares(table: &RouteTable, project: &str, name: &str) -> bool {
    table
        .hosts
        .entries()
        .iter()
        .any(|(host, owner)| host == name && owner.project.name == project)
}

/// The names the request's project serves in the live table, as declared
/// (`*.example.com` for a wildcard).
fn own_hosts(cx: &Cx<'_>) -> Vec<String> {
    let table = cx.table.load();
    table
        .hosts
        .entries()
        .into_iter()
        .filter(|(_, owner)| owner.project.name == cx.project.name)
        .map(|(host, _)| host)
        .collect()
}

fn served_at(served: &HashMap<String, i64>, name: &str) -> Option<i64> {
    served.get(name).copied()
}

fn list_hosts(cx: &Cx<'_>) -> Response<ProxyBody> {
    let hosts = own_hosts(cx);
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

fn key_error(err: KeyError) -> ProxyError {
    use KeyError as E;
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
        // PostgreSQL is away: nothing was changed, and retrying once it is
        // back works. Requests keep being served with the keys held.
        _ if err.is_unavailable() => {
            tracing::warn!(error = %err, "admin API: the state database is unavailable");
            ProxyError::StateUnavailable {
                reason: "the state database cannot be reached; nothing was changed, retry later"
                    .into(),
            }
        }
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
