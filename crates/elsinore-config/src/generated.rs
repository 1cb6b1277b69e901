//! Generated handlers: the executables in a project's `handlers_dir`
//! (Hamlet's `server/.hamlet-gen/handlers/`), each one a supervised handler
//! serving `/api/<Name>`.
//!
//! Only reads the folder (one `read_dir` and one `stat` per entry), on every
//! reload; never on the request path. Whether a file changed is decided by
//! its [`FileFingerprint`], which is part of the [`HandlerSpec`]: a replaced
//! binary is a different spec, so the live reload replaces the handler the
//! way it replaces any edited `[[handler]]` (start the new one, switch when
//! it is ready, drain and stop the old one).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::manifest::{
    is_valid_handler_name, HandlerKind, HandlerSpec, DEFAULT_QUEUE, DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_START_TIMEOUT,
};

/// Hamlet names handler binaries `<Name>Handler`; the suffix is dropped
/// from the handler's name and route.
pub const HANDLER_SUFFIX: &str = "Handler";

/// A generated handler `<Name>` serves `/api/<Name>` (and `/api/<Name>/…`).
pub const GENERATED_ROUTE_PREFIX: &str = "/api/";

/// What a handler file looked like when it was read. Any difference means
/// the file was replaced (new inode), rewritten or touched, and the handler
/// is restarted from it; an unchanged file keeps its running process.
/// `ctime` catches rewrites that keep the old `mtime` (`cp -p`,
/// `rsync --inplace -t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFingerprint {
    /// Device of the file (after following symlinks).
    pub dev: u64,
    /// Inode: a file renamed over the old one is a new inode.
    pub ino: u64,
    /// Size in bytes.
    pub len: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    /// Status change time: seconds and nanoseconds since the epoch.
    pub ctime: (i64, i64),
}

impl FileFingerprint {
    /// The fingerprint of a file's metadata.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Where a generated handler comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFrom {
    /// The executable, absolute (inside `handlers_dir`; a symlink stays a
    /// symlink, so re-pointing it is seen as a change of its target).
    pub file: PathBuf,
    /// The file as it was read.
    pub fingerprint: FileFingerprint,
}

/// An entry of `handlers_dir` that serves nothing, worth a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The entry's file name.
    pub name: String,
    /// Why it serves nothing.
    pub reason: String,
}

/// What a `handlers_dir` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeneratedScan {
    /// One spec per handler, sorted by name.
    pub handlers: Vec<HandlerSpec>,
    /// Files that look like handlers but are not served, sorted by name.
    /// Dotfiles, editor and temporary files, folders and non-executable
    /// files that do not look like handlers are left out silently.
    pub skipped: Vec<SkippedFile>,
}

/// Lists the handlers in `dir` (absolute). A missing folder holds no
/// handler (it may be generated later); any other failure to list it is an
/// error, so the caller keeps what it had rather than dropping every
/// handler because of, say, a permission problem.
pub fn scan_handlers_dir(dir: &Path) -> std::io::Result<GeneratedScan> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(GeneratedScan::default())
        }
        Err(err) => return Err(err),
    };
    let mut found: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut skipped = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            skipped.push(SkippedFile {
                name: file_name.to_string_lossy().into_owned(),
                reason: "name is not UTF-8".to_owned(),
            });
            continue;
        };
        match classify(dir, file_name) {
            Entry::Ignored => {}
            Entry::Skipped(reason) => skipped.push(SkippedFile {
                name: file_name.to_owned(),
                reason,
            }),
            Entry::Handler(candidate) => {
                let candidate = *candidate;
                let name = candidate.spec.name.clone();
                match found.remove(&name) {
                    None => {
                        found.insert(name, candidate);
                    }
                    Some(other) => {
                        // `GetFeedHandler` and `GetFeed`: the Hamlet form
                        // wins, whatever order read_dir gave them in.
                        let (keep, drop) = if candidate.suffixed {
                            (candidate, other)
                        } else {
                            (other, candidate)
                        };
                        skipped.push(SkippedFile {
                            name: drop.file_name,
                            reason: format!(
                                "{} also defines handler {name}; the {HANDLER_SUFFIX}-suffixed file is used",
                                keep.file_name
                            ),
                        });
                        found.insert(name, keep);
                    }
                }
            }
        }
    }
    skipped.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(GeneratedScan {
        handlers: found.into_values().map(|c| c.spec).collect(),
        skipped,
    })
}

/// A handler found in the folder.
struct Candidate {
    spec: HandlerSpec,
    file_name: String,
    /// Named `<Name>Handler` (rather than `<Name>`).
    suffixed: bool,
}

/// What one folder entry is.
enum Entry {
    /// Not a handler and not worth a warning.
    Ignored,
    /// Looks like a handler but cannot be one.
    Skipped(String),
    /// Boxed: a spec is much larger than the other variants.
    Handler(Box<Candidate>),
}

