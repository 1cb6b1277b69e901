//! A file found in `public/`: what its responses say about it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

/// A regular file inside `public/`, with the header values its responses
/// carry prepared once, when it is looked up.
#[derive(Debug)]
pub struct StaticFile {
    /// Its real path (symbolic links resolved).
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// Last modification, if the file system knows it.
    pub modified: Option<SystemTime>,
    /// A strong validator: changes whenever the size, the modification
    /// time or the file itself (a new inode, as after a rename) changes.
    pub etag: HeaderValue,
    pub last_modified: Option<HeaderValue>,
    pub content_type: HeaderValue,
    /// The content, when it is small enough to keep in memory; larger
    /// files are streamed from disk for each response.
    pub content: Option<Bytes>,
    /// What identifies this version of the file on disk.
    pub(crate) stamp: Stamp,
}

/// Size, modification time and inode: equal stamps mean the same content
/// (short of someone rewriting a file and resetting its time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    mtime_ns: i128,
    dev: u64,
    ino: u64,
}

impl Stamp {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl StaticFile {
    /// Describes the file at `path` (already resolved and checked to be
    /// inside `public/`) from its metadata; `content` is what was read of
    /// it, if anything.
    pub(crate) fn new(path: PathBuf, meta: &std::fs::Metadata, content: Option<Bytes>) -> Self {
        let stamp = Stamp::of(meta);
        let len = content.as_ref().map_or(meta.len(), |c| c.len() as u64);
        let modified = meta.modified().ok();
        // Hex like nginx's `"mtime-size"`, plus the inode so that a file
        // replaced within the same second by one of the same size still
        // gets a new validator.
        let etag = format!("\"{:x}-{:x}-{:x}\"", stamp.mtime_ns, stamp.ino, len);
        let etag =
            HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let last_modified = modified
            .map(|time| httpdate::fmt_http_date(whole_seconds(time)))
            .and_then(|text| HeaderValue::from_str(&text).ok());
        Self {
            content_type: content_type(&path),
            path,
            len,
            modified,
            etag,
            last_modified,
            content,
            stamp,
        }
    }
}

/// HTTP dates have whole seconds; comparisons with `If-Modified-Since`
/// use the same truncation.
pub(crate) fn whole_seconds(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

/// From the extension; text types say they are UTF-8, unknown types are
/// `application/octet-stream` (so a browser downloads rather than guesses,
/// together with `X-Content-Type-Options: nosniff`).
fn content_type(path: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    let textual = mime.starts_with("text/")
        || matches!(
            mime,
            "application/javascript"
                | "application/json"
                | "application/manifest+json"
                | "application/xml"
                | "image/svg+xml"
        );
    let value = if textual {
        HeaderValue::from_str(&format!("{mime}; charset=utf-8"))
    } else {
        HeaderValue::from_str(mime)
    };
    value.unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_come_from_the_extension() {
        let of = |name: &str| content_type(Path::new(name));
        assert_eq!(of("index.html"), "text/html; charset=utf-8");
        assert_eq!(of("site.CSS"), "text/css; charset=utf-8");
        assert!(of("app.js")
            .to_str()
            .is_ok_and(|v| v.ends_with("javascript; charset=utf-8")));
        assert_eq!(of("logo.png"), "image/png");
        assert_eq!(of("logo.svg"), "image/svg+xml; charset=utf-8");
        assert_eq!(of("data.json"), "application/json; charset=utf-8");
        assert_eq!(of("archive.unknownext"), "application/octet-stream");
        assert_eq!(of("README"), "application/octet-stream");
    }
}
