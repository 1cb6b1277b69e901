//! Finding a request's file on disk. Blocking: run on `spawn_blocking`.
//!
//! Every lookup resolves symbolic links (`canonicalize`) and checks that
//! the real path is still inside the real `public/`, so a link pointing
//! outside is refused however it was made; links that stay inside work.
//! Only regular files are served: never a FIFO or a device, which could
//! block a reader forever.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::file::{Stamp, StaticFile};
use crate::path::RelPath;

/// The file a folder path is answered with.
pub const INDEX_FILE: &str = "index.html";

/// What a path names in `public/`.
#[derive(Debug, Clone)]
pub enum Found {
    /// A file to serve.
    File(Arc<StaticFile>),
    /// A folder with an `index.html`, named without the trailing `/`: the
    /// client is sent to the folder's URL so relative links work.
    Folder,
    /// Nothing servable: the handler answers.
    Missing,
    /// The real path is outside `public/` (a symbolic link): refused.
    Outside,
}

/// Looks `rel` up in `root` (the configured `public/` folder), reading
/// the content of files of at most `max_content` bytes. `previous` is what
/// an earlier lookup found: its content is reused when the file did not
/// change.
pub(crate) fn lookup(
    root: &Path,
    rel: &RelPath,
    max_content: u64,
    previous: Option<&StaticFile>,
) -> io::Result<Found> {
    let Some(root) = canonical(root)? else {
        return Ok(Found::Missing);
    };
    let named = root.join(&rel.path);
    let Some(real) = canonical(&named)? else {
        return Ok(Found::Missing);
    };
    if !real.starts_with(&root) {
        return Ok(Found::Outside);
    }
    let meta = std::fs::metadata(&real)?;
    if meta.is_dir() {
        let Some(index) = canonical(&real.join(INDEX_FILE))? else {
            return Ok(Found::Missing);
        };
        if !index.starts_with(&root) {
            return Ok(Found::Outside);
        }
        let index_meta = std::fs::metadata(&index)?;
        if !index_meta.is_file() {
            return Ok(Found::Missing);
        }
        if !rel.folder {
            return Ok(Found::Folder);
        }
        return file(index, &index_meta, max_content, previous);
    }
    if !meta.is_file() || rel.folder {
        return Ok(Found::Missing);
    }
    file(real, &meta, max_content, previous)
}

fn file(
    path: std::path::PathBuf,
    meta: &std::fs::Metadata,
    max_content: u64,
    previous: Option<&StaticFile>,
) -> io::Result<Found> {
    if let Some(previous) = previous.filter(|p| p.path == path && p.stamp == Stamp::of(meta)) {
        let same = StaticFile::new(path, meta, previous.content.clone());
        return Ok(Found::File(Arc::new(same)));
    }
    let content = if meta.len() <= max_content {
        Some(read_at_most(&path, max_content)?)
    } else {
        None
    };
    // A file that grew past the limit while being read is streamed.
    let content = content.filter(|c| c.len() as u64 <= max_content);
    Ok(Found::File(Arc::new(StaticFile::new(path, meta, content))))
}

/// Reads up to `limit + 1` bytes, so a file that grew is noticed.
fn read_at_most(path: &Path, limit: u64) -> io::Result<Bytes> {
    let mut content = Vec::new();
    File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut content)?;
    Ok(Bytes::from(content))
}

/// Errors that mean "no such file": the path or one of its folders does
/// not exist, or a component is a file (`/index.html/x`).
/// `path` with every symbolic link resolved; `None` when it names nothing.
fn canonical(path: &Path) -> io::Result<Option<PathBuf>> {
    match path.canonicalize() {
        Ok(real) => Ok(Some(real)),
        Err(err) if missing(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

fn missing(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || err.raw_os_error() == Some(40) // ELOOP: a symlink cycle names nothing.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{check, PathCheck};

    fn rel(path: &str) -> RelPath {
        match check(path) {
            PathCheck::Look(rel) => rel,
            other => panic!("{path}: {other:?}"),
        }
    }

    fn find(root: &Path, path: &str) -> Found {
        lookup(root, &rel(path), 1024, None).expect("lookup")
    }

    fn site() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let public = dir.path().join("public");
        std::fs::create_dir_all(public.join("docs")).expect("mkdir");
        std::fs::create_dir_all(public.join("empty")).expect("mkdir");
        std::fs::write(public.join("index.html"), "<h1>home</h1>").expect("write");
        std::fs::write(public.join("docs/index.html"), "docs").expect("write");
        std::fs::write(public.join("big.bin"), vec![7u8; 4096]).expect("write");
        std::fs::write(dir.path().join("secret.txt"), "secret").expect("write");
        (dir, public)
    }

    #[test]
    fn files_folders_and_index() {
        let (_dir, public) = site();
        match find(&public, "/") {
            Found::File(file) => assert_eq!(file.content.as_deref(), Some(&b"<h1>home</h1>"[..])),
            other => panic!("{other:?}"),
        }
        assert!(matches!(find(&public, "/docs/"), Found::File(_)));
        assert!(matches!(find(&public, "/docs"), Found::Folder));
        assert!(matches!(find(&public, "/empty/"), Found::Missing));
        assert!(matches!(find(&public, "/empty"), Found::Missing));
        assert!(matches!(find(&public, "/nope.css"), Found::Missing));
        assert!(matches!(find(&public, "/index.html/x"), Found::Missing));
        assert!(matches!(find(&public, "/index.html/"), Found::Missing));
        match find(&public, "/big.bin") {
            Found::File(file) => {
                assert_eq!(file.len, 4096);
                assert!(file.content.is_none(), "over max_content: streamed");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn symlinks_inside_work_and_outside_are_refused() {
        let (dir, public) = site();
        std::os::unix::fs::symlink(public.join("docs"), public.join("manual")).expect("link");
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), public.join("s.txt"))
            .expect("link");
        std::os::unix::fs::symlink(dir.path(), public.join("up")).expect("link");
        std::os::unix::fs::symlink("loop", public.join("loop")).expect("link");
        assert!(matches!(
            find(&public, "/manual/index.html"),
            Found::File(_)
        ));
        assert!(matches!(find(&public, "/s.txt"), Found::Outside));
        assert!(matches!(find(&public, "/up/secret.txt"), Found::Outside));
        assert!(matches!(find(&public, "/up/"), Found::Outside));
        assert!(matches!(find(&public, "/loop"), Found::Missing));
    }

    #[test]
    fn a_missing_public_folder_finds_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            find(&dir.path().join("public"), "/index.html"),
            Found::Missing
        ));
    }

    #[test]
    fn unchanged_files_keep_their_content_without_a_read() {
        let (_dir, public) = site();
        let Found::File(first) = find(&public, "/index.html") else {
            panic!("no file")
        };
        let again = lookup(&public, &rel("/index.html"), 1024, Some(&first)).expect("lookup");
        let Found::File(again) = again else {
            panic!("no file")
        };
        assert_eq!(again.etag, first.etag);
        std::fs::write(public.join("index.html"), "<h1>new home</h1>").expect("write");
        let Found::File(changed) =
            lookup(&public, &rel("/index.html"), 1024, Some(&first)).expect("lookup")
        else {
            panic!("no file")
        };
        assert_eq!(changed.content.as_deref(), Some(&b"<h1>new home</h1>"[..]));
        assert_ne!(changed.etag, first.etag);
    }
}