fn classify(dir: &Path, file_name: &str) -> Entry {
    if file_name.starts_with('.') || is_scratch_file(file_name) {
        return Entry::Ignored;
    }
    let (name, suffixed) = match file_name.strip_suffix(HANDLER_SUFFIX) {
        Some(name) if !name.is_empty() => (name, true),
        _ => (file_name, false),
    };
    let looks_like_handler = is_valid_handler_name(name);
    let path = dir.join(file_name);
    // `metadata` follows symlinks: a symlinked binary is a handler.
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        // Removed between read_dir and now: the next reload sees it gone.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return if std::fs::symlink_metadata(&path).is_ok() && looks_like_handler {
                Entry::Skipped("symlink to a file that does not exist".to_owned())
            } else {
                Entry::Ignored
            };
        }
        Err(err) => return Entry::Skipped(format!("cannot read: {err}")),
    };
    if metadata.is_dir() {
        return Entry::Ignored;
    }
    if !metadata.is_file() {
        return if looks_like_handler {
            Entry::Skipped("not a regular file".to_owned())
        } else {
            Entry::Ignored
        };
    }
    let executable = metadata.mode() & 0o111 != 0;
    match (looks_like_handler, executable) {
        (true, true) => {}
        (true, false) => {
            return Entry::Skipped("not executable (chmod +x it to serve it)".to_owned())
        }
        (false, true) => {
            return Entry::Skipped(format!(
                "{name:?} is not a handler name: expected <Name>{HANDLER_SUFFIX} or <Name>, 1 to 64 letters, digits, '-' or '_'"
            ))
        }
        // README.md, handler sources, …: not meant to be run.
        (false, false) => return Entry::Ignored,
    }
    let Some(program) = path.to_str() else {
        return Entry::Skipped("its path is not UTF-8".to_owned());
    };
    Entry::Handler(Box::new(Candidate {
        spec: generated_spec(name, program, FileFingerprint::of(&metadata)),
        file_name: file_name.to_owned(),
        suffixed,
    }))
}

/// Editor swap and backup files, partial downloads: never handlers, and
/// often executable copies of one (`GetFeedHandler~`).
fn is_scratch_file(name: &str) -> bool {
    const SUFFIXES: [&str; 9] = [
        "~", ".swp", ".swo", ".swx", ".tmp", ".temp", ".bak", ".part", ".orig",
    ];
    let lower = name.to_ascii_lowercase();
    SUFFIXES.iter().any(|s| lower.ends_with(s))
        || (name.len() > 1 && name.starts_with('#') && name.ends_with('#'))
}

