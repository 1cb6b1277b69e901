//! Longest-prefix choice of a handler within a project.

/// Maps path prefixes to handler indexes; built once per table.
#[derive(Debug, Clone, Default)]
pub struct PrefixRouter {
    /// Sorted longest first, so the first match is the longest.
    prefixes: Vec<(Box<str>, usize)>,
}

impl PrefixRouter {
    /// `routes[i]` are the prefixes of handler `i`.
    pub fn new<'a, R>(routes: impl IntoIterator<Item = R>) -> Self
    where
        R: IntoIterator<Item = &'a str>,
    {
        let mut prefixes: Vec<(Box<str>, usize)> = routes
            .into_iter()
            .enumerate()
            .flat_map(|(index, prefixes)| prefixes.into_iter().map(move |p| (p.into(), index)))
            .collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self { prefixes }
    }

    /// The handler whose longest prefix matches `path`. A prefix ending in
    /// `/` is a plain string prefix (`/api/` matches `/api/x` but not
    /// `/api`); one that does not matches whole path segments only
    /// (`/api/GetFeed` matches itself and `/api/GetFeed/123`, never
    /// `/api/GetFeedX`, which is another handler's name).
    pub fn pick(&self, path: &str) -> Option<usize> {
        self.pick_route(path).map(|(_, index)| index)
    }

    /// The longest prefix matching `path` (as [`PrefixRouter::pick`]
    /// chooses it) and its handler: the route, for traces.
    pub fn pick_route(&self, path: &str) -> Option<(&str, usize)> {
        self.prefixes
            .iter()
            .find(|(prefix, _)| matches(prefix, path))
            .map(|(prefix, index)| (&**prefix, *index))
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let router = PrefixRouter::new([vec!["/"], vec!["/api/"], vec!["/api/admin/", "/static/"]]);
        let cases = [
            ("/", Some(0)),
            ("/index.html", Some(0)),
            ("/api", Some(0)),
            ("/api/", Some(1)),
            ("/api/GetFeed", Some(1)),
            ("/api/admin/x", Some(2)),
            ("/static/app.js", Some(2)),
        ];
        for (path, want) in cases {
            assert_eq!(router.pick(path), want, "path {path}");
        }
    }

    #[test]
    fn a_prefix_without_a_trailing_slash_matches_whole_segments() {
        let router = PrefixRouter::new([vec!["/"], vec!["/api/GetFeed"], vec!["/api/GetFeedX"]]);
        let cases = [
            ("/api/GetFeed", Some(1)),
            ("/api/GetFeed/", Some(1)),
            ("/api/GetFeed/123", Some(1)),
            ("/api/GetFeedX", Some(2)),
            ("/api/GetFeedXY", Some(0)),
            ("/api/GetFeedY", Some(0)),
            ("/api/GetFeed.json", Some(0)),
            ("/api/Get", Some(0)),
        ];
        for (path, want) in cases {
            assert_eq!(router.pick(path), want, "path {path}");
        }
        let alone = PrefixRouter::new([vec!["/api/GetFeed"]]);
        assert_eq!(alone.pick("/api/GetFeedX"), None);
        assert_eq!(alone.pick("/api/GetFeed/x"), Some(0));
    }

    #[test]
    fn no_match_without_a_root_route() {
        let router = PrefixRouter::new([vec!["/api/"]]);
        assert_eq!(router.pick("/"), None);
        assert_eq!(router.pick("/api/x"), Some(0));
    }
}
