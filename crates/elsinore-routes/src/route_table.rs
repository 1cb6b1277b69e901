//! The live route table: hostname → project → handlers, with the static
//! site, certificates and policies that go with them. One immutable
//! snapshot, built by a reload and read by every request.

use std::path::PathBuf;
use std::sync::Arc;

use elsinore_config::{AdminApiMode, ForwardHost, HostPattern, RateLimits};
use elsinore_keys::KeyHash;
use elsinore_static::Site;
use elsinore_supervisor::HandlerHandle;
use elsinore_tls::CertStore;
use http::HeaderValue;

use crate::client_policy::ClientPolicy;
use crate::cors::CorsPolicy;
use crate::host_table::{Conflict, HostTable};
use crate::prefix::PrefixRouter;
use crate::preview::Preview;

/// One project as the request path needs it; header values are prepared
/// once here so requests do not allocate them.
#[derive(Debug)]
pub struct ProjectRoute {
    /// The project's name.
    pub name: String,
    /// The project folder.
    pub path: PathBuf,
    /// Its handlers, in manifest order.
    pub handlers: Vec<Arc<HandlerHandle>>,
    /// The path prefixes of each handler (`routes[i]` for `handlers[i]`).
    pub routes: Vec<Vec<String>>,
    /// The project's `max_body` from config.json; `None` means the global
    /// `limits.max_body`.
    pub max_body: Option<u64>,
    /// The project's `cors_origins`; `None` leaves CORS to its handlers.
    pub cors: Option<CorsPolicy>,
    /// `admin_api`: whether Elsinore answers the admin API on the
    /// project's hosts, and in which shape.
    pub admin_api: AdminApiMode,
    /// The project's `forward_host`: the `Host` its handlers receive.
    pub forward_host: ForwardHost,
    /// Its `rate_limits` (its own over the global ones); set with
    /// [`ProjectRoute::set_rate_limits`].
    pub rate_limits: RateLimits,
    /// `RateLimit-Policy` for its responses, made once; `None` when no
    /// scope is limited.
    pub rate_policy: Option<HeaderValue>,
    router: PrefixRouter,
    name_header: HeaderValue,
    key_header: Option<HeaderValue>,
    /// SHA-256 of the project key: presented keys are hashed and compared
    /// in constant time, which also hides the key's length.
    key_hash: Option<KeyHash>,
}

impl ProjectRoute {
    /// Sets `rate_limits` and the `RateLimit-Policy` value they make.
    pub fn set_rate_limits(&mut self, limits: RateLimits) {
        self.rate_limits = limits;
        self.rate_policy = if limits.is_empty() {
            None
        } else {
            HeaderValue::from_str(&limits.policy()).ok()
        };
    }

    /// `routes[i]` are the path prefixes of `handlers[i]`. Returns `None`
    /// when the name or key cannot be sent as a header (config validation
    /// already refuses those).
    pub fn new(
        name: &str,
        path: PathBuf,
        key: Option<&str>,
        handlers: Vec<(Arc<HandlerHandle>, Vec<String>)>,
    ) -> Option<Self> {
        let name_header = HeaderValue::from_str(name).ok()?;
        let key_header = match key {
            Some(key) => {
                let mut value = HeaderValue::from_str(key).ok()?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let router = PrefixRouter::new(
            handlers
                .iter()
                .map(|(_, routes)| routes.iter().map(String::as_str)),
        );
        let (handlers, routes) = handlers.into_iter().unzip();
        Some(Self {
            name: name.to_owned(),
            path,
            handlers,
            routes,
            max_body: None,
            cors: None,
            admin_api: AdminApiMode::default(),
            forward_host: ForwardHost::Original,
            rate_limits: RateLimits::default(),
            rate_policy: None,
            router,
            name_header,
            key_header,
            key_hash: key.map(KeyHash::of),
        })
    }

    /// Whether the project has a key (`key` or `key_env` in config.json).
    pub fn has_key(&self) -> bool {
        self.key_hash.is_some()
    }

    /// The project's name as a header value (`X-Elsinore-Project`),
    /// prepared once.
    // `#[inline]` on the accessors the request path calls: they were field
    // reads inside the proxy crate before the table moved here, and stay
    // as cheap in builds without cross-crate LTO.
    #[inline]
    pub fn name_header(&self) -> &HeaderValue {
        &self.name_header
    }

    /// The project's key as a sensitive header value
    /// (`X-Elsinore-Project-Key`), prepared once.
    #[inline]
    pub fn key_header(&self) -> Option<&HeaderValue> {
        self.key_header.as_ref()
    }

    /// The SHA-256 of the project's key.
    #[inline]
    pub fn key_hash(&self) -> Option<&KeyHash> {
        self.key_hash.as_ref()
    }

    /// Whether `presented` (a key's hash) is this project's key; a
    /// constant-time comparison.
    pub fn key_is(&self, presented: &KeyHash) -> bool {
        self.key_hash
            .as_ref()
            .is_some_and(|hash| hash.ct_eq(presented))
    }

    /// The handler serving `path`, by longest prefix.
    pub fn handler_for(&self, path: &str) -> Option<&Arc<HandlerHandle>> {
        self.router
            .pick(path)
            .and_then(|index| self.handlers.get(index))
    }

    /// The route prefix that chose the handler for `path` (`/api`), as
    /// declared: a trace's `http.route`, never the path itself.
    pub fn route_for(&self, path: &str) -> Option<&str> {
        self.router.pick_route(path).map(|(prefix, _)| prefix)
    }
}

/// What a declared host leads to: its project, and the host folder's
/// `public/` when it has one.
#[derive(Debug, Clone)]
pub struct HostRoute {
    pub project: Arc<ProjectRoute>,
    /// Static files answered before the handler (GET and HEAD).
    pub site: Option<Arc<Site>>,
    /// The host as declared (`*.example.com` for every name under that
    /// wildcard): the `host` label of `metrics.per_host`, shared by every
    /// request rather than built for each.
    pub label: Arc<str>,
}

/// An immutable snapshot of everything routing needs. Cloning it is
/// cheap (the host table's shards and everything else are shared), which
/// is how a reload that changes one host builds the next snapshot.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Host → project (and static files).
    pub hosts: HostTable<HostRoute>,
    /// Every project, in `config.json` order.
    pub projects: Vec<Arc<ProjectRoute>>,
    /// Names declared by two projects.
    pub conflicts: Vec<Conflict>,
    /// The certificates of the HTTPS listener, swapped with the hosts
    /// they belong to.
    pub certs: Arc<CertStore>,
    /// `redirect_http`: plain-HTTP requests for a host served over HTTPS
    /// get a 308 to it.
    pub redirect_http: bool,
    /// `default_project`: answers hosts no project declares.
    pub default_project: Option<Arc<ProjectRoute>>,
    /// `preview_host` and the projects reachable under it.
    pub preview: Option<Preview>,
    /// What clients may say about themselves (`trusted_proxies`,
    /// `upgrade_protocols`, `underscores_in_headers`).
    pub client_policy: ClientPolicy,
}

impl RouteTable {
    /// The hosts `project` serves (exact, then wildcards, each sorted):
    /// one pass over the table, for the operator views. Not kept per
    /// project, so that adding one host never copies a project's list.
    pub fn hosts_of(&self, project: &str) -> Vec<HostPattern> {
        let mut hosts: Vec<HostPattern> = self
            .hosts
            .iter()
            .filter(|(_, route)| route.project.name == project)
            .filter_map(|(name, _)| HostPattern::parse(&name.to_string()).ok())
            .collect();
        hosts.sort_unstable();
        hosts
    }
}
