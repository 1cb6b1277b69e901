//! The `public/` folders being served, and the cache they share.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use elsinore_config::{normalize_path, same_host_location};
use http::header::LOCATION;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::body::FileBody;
use crate::lookup::{lookup, Found};
use crate::path::{self, PathCheck, RelPath};
use crate::respond;

/// Bookkeeping per cached entry, counted against the cache size.
const ENTRY_OVERHEAD: u64 = 256;

/// How much the cache keeps. (The defaults are config.json's, in
/// `elsinore_config::StaticFilesConfig`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Total bytes of cached content (and bookkeeping); 0 disables the
    /// cache: every request looks at the disk.
    pub max_bytes: u64,
    /// Files larger than this are never held in memory: they are streamed
    /// from disk for each response.
    pub max_file: u64,
    /// A cached answer is trusted this long without looking at the disk
    /// again, even if no change was reported: a safety net for the moments
    /// a watcher cannot see (a folder created and filled before its watch
    /// was added), not the way changes are normally noticed. `None`:
    /// only reported changes count.
    pub recheck_after: Option<Duration>,
}

type Key = (u64, RelPath);

#[derive(Debug)]
struct Entry {
    /// The site's generation when the lookup began.
    generation: u64,
    looked_at: Instant,
    found: Found,
}

#[derive(Clone)]
struct EntryWeight;

impl Weighter<Key, Arc<Entry>> for EntryWeight {
    fn weight(&self, key: &Key, entry: &Arc<Entry>) -> u64 {
        let content = match &entry.found {
            Found::File(file) => file.content.as_ref().map_or(0, |c| c.len() as u64),
            _ => 0,
        };
        ENTRY_OVERHEAD + key.1.path.len() as u64 + content
    }
}

struct Shared {
    /// `None` when caching is off.
    cache: Option<Cache<Key, Arc<Entry>, EntryWeight>>,
    settings: CacheSettings,
    next_id: AtomicU64,
    /// Every site handed out, by its folder, to find what a change touches.
    sites: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    sites: HashMap<PathBuf, Weak<Site>>,
    /// Sites added since dead entries were last swept out.
    added_since_sweep: usize,
}

impl Registry {
    fn live(&self) -> impl Iterator<Item = Arc<Site>> + '_ {
        self.sites.values().filter_map(Weak::upgrade)
    }
}

/// All served `public/` folders and their shared, bounded cache. Cheap to
/// clone; every clone is the same set.
#[derive(Clone)]
pub struct StaticFiles {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StaticFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticFiles")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl StaticFiles {
    /// An empty set whose cache holds at most `settings.max_bytes`.
    pub fn new(settings: CacheSettings) -> Self {
        let cache = (settings.max_bytes > 0).then(|| {
            // quick_cache wants an estimate of the entry count to size its
            // shards; a few KiB per entry is typical for web assets.
            let estimated = usize::try_from(settings.max_bytes / 4096)
                .unwrap_or(usize::MAX)
                .clamp(64, 1 << 20);
            Cache::with_weighter(estimated, settings.max_bytes, EntryWeight)
        });
        Self {
            shared: Arc::new(Shared {
                cache,
                settings,
                next_id: AtomicU64::new(1),
                sites: Mutex::new(Registry::default()),
            }),
        }
    }

    /// The registry of sites. It holds only weak references and counters:
    /// still consistent after a panic elsewhere.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.shared
            .sites
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The site serving `public_dir`: the same one as long as it is in
    /// use, so its cached files survive reloads. If the folder was
    /// replaced (another folder renamed in its place) everything cached
    /// for it is dropped.
    pub fn site(&self, public_dir: &Path) -> Arc<Site> {
        let identity = identity(public_dir);
        let mut registry = self.registry();
        if let Some(site) = registry.sites.get(public_dir).and_then(Weak::upgrade) {
            let before = site.identity.swap(identity, Ordering::AcqRel);
            if before != identity {
                site.generation.fetch_add(1, Ordering::AcqRel);
            }
            return site;
        }
        // Forget sites nobody serves any more, once enough were added that
        // the sweep costs O(1) per addition (a reload may add thousands).
        if registry.added_since_sweep > registry.sites.len() / 2 {
            registry.sites.retain(|_, site| site.strong_count() > 0);
            registry.added_since_sweep = 0;
        }
        let site = Arc::new(Site {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            root: public_dir.to_path_buf(),
            generation: AtomicU64::new(0),
            identity: AtomicU64::new(identity),
            top: ArcSwapOption::empty(),
            files: self.clone(),
        });
        registry
            .sites
            .insert(public_dir.to_path_buf(), Arc::downgrade(&site));
        registry.added_since_sweep += 1;
        site
    }

