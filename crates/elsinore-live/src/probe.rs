//! What each host folder holds that a table needs: a `public/` (a static
//! site) and, with `tls_listen`, a `tls/` (certificates). Two `stat`s per
//! host, which with a million host folders are most of a full reload, so
//! they are spread over the cores, and each is a `fstatat` relative to
//! `hosts/` opened once (`h1.test/public`): the kernel walks two path
//! components instead of the whole path from `/` each time.

use std::path::Path;

use elsinore_static::PUBLIC_DIR;
use elsinore_tls::TLS_DIR;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, SFlag};

/// Below this many hosts one thread is quicker than starting others.
const PARALLEL_FROM: usize = 4_096;
/// More threads than this only contend for the same directory entries.
const MAX_THREADS: usize = 8;

/// What one host folder holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Inside {
    /// It has a `public/` folder.
    pub public: bool,
    /// It has a `tls/` folder (only looked for when asked).
    pub tls: bool,
}

/// What each of `folders` (in `hosts_dir`) holds, in order; `tls/` is
/// looked for only when `want_tls`.
pub(crate) fn probe(hosts_dir: &Path, folders: &[&str], want_tls: bool) -> Vec<Inside> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    // Unreadable: every look below then says "nothing inside", as a
    // `stat` of each path would have.
    let dir = std::fs::File::open(hosts_dir).ok();
    let look_all = |part: &[&str]| -> Vec<Inside> {
        let mut path = String::new();
        part.iter()
            .map(|folder| match &dir {
                Some(dir) => look(dir, &mut path, folder, want_tls),
                None => Inside::default(),
            })
            .collect()
    };
    if folders.len() < PARALLEL_FROM || threads == 1 {
        return look_all(folders);
    }
    let chunk = folders.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = folders
            .chunks(chunk)
            .map(|part| (part, scope.spawn(move || look_all(part))))
            .collect();
        parts
            .into_iter()
            // A thread that failed is done again here, so the answer
            // always has one entry per folder.
            .flat_map(|(part, thread)| thread.join().unwrap_or_else(|_| look_all(part)))
            .collect()
    })
}

/// What `folder` (in the open `hosts/`) holds; `path` is a buffer.
fn look(hosts: &std::fs::File, path: &mut String, folder: &str, want_tls: bool) -> Inside {
    let mut is_dir = |inner: &str| {
        path.clear();
        path.push_str(folder);
        path.push('/');
        path.push_str(inner);
        // Symbolic links followed, as `Path::is_dir` does.
        fstatat(hosts, path.as_str(), AtFlags::empty())
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
    };
    Inside {
        public: is_dir(PUBLIC_DIR),
        tls: want_tls && is_dir(TLS_DIR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_folder_says_what_it_holds_in_order_on_one_thread_or_many() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names: Vec<String> = (0..PARALLEL_FROM + 10)
            .map(|i| format!("h{i}.test"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
            if i % 3 == 1 {
                std::fs::create_dir(dir.path().join(name).join(PUBLIC_DIR)).expect("public");
            }
            if i % 5 == 2 {
                std::fs::create_dir(dir.path().join(name).join(TLS_DIR)).expect("tls");
            }
        }
        let folders: Vec<&str> = names.iter().map(String::as_str).collect();
        for count in [10, folders.len()] {
            let found = probe(dir.path(), &folders[..count], true);
            assert_eq!(found.len(), count);
            for (i, inside) in found.iter().enumerate() {
                assert_eq!(inside.public, i % 3 == 1, "{}", folders[i]);
                assert_eq!(inside.tls, i % 5 == 2, "{}", folders[i]);
            }
        }
        assert!(!probe(dir.path(), &folders[2..3], false)[0].tls);
    }
}
