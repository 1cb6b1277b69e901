//! What Elsinore does to its own process so that handlers cannot read it.

/// Marks Elsinore non-dumpable (`PR_SET_DUMPABLE` 0). Linux then refuses
/// other processes without `CAP_SYS_PTRACE`, handlers of the same user
/// included, access to its `/proc/<pid>/environ` (every `key_env` and
/// `admin_token_env` value), `mem`, `maps` and `fd/`, and `ptrace`; and it
/// leaves no core dump. Root (and anything with `CAP_SYS_PTRACE`) can
/// still read them, and `/proc/<pid>/cmdline` stays readable by everyone.
///
/// Handlers are not affected: `exec` makes a new program dumpable again.
pub fn refuse_inspection() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
}
