//! The answer for a found file: 200, 206, 304 or 416 (RFC 9110 §13 and
//! §14), decided from the request's validators and `Range`.

use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use crate::file::{whole_seconds, StaticFile};

/// What to send: status, headers, and which bytes of the file.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// `(start, len)` of the file to send; `None`: no body.
    pub(crate) bytes: Option<(u64, u64)>,
}

/// Decides the answer to `method` (GET or HEAD) for `file`.
pub(crate) fn plan(method: &Method, request: &HeaderMap, file: &StaticFile) -> Plan {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(ETAG, file.etag.clone());
    if let Some(modified) = &file.last_modified {
        headers.insert(LAST_MODIFIED, modified.clone());
    }
    if not_modified(request, file) {
        return Plan {
            status: StatusCode::NOT_MODIFIED,
            headers,
            bytes: None,
        };
    }
    headers.insert(CONTENT_TYPE, file.content_type.clone());
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let head = method == Method::HEAD;
    // Range applies to GET only (RFC 9110 §14.2).
    let range = if head {
        None
    } else {
        requested_range(request, file)
    };
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, file.len),
        Some(Range::Satisfiable { start, end }) => {
            headers.insert(
                CONTENT_RANGE,
                header_value(format!("bytes {start}-{end}/{}", file.len)),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Some(Range::Unsatisfiable) => {
            headers.insert(CONTENT_RANGE, header_value(format!("bytes */{}", file.len)));
            headers.remove(CONTENT_TYPE);
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
            return Plan {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                bytes: None,
            };
        }
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    Plan {
        status,
        headers,
        bytes: (!head).then_some((start, len)),
    }
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `If-None-Match` when present (weak comparison: `W/` prefixes are
/// ignored, `*` matches), else `If-Modified-Since`.
fn not_modified(request: &HeaderMap, file: &StaticFile) -> bool {
    let mut tags = request.get_all(IF_NONE_MATCH).iter().peekable();
    if tags.peek().is_some() {
        let ours = opaque(file.etag.as_bytes());
        return tags
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || opaque(tag.as_bytes()) == ours);
    }
    let Some(since) = request
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    file.modified
        .is_some_and(|modified| whole_seconds(modified) <= since)
}

/// An entity tag without its weakness marker.
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Inclusive byte positions.
    Satisfiable {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// One `bytes=` range, when the request asks for one and `If-Range` (if
/// any) still matches. Several ranges, other units and syntax errors are
/// ignored: the whole file is sent, which RFC 9110 allows.
fn requested_range(request: &HeaderMap, file: &StaticFile) -> Option<Range> {
    let spec = request.get(RANGE)?.to_str().ok()?.trim();
    if let Some(condition) = request.get(IF_RANGE) {
        if !if_range_holds(condition, file) {
            return None;
        }
    }
    let spec = spec.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let len = file.len;
    if first.is_empty() {
        // `-N`: the last N bytes.
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 || len == 0 {
            return Some(Range::Unsatisfiable);
        }
        return Some(Range::Satisfiable {
            start: len.saturating_sub(suffix),
            end: len - 1,
        });
    }
    let start: u64 = first.parse().ok()?;
    let end = match last {
        "" => None,
        last => Some(last.parse::<u64>().ok()?),
    };
    if end.is_some_and(|end| end < start) {
        return None;
    }
    if start >= len {
        return Some(Range::Unsatisfiable);
    }
    let end = end.map_or(len - 1, |end| end.min(len - 1));
    Some(Range::Satisfiable { start, end })
}

/// `If-Range`: an entity tag must match strongly, a date exactly.
fn if_range_holds(condition: &HeaderValue, file: &StaticFile) -> bool {
    let bytes = condition.as_bytes();
    if bytes.starts_with(b"\"") {
        return bytes == file.etag.as_bytes();
    }
    if bytes.starts_with(b"W/") {
        return false;
    }
    let date = condition
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (date, file.modified) {
        (Some(date), Some(modified)) => date == whole_seconds(modified),
        _ => false,
    }
}

/// For tests: a date as `If-Modified-Since` would carry it.
#[cfg(test)]
fn http_date(time: std::time::SystemTime) -> HeaderValue {
    header_value(httpdate::fmt_http_date(time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn file(len: usize) -> (tempfile::TempDir, StaticFile) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f.txt");
        std::fs::write(&path, vec![b'x'; len]).expect("write");
        let meta = std::fs::metadata(&path).expect("meta");
        let file = StaticFile::new(Path::new(&path).to_path_buf(), &meta, None);
        (dir, file)
    }

    fn request(pairs: &[(http::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn a_plain_get_sends_everything() {
        let (_dir, file) = file(100);
        let plan = plan(&Method::GET, &HeaderMap::new(), &file);
        assert_eq!(plan.status, StatusCode::OK);
        assert_eq!(plan.bytes, Some((0, 100)));
        assert_eq!(plan.headers[CONTENT_LENGTH], "100");
        assert_eq!(plan.headers[ACCEPT_RANGES], "bytes");
        let head = super::plan(&Method::HEAD, &HeaderMap::new(), &file);
        assert_eq!(head.bytes, None);
        assert_eq!(head.headers[CONTENT_LENGTH], "100");
    }

    #[test]
    fn validators_give_304() {
        let (_dir, file) = file(10);
        let tag = file.etag.to_str().expect("tag").to_owned();
        for matching in [
            tag.clone(),
            format!("W/{tag}"),
            format!("\"a\", {tag}"),
            "*".into(),
        ] {
            let plan = plan(&Method::GET, &request(&[(IF_NONE_MATCH, &matching)]), &file);
            assert_eq!(plan.status, StatusCode::NOT_MODIFIED, "{matching}");
            assert_eq!(plan.bytes, None);
            assert_eq!(plan.headers[ETAG], file.etag);
        }
        let other = plan(
            &Method::GET,
            &request(&[(IF_NONE_MATCH, "\"other\"")]),
            &file,
        );
        assert_eq!(other.status, StatusCode::OK);

        let modified = file.modified.expect("mtime");
        let later = http_date(modified + Duration::from_secs(5));
        let earlier = http_date(modified - Duration::from_secs(5));
        let since = |date: &HeaderValue| {
            plan(
                &Method::GET,
                &request(&[(IF_MODIFIED_SINCE, date.to_str().expect("date"))]),
                &file,
            )
            .status
        };
        assert_eq!(since(&later), StatusCode::NOT_MODIFIED);
        assert_eq!(since(&http_date(modified)), StatusCode::NOT_MODIFIED);
        assert_eq!(since(&earlier), StatusCode::OK);
        // If-None-Match wins over If-Modified-Since.
        let both = request(&[
            (IF_NONE_MATCH, "\"other\""),
            (IF_MODIFIED_SINCE, later.to_str().expect("date")),
        ]);
        assert_eq!(plan(&Method::GET, &both, &file).status, StatusCode::OK);
    }

    #[test]
    fn ranges() {
        let (_dir, file) = file(1000);
        let range = |spec: &str| plan(&Method::GET, &request(&[(RANGE, spec)]), &file);
        let first = range("bytes=0-99");
        assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(first.bytes, Some((0, 100)));
        assert_eq!(first.headers[CONTENT_RANGE], "bytes 0-99/1000");
        assert_eq!(first.headers[CONTENT_LENGTH], "100");
        assert_eq!(range("bytes=900-").bytes, Some((900, 100)));
        assert_eq!(range("bytes=-10").bytes, Some((990, 10)));
        assert_eq!(range("bytes=-5000").bytes, Some((0, 1000)));
        assert_eq!(range("bytes=990-5000").bytes, Some((990, 10)));
        let past = range("bytes=1000-");
        assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(past.headers[CONTENT_RANGE], "bytes */1000");
        assert_eq!(range("bytes=-0").status, StatusCode::RANGE_NOT_SATISFIABLE);
        // Ignored: the whole file.
        for spec in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=x-",
            "bytes",
        ] {
            assert_eq!(range(spec).status, StatusCode::OK, "{spec}");
        }
        // Not for HEAD.
        let head = plan(&Method::HEAD, &request(&[(RANGE, "bytes=0-1")]), &file);
        assert_eq!(head.status, StatusCode::OK);
    }

    #[test]
    fn if_range_sends_everything_when_the_file_changed() {
        let (_dir, file) = file(1000);
        let tag = file.etag.to_str().expect("tag").to_owned();
        let with = |condition: &str| {
            plan(
                &Method::GET,
                &request(&[(RANGE, "bytes=0-9"), (IF_RANGE, condition)]),
                &file,
            )
            .status
        };
        assert_eq!(with(&tag), StatusCode::PARTIAL_CONTENT);
        assert_eq!(with("\"stale\""), StatusCode::OK);
        assert_eq!(with(&format!("W/{tag}")), StatusCode::OK);
        let date = file.last_modified.clone().expect("date");
        assert_eq!(
            with(date.to_str().expect("date")),
            StatusCode::PARTIAL_CONTENT
        );
    }
}
