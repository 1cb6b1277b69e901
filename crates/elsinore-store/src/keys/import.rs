//! Keys made elsewhere (Hamlet's `hamlet_host_keys`, which stores them in
//! plain text) brought into `host_secrets`: hashed like Elsinore's own, with
//! their label and dates, audited, and never twice.

use std::fmt;

use elsinore_keys::{now_ms, KeyHash};

use super::tables::NewKey;
use super::{audit, check_label, Caller, KeyError, KeyInfo, KeyStore, Result};

/// The shortest imported key accepted, as for project keys: a shorter one
/// could be guessed.
pub const MIN_IMPORTED_KEY_LEN: usize = 16;

/// Characters of an imported key shown in listings and the audit log.
/// Fewer than for Elsinore's own keys (`ehk_` + 8), which start with a
/// fixed, non-secret prefix: all 8 here are part of the secret (a third of
/// a UUID's hex digits at most).
pub const IMPORTED_PREFIX_LEN: usize = 8;

/// One plaintext key to import. `Debug` never prints the key.
#[derive(Clone)]
pub struct ImportedKey<'a> {
    /// The host it opens (a normalised host name).
    pub host: &'a str,
    /// The project owning `host`.
    pub project: &'a str,
    /// The key itself.
    pub key: &'a str,
    /// Its label (`""` for none).
    pub label: &'a str,
    /// When it was made, epoch ms.
    pub created_at: i64,
    /// When it was revoked, epoch ms; `None` while it is live.
    pub revoked_at: Option<i64>,
}

impl fmt::Debug for ImportedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportedKey")
            .field("host", &self.host)
            .field("project", &self.project)
            .field("key", &"<redacted>")
            .field("label", &self.label)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

/// What importing one key did.
#[derive(Debug)]
pub enum Imported {
    /// Stored (and audited).
    Added(KeyInfo),
    /// The same key for the same host and project was already stored
    /// (an earlier import): nothing changed.
    AlreadyPresent(KeyInfo),
    /// The same key is stored for another host or project: refused, since
    /// one key opening two hosts would be a surprise to both.
    HeldElsewhere(KeyInfo),
}

/// The prefix an imported key is listed by.
pub fn imported_prefix(key: &str) -> &str {
    key.get(..IMPORTED_PREFIX_LEN).unwrap_or(key)
}

/// Why `key` cannot be a host key: it travels in a header
/// (`X-Hamlet-Host-Key`) and must not be guessable.
pub fn check_imported_key(key: &str) -> Result<()> {
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::InvalidImportedKey(
            "a key may only hold printable ASCII without spaces".to_owned(),
        ));
    }
    if key.len() < MIN_IMPORTED_KEY_LEN {
        return Err(KeyError::InvalidImportedKey(format!(
            "the key is too short ({} characters, at least {MIN_IMPORTED_KEY_LEN} needed)",
            key.len()
        )));
    }
    Ok(())
}

impl KeyStore {
    /// Stores `key` hashed, with its label and dates, unless it is already
    /// stored; the row and its audit entry commit together.
    pub fn import(&self, key: &ImportedKey<'_>, caller: &Caller) -> Result<Imported> {
        check_label(key.label)?;
        check_imported_key(key.key)?;
        let hash = KeyHash::of(key.key);
        self.transaction("cannot import a key", true, |t| {
            // `key_hash` is unique: the same key is one row, whoever has it.
            if let Some(id) = t.key_id_by_hash(&hash.0[..])? {
                let stored = t.key(id)?.ok_or(KeyError::NotFound { id })?;
                return Ok(
                    if stored.host == key.host && stored.project == key.project {
                        Imported::AlreadyPresent(stored)
                    } else {
                        Imported::HeldElsewhere(stored)
                    },
                );
            }
            let id = t.insert_key(&NewKey {
                host: key.host,
                project: key.project,
                label: key.label,
                hash: &hash.0[..],
                prefix: imported_prefix(key.key),
                created_at: key.created_at,
                revoked_at: key.revoked_at,
            })?;
            let info = t.key(id)?.ok_or(KeyError::NotFound { id })?;
            let detail = format!(
                "label {:?}{}",
                key.label,
                if key.revoked_at.is_some() {
                    ", imported revoked"
                } else {
                    ""
                }
            );
            audit(t, now_ms(), &info, caller, "import", &detail)?;
            Ok(Imported::Added(info))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::store;
    use crate::keys::KeyStatus;

    const UUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn hamlet(key: &str, revoked_at: Option<i64>) -> ImportedKey<'_> {
        ImportedKey {
            host: "blog.localhost",
            project: "horatio",
            key,
            label: "editor, Kim",
            created_at: 1_767_608_430_123,
            revoked_at,
        }
    }

    #[test]
    fn imports_hashed_with_dates_once_and_audited() {
        let (_dir, store) = store();
        let Imported::Added(info) = store
            .import(&hamlet(UUID, None), &Caller::operator())
            .expect("import")
        else {
            panic!("not added");
        };
        assert_eq!(
            (info.prefix.as_str(), info.label.as_str(), info.created_at),
            ("0f8fad5b", "editor, Kim", 1_767_608_430_123)
        );
        assert_eq!(info.status(now_ms()), KeyStatus::Live);
        let live = store.live_keys(now_ms()).expect("live");
        assert_eq!(live.len(), 1);
        assert!(live[0].hash.ct_eq(&KeyHash::of(UUID)));
        assert!(matches!(
            store.import(&hamlet(UUID, None), &Caller::operator()),
            Ok(Imported::AlreadyPresent(_))
        ));
        let other = ImportedKey {
            host: "news.localhost",
            ..hamlet(UUID, None)
        };
        assert!(matches!(
            store.import(&other, &Caller::operator()),
            Ok(Imported::HeldElsewhere(_))
        ));
        let log = store.audit_log("blog.localhost").expect("audit");
        assert_eq!(log.len(), 1, "one row per key actually imported");
        assert_eq!(
            (log[0].action.as_str(), log[0].actor.as_str()),
            ("import", "operator")
        );
    }

    #[test]
    fn revoked_keys_stay_revoked_and_bad_keys_are_refused() {
        let (_dir, store) = store();
        let revoked = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        let Ok(Imported::Added(info)) = store.import(
            &hamlet(revoked, Some(1_767_700_000_000)),
            &Caller::operator(),
        ) else {
            panic!("not added");
        };
        assert_eq!(info.status(now_ms()), KeyStatus::Revoked);
        assert!(store.live_keys(now_ms()).expect("live").is_empty());
        for bad in ["short-key", "has a space in the key 123"] {
            assert!(matches!(
                store.import(&hamlet(bad, None), &Caller::operator()),
                Err(KeyError::InvalidImportedKey(_))
            ));
        }
    }
}