/// The spec of handler `name` run from `program`: every setting at its
/// `[[handler]]` default, routes `/api/<name>`.
fn generated_spec(name: &str, program: &str, fingerprint: FileFingerprint) -> HandlerSpec {
    HandlerSpec {
        name: name.to_owned(),
        kind: HandlerKind::Command {
            argv: vec![program.to_owned()],
        },
        routes: vec![format!("{GENERATED_ROUTE_PREFIX}{name}")],
        ready: None,
        env: BTreeMap::new(),
        start_timeout: DEFAULT_START_TIMEOUT,
        response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        max_concurrent: None,
        queue: DEFAULT_QUEUE,
        queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        reuse_after_body: false,
        socket: false,
        idle_stop: None,
        start: crate::StartPolicy::Always,
        listen_fd: false,
        generated: Some(GeneratedFrom {
            file: PathBuf::from(program),
            fingerprint,
        }),
        run_as: None,
        key_env: None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn names(scan: &GeneratedScan) -> Vec<&str> {
        scan.handlers.iter().map(|h| h.name.as_str()).collect()
    }

    fn skipped(scan: &GeneratedScan) -> Vec<(&str, &str)> {
        scan.skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect()
    }

    #[test]
    fn executables_become_handlers_on_api_routes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let feed = write(dir.path(), "GetFeedHandler", 0o755);
        write(dir.path(), "SubmitItem", 0o700);
        write(dir.path(), "get-user_2Handler", 0o755);
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert_eq!(names(&scan), ["GetFeed", "SubmitItem", "get-user_2"]);
        assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
        let spec = &scan.handlers[0];
        assert_eq!(spec.routes, ["/api/GetFeed"]);
        assert_eq!(
            spec.kind,
            HandlerKind::Command {
                argv: vec![feed.display().to_string()]
            }
        );
        assert_eq!(spec.ready, None);
        assert_eq!(spec.start_timeout, DEFAULT_START_TIMEOUT);
        assert_eq!(spec.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
        assert_eq!(spec.max_concurrent, None);
        assert_eq!(spec.generated.as_ref().map(|g| &g.file), Some(&feed));
    }

    #[test]
    fn scratch_files_dotfiles_and_folders_are_ignored_silently() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            ".GetFeedHandler",
            ".GetFeedHandler.swp",
            "GetFeedHandler~",
            "GetFeedHandler.swp",
            "GetFeedHandler.tmp",
            "GetFeedHandler.BAK",
            "#GetFeedHandler#",
            "README.md",
            "GetFeed.elm",
        ] {
            write(dir.path(), name, 0o755);
        }
        // Non-executable and not named like a handler: sources, notes.
        write(dir.path(), "notes.txt", 0o644);
        std::fs::create_dir(dir.path().join("SubFolder")).expect("mkdir");
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert!(scan.handlers.is_empty(), "{:?}", names(&scan));
        // Executable files with names that cannot be handlers are worth a
        // word; scratch files are not.
        assert_eq!(
            skipped(&scan),
            [
                (
                    "GetFeed.elm",
                    "\"GetFeed.elm\" is not a handler name: expected <Name>Handler or <Name>, 1 to 64 letters, digits, '-' or '_'"
                ),
                (
                    "README.md",
                    "\"README.md\" is not a handler name: expected <Name>Handler or <Name>, 1 to 64 letters, digits, '-' or '_'"
                ),
            ]
        );
    }

    #[test]
    fn a_handler_named_file_that_is_not_executable_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "GetFeedHandler", 0o644);
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert!(scan.handlers.is_empty());
        assert_eq!(
            skipped(&scan),
            [("GetFeedHandler", "not executable (chmod +x it to serve it)")]
        );
    }

    #[test]
    fn the_suffixed_file_wins_a_name_clash() {
        let dir = tempfile::tempdir().expect("temp dir");
        let suffixed = write(dir.path(), "GetFeedHandler", 0o755);
        write(dir.path(), "GetFeed", 0o755);
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert_eq!(names(&scan), ["GetFeed"]);
        assert_eq!(
            scan.handlers[0].generated.as_ref().map(|g| &g.file),
            Some(&suffixed)
        );
        assert_eq!(
            skipped(&scan),
            [(
                "GetFeed",
                "GetFeedHandler also defines handler GetFeed; the Handler-suffixed file is used"
            )]
        );
    }

    #[test]
    fn a_file_named_handler_is_handler_handler() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "Handler", 0o755);
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert_eq!(names(&scan), ["Handler"]);
        assert_eq!(scan.handlers[0].routes, ["/api/Handler"]);
    }

    #[test]
    fn symlinks_are_followed_and_dangling_ones_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let target = write(elsewhere.path(), "feed.bin", 0o755);
        std::os::unix::fs::symlink(&target, dir.path().join("GetFeedHandler")).expect("symlink");
        std::os::unix::fs::symlink(
            elsewhere.path().join("gone"),
            dir.path().join("GoneHandler"),
        )
        .expect("symlink");
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert_eq!(names(&scan), ["GetFeed"]);
        // The symlink is run, so re-pointing it is seen (new target inode).
        assert_eq!(
            scan.handlers[0].generated.as_ref().map(|g| g.file.clone()),
            Some(dir.path().join("GetFeedHandler"))
        );
        assert_eq!(
            skipped(&scan),
            [("GoneHandler", "symlink to a file that does not exist")]
        );
    }

    #[test]
    fn invalid_names_are_skipped_with_a_reason() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), "Get Feed", 0o755);
        write(dir.path(), &format!("{}Handler", "x".repeat(65)), 0o755);
        write(dir.path(), "run.sh", 0o755);
        let scan = scan_handlers_dir(dir.path()).expect("scan");
        assert!(scan.handlers.is_empty());
        let reasons: Vec<&str> = scan.skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{:?}", scan.skipped);
        assert!(scan
            .skipped
            .iter()
            .all(|s| s.reason.contains("is not a handler name")));
    }

    #[test]
    fn a_missing_folder_holds_no_handler_and_a_file_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            scan_handlers_dir(&dir.path().join("missing")).expect("scan"),
            GeneratedScan::default()
        );
        let file = write(dir.path(), "plain", 0o644);
        assert!(scan_handlers_dir(&file).is_err());
    }

    #[test]
    fn the_fingerprint_changes_when_the_file_is_replaced_or_touched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = write(dir.path(), "GetFeedHandler", 0o755);
        let first = scan_handlers_dir(dir.path()).expect("scan");
        let again = scan_handlers_dir(dir.path()).expect("scan");
        assert_eq!(first, again, "an unchanged file is the same spec");

        // Deploy by rename: a new inode, even with the same bytes.
        let staged = dir.path().join(".GetFeedHandler.new");
        std::fs::copy(&path, &staged).expect("copy");
        std::fs::rename(&staged, &path).expect("rename");
        let replaced = scan_handlers_dir(dir.path()).expect("scan");
        assert_ne!(first.handlers[0], replaced.handlers[0]);

        // Touched (or rewritten keeping its size): a new mtime.
        let file = std::fs::File::options()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .expect("set mtime");
        drop(file);
        let touched = scan_handlers_dir(dir.path()).expect("scan");
        assert_ne!(replaced.handlers[0], touched.handlers[0]);
    }
}
