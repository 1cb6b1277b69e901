//! The Hamlet framework's shapes of `_keys` and `_hosts`, for projects
//! with `admin_api: "hamlet"`: request bodies as Hamlet's admin UI sends
//! them (`{"label": null}`, `{"hostname", "project"}`) and answers as its
//! `hamlet_host_keys` / `hamlet_hosts` rows (bare arrays, ISO 8601 times),
//! so the UI's `keys.map(…)` works unchanged.
//!
//! Only shapes live here: who may call, what is stored and every status
//! are the same as in Elsinore's own mode (`api.rs`).

use std::time::{Duration, UNIX_EPOCH};

use elsinore_store::keys::{CreatedKey, KeyInfo};
use serde::Deserialize;
use serde_json::{json, Value};

/// `POST _keys`: Hamlet's UI sends `{"label": null}` when the label field
/// is empty; an absent label is the same.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    #[serde(default)]
    pub label: Option<String>,
}

impl CreateKeyBody {
    /// The label as stored: Hamlet keeps `label || null`, Elsinore an
    /// empty string for "no label".
    pub(crate) fn into_label(self) -> String {
        self.label.unwrap_or_default()
    }
}

/// `POST _hosts`: both fields are required (400 otherwise, as in Hamlet).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateHostBody {
    pub hostname: Option<String>,
    pub project: Option<String>,
}

/// Epoch milliseconds as ISO 8601 UTC with milliseconds
/// (`2026-11-22T05:34:03.677Z`), as Hamlet's JSON writes timestamps.
pub(crate) fn iso(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// Elsinore stores "no label" as an empty string; Hamlet as null.
fn label(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::from(text)
    }
}

/// A row of `GET _keys`. `key` is the display prefix: Elsinore never
/// keeps a key itself, only its hash and first characters.
pub(crate) fn key_row(key: &KeyInfo) -> Value {
    json!({
        "id": key.id,
        "target_host": key.host,
        "key": key.prefix,
        "label": label(&key.label),
        "created_at": iso(key.created_at),
        "revoked_at": key.revoked_at.map(iso),
    })
}

/// The answer of `POST _keys`: the whole key, this once.
pub(crate) fn created_row(created: &CreatedKey) -> Value {
    let info = &created.info;
    json!({
        "id": info.id,
        "target_host": info.host,
        "key": created.key.expose(),
        "label": label(&info.label),
        "created_at": iso(info.created_at),
    })
}

/// A row of `GET _hosts`. The id is the host as declared (its folder
/// name, `*.example.com` for a wildcard): Elsinore's hosts are folders,
/// with no number of their own. `created_at` is when the name was first
/// served for the project, null when that was never recorded.
pub(crate) fn host_row(name: &str, project: &str, created_at: Option<i64>) -> Value {
    json!({
        "id": name,
        "hostname": name,
        "project": project,
        "created_at": created_at.map(iso),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601_utc_with_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_795_326_001_677), "2026-11-22T05:40:01.677Z");
    }

    #[test]
    fn rows_have_exactly_hamlets_fields() {
        let key = KeyInfo {
            id: 3,
            host: "blog.localhost".into(),
            project: "horatio".into(),
            label: String::new(),
            prefix: "ehk_LvlnlQSk".into(),
            created_at: 0,
            revoked_at: Some(1000),
            grace_until: None,
        };
        assert_eq!(
            key_row(&key),
            json!({"id": 3, "target_host": "blog.localhost", "key": "ehk_LvlnlQSk",
                   "label": null, "created_at": "1970-01-01T00:00:00.000Z",
                   "revoked_at": "1970-01-01T00:00:01.000Z"})
        );
        assert_eq!(
            host_row("blog.localhost", "horatio", None),
            json!({"id": "blog.localhost", "hostname": "blog.localhost",
                   "project": "horatio", "created_at": null})
        );
    }

    #[test]
    fn a_null_or_absent_label_is_no_label() {
        for body in [r#"{"label": null}"#, "{}"] {
            let parsed: CreateKeyBody = serde_json::from_str(body).expect(body);
            assert_eq!(parsed.into_label(), "");
        }
        let parsed: CreateKeyBody = serde_json::from_str(r#"{"label": "ci"}"#).expect("string");
        assert_eq!(parsed.into_label(), "ci");
    }
}
