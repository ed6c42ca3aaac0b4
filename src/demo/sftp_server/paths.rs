//! Path confinement: SFTP paths are virtual and resolved lexically, so no
//! request can name a path outside the served directory.

use std::path::{Path, PathBuf};

/// Splits an SFTP path into normalised components: `.` and empty parts are
/// dropped and `..` removes the previous part but never goes above `/`.
/// Relative paths are taken relative to `/`.
pub(super) fn virtual_components(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    parts
}

/// The canonical virtual form of `path`, e.g. `/a/b`.
pub(super) fn normalize_virtual(path: &str) -> String {
    format!("/{}", virtual_components(path).join("/"))
}

/// Maps an SFTP path onto the local filesystem, always inside `root`.
pub(super) fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let mut real = root.to_path_buf();
    // Components contain no '/', and `..`/`.` were removed, so each push adds
    // exactly one level below `root`.
    real.extend(virtual_components(path));
    real
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_paths_are_normalised_lexically() {
        assert_eq!(normalize_virtual(""), "/");
        assert_eq!(normalize_virtual("."), "/");
        assert_eq!(normalize_virtual("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_virtual("a/./b//c/../d"), "/a/b/d");
        assert_eq!(normalize_virtual("../.."), "/");
    }

    #[test]
    fn resolved_paths_stay_under_root() {
        let root = Path::new("/srv/demo");
        assert_eq!(
            resolve_in(root, "/../../etc/passwd"),
            Path::new("/srv/demo/etc/passwd")
        );
        assert_eq!(resolve_in(root, ".."), Path::new("/srv/demo"));
        assert_eq!(resolve_in(root, "x/../../y"), Path::new("/srv/demo/y"));
    }
}
