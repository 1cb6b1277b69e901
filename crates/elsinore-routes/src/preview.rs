//! `preview_host`: one shared host on which every project is reachable
//! under `/projects/<name>/`, so a project can be tried before its DNS
//! exists. The table holds who is reachable; the proxy reads the path
//! and rewrites the answer (its `preview` module).

use std::collections::HashMap;
use std::sync::Arc;

use crate::ProjectRoute;

/// The preview host and the projects reachable under it.
#[derive(Debug, Clone)]
pub struct Preview {
    /// Also its `host` label with `metrics.per_host`.
    host: Arc<str>,
    projects: HashMap<String, Arc<ProjectRoute>>,
}

impl Preview {
    /// `host` (a validated host name) serving every project in `projects`.
    pub fn new(host: &str, projects: &[Arc<ProjectRoute>]) -> Self {
        Self {
            host: host.into(),
            projects: projects
                .iter()
                .map(|project| (project.name.clone(), project.clone()))
                .collect(),
        }
    }

    /// The preview host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The preview host name, shared (the `host` label of
    /// `metrics.per_host`, not built per request).
    pub fn label(&self) -> &Arc<str> {
        &self.host
    }

    /// The project named `name`, if it is served.
    pub fn project(&self, name: &str) -> Option<&Arc<ProjectRoute>> {
        self.projects.get(name)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn every_served_project_is_reachable_by_name() {
        let shop = Arc::new(
            ProjectRoute::new("shop", PathBuf::from("/p/shop"), None, Vec::new()).expect("route"),
        );
        let preview = Preview::new("preview.localhost", &[shop]);
        assert_eq!(preview.host(), "preview.localhost");
        assert_eq!(
            preview.project("shop").map(|project| project.name.as_str()),
            Some("shop")
        );
        assert!(preview.project("nobody").is_none());
    }
}