    /// Something changed at `path` (a file, or a folder and all it holds):
    /// every site that holds it looks at the disk again.
    pub fn invalidate(&self, path: &Path) {
        let registry = self.registry();
        for ancestor in path.ancestors() {
            if let Some(site) = registry.sites.get(ancestor).and_then(Weak::upgrade) {
                site.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Changes were lost (the watcher overflowed): forget everything.
    pub fn invalidate_all(&self) {
        let registry = self.registry();
        for site in registry.live() {
            site.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The folders of the sites in use, for the watcher.
    pub fn roots(&self) -> Vec<PathBuf> {
        let registry = self.registry();
        let mut roots: Vec<PathBuf> = registry.live().map(|site| site.root.clone()).collect();
        roots.sort();
        roots
    }
}

/// The inode and device of a folder packed in one number (0 if it cannot
/// be read), to notice that a different folder now has its name.
fn identity(dir: &Path) -> u64 {
    std::fs::metadata(dir).map_or(0, |meta| meta.ino() ^ meta.dev().rotate_left(48))
}

/// One host's `public/` folder.
pub struct Site {
    id: u64,
    root: PathBuf,
    /// Bumped by every change reported inside the folder: cached entries
    /// of an older generation are looked up again.
    generation: AtomicU64,
    identity: AtomicU64,
    /// The names directly in the folder, so a path whose first segment is
    /// none of them (`/api/…` on most sites) passes to the handler without
    /// a lookup of its own.
    top: ArcSwapOption<TopLevel>,
    files: StaticFiles,
}

/// A listing of the folder, valid for one generation.
#[derive(Debug)]
struct TopLevel {
    generation: u64,
    looked_at: Instant,
    names: HashSet<Box<str>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// What the site does with a request.
// Returned once per request and unpacked at once: moving the large
// variant costs less than boxing it would.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Elsinore answers.
    Served(Response<StaticBody>),
    /// Not a file here: the project's handler answers.
    Pass,
    /// A traversal attempt: 404, with this reason.
    Refused(&'static str),
}

/// The body of a static response.
#[derive(Debug)]
pub enum StaticBody {
    /// From memory (possibly empty: HEAD, 304, 416, redirects).
    Bytes(Bytes),
    /// Streamed from disk.
    File(FileBody),
}

impl Site {
    /// The folder served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Answers a GET or HEAD for a file in the folder; anything else, and
    /// every path that names no file, is passed to the handler.
    pub async fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Outcome {
        if method != Method::GET && method != Method::HEAD {
            return Outcome::Pass;
        }
        let rel = match path::check(uri.path()) {
            PathCheck::Look(rel) => rel,
            PathCheck::Pass => return Outcome::Pass,
            PathCheck::Refuse(why) => return Outcome::Refused(why),
        };
        if let Some(first) = rel.path.split('/').next().filter(|s| !s.is_empty()) {
            if !self.top_level().await.names.contains(first) {
                return Outcome::Pass;
            }
        }
        let file = match self.find(rel).await {
            Found::File(file) => file,
            Found::Missing => return Outcome::Pass,
            Found::Outside => {
                return Outcome::Refused("the path leads outside the host's public folder")
            }
            Found::Folder => return Outcome::Served(folder_redirect(uri)),
        };
        let plan = respond::plan(method, headers, &file);
        let body = match (plan.bytes, &file.content) {
            (None, _) => StaticBody::Bytes(Bytes::new()),
            (Some((start, len)), Some(content)) => {
                let (start, end) = (to_index(start), to_index(start.saturating_add(len)));
                StaticBody::Bytes(content.slice(start..end.min(content.len())))
            }
            (Some((start, len)), None) => match FileBody::open(&file.path, start, len).await {
                Ok(body) => StaticBody::File(body),
                // Gone since it was looked up: the next request looks
                // again, and this one goes to the handler as if it never
                // existed.
                Err(err) => {
                    tracing::debug!(file = %file.path.display(), error = %err, "static file vanished");
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    return Outcome::Pass;
                }
            },
        };
        let mut response = Response::new(body);
        *response.status_mut() = plan.status;
        *response.headers_mut() = plan.headers;
        Outcome::Served(response)
    }

    /// The folder's own entries, listed again when the generation moved on
    /// or `recheck_after` passed.
    async fn top_level(&self) -> Arc<TopLevel> {
        let generation = self.generation.load(Ordering::Acquire);
        let recheck = self.files.shared.settings.recheck_after;
        if let Some(top) = self.top.load_full() {
            let fresh = recheck.is_none_or(|limit| top.looked_at.elapsed() < limit);
            if top.generation == generation && fresh {
                return top;
            }
        }
        let root = self.root.clone();
        let looked_at = Instant::now();
        let names = tokio::task::spawn_blocking(move || list_names(&root))
            .await
            .unwrap_or_default();
        let top = Arc::new(TopLevel {
            generation,
            looked_at,
            names,
        });
        self.top.store(Some(top.clone()));
        top
    }

    /// From the cache when it is current, else from the disk (on the
    /// blocking pool).
    async fn find(&self, rel: RelPath) -> Found {
        let shared = &self.files.shared;
        let generation = self.generation.load(Ordering::Acquire);
        let key = (self.id, rel);
        let cached = shared.cache.as_ref().and_then(|cache| cache.get(&key));
        if let Some(entry) = &cached {
            let fresh = shared
                .settings
                .recheck_after
                .is_none_or(|limit| entry.looked_at.elapsed() < limit);
            if entry.generation == generation && fresh {
                return entry.found.clone();
            }
        }
        let previous = cached.and_then(|entry| match &entry.found {
            Found::File(file) => Some(file.clone()),
            _ => None,
        });
        let root = self.root.clone();
        let max_file = shared.settings.max_file.min(shared.settings.max_bytes);
        let looked_at = Instant::now();
        let looked = tokio::task::spawn_blocking(move || {
            let found = lookup(&root, &key.1, max_file, previous.as_deref());
            (key, found)
        })
        .await;
        match looked {
            Ok((key, Ok(found))) => {
                if let Some(cache) = &shared.cache {
                    let entry = Entry {
                        generation,
                        looked_at,
                        found: found.clone(),
                    };
                    cache.insert(key, Arc::new(entry));
                }
                found
            }
            // Unreadable (permissions, I/O error): not served, not cached.
            Ok((key, Err(err))) => {
                tracing::debug!(folder = %self.root.display(), path = %key.1.path, error = %err, "static file unreadable; passing the request to the handler");
                Found::Missing
            }
            Err(err) => {
                tracing::warn!(error = %err, "static file lookup did not finish");
                Found::Missing
            }
        }
    }
}

/// The names in `dir` (none when it cannot be read: then nothing is
/// served from it and every request goes to the handler).
fn list_names(dir: &Path) -> HashSet<Box<str>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .map(String::into_boxed_str)
        .collect()
}

fn to_index(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}

/// `301` to the folder's URL with a trailing slash, query kept. Built from
/// the normalised path, through the one function that writes a path-only
/// `Location`: `GET //docs` must not send the browser to the host `docs`.
fn folder_redirect(uri: &Uri) -> Response<StaticBody> {
    let folder = format!("{}/", normalize_path(uri.path()));
    let location = same_host_location(&folder, uri.query());
    let mut response = Response::new(StaticBody::Bytes(Bytes::new()));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    // The path came from a valid URI, so it is valid header text.
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_redirects_stay_on_the_host() {
        let cases = [
            ("/docs", "/docs/"),
            ("/docs?x=1", "/docs/?x=1"),
            ("//docs?x=1", "/docs/?x=1"),
            ("///docs//sub", "/docs/sub/"),
            ("/a/../docs", "/docs/"),
        ];
        for (uri, want) in cases {
            let uri: Uri = uri.parse().expect("test uri");
            let response = folder_redirect(&uri);
            assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
            assert_eq!(
                response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok()),
                Some(want),
                "{uri}"
            );
        }
    }
}
