//! The `static_files` key of `config.json`: the cache of host folders'
//! `public/` files.

use std::time::Duration;

use serde::Deserialize;

use crate::error::Problem;
use crate::limits::RawSize;
use crate::parse_duration;

/// `static_files.cache_size` when absent: 32 MiB.
pub const DEFAULT_STATIC_CACHE_SIZE: u64 = 32 * 1024 * 1024;
/// `static_files.cache_file_max` when absent: 1 MiB.
pub const DEFAULT_STATIC_CACHE_FILE_MAX: u64 = 1024 * 1024;
/// `static_files.recheck_after` when absent.
pub const DEFAULT_STATIC_RECHECK_AFTER: Duration = Duration::from_secs(10);

/// The validated `static_files` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticFilesConfig {
    /// Memory the cache may use for file contents and bookkeeping, shared
    /// by every host; 0 turns the cache off.
    pub cache_size: u64,
    /// Files larger than this are streamed from disk for every request
    /// instead of being kept in memory.
    pub cache_file_max: u64,
    /// A cached answer is looked up on disk again after this long even
    /// if the watcher reported no change (a safety net for changes a
    /// watcher cannot see); `None` (`"off"`) trusts the watcher alone.
    pub recheck_after: Option<Duration>,
}

impl Default for StaticFilesConfig {
    fn default() -> Self {
        Self {
            cache_size: DEFAULT_STATIC_CACHE_SIZE,
            cache_file_max: DEFAULT_STATIC_CACHE_FILE_MAX,
            recheck_after: Some(DEFAULT_STATIC_RECHECK_AFTER),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStaticFiles {
    cache_size: Option<RawSize>,
    cache_file_max: Option<RawSize>,
    recheck_after: Option<String>,
}

/// Validates `static_files`; absent means defaults.
pub(crate) fn validate_static_files(
    raw: Option<RawStaticFiles>,
    problems: &mut Vec<Problem>,
) -> StaticFilesConfig {
    let mut config = StaticFilesConfig::default();
    let Some(raw) = raw else {
        return config;
    };
    if let Some(size) = &raw.cache_size {
        if let Some(bytes) = size.bytes("static_files.cache_size", problems) {
            config.cache_size = bytes;
        }
    }
    if let Some(size) = &raw.cache_file_max {
        if let Some(bytes) = size.bytes("static_files.cache_file_max", problems) {
            config.cache_file_max = bytes;
        }
    }
    match raw.recheck_after.as_deref() {
        None => {}
        Some("off") => config.recheck_after = None,
        Some(text) => match parse_duration(text) {
            Ok(duration) if !duration.is_zero() => config.recheck_after = Some(duration),
            Ok(_) => problems.push(Problem::field(
                "static_files.recheck_after",
                "must be more than 0, or \"off\"",
            )),
            Err(err) => problems.push(Problem::field(
                "static_files.recheck_after",
                err.to_string(),
            )),
        },
    }
    if config.cache_size > 0 && config.cache_file_max > config.cache_size {
        problems.push(Problem::field(
            "static_files.cache_file_max",
            "is larger than static_files.cache_size: no file that large could be cached",
        ));
    }
    config
}
