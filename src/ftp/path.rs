//! Virtual paths: what the FTP client sees, confined to the user's root.
//!
//! Every path a client names is resolved lexically against the working
//! directory into a normalised absolute path with no `.` or `..` left, and `..`
//! at the top stays at the top. Only then is it appended to the user's root on
//! the upstream, so no argument can name anything outside that root.

use crate::upstream::RemotePath;

/// An absolute, normalised path inside the user's root; `/` is the root.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VirtualPath {
    /// Components, none empty, none `.` or `..`, none containing `/` or NUL.
    components: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// SFTP servers read paths as C strings: a NUL would silently cut the path.
    #[error("path contains a NUL byte")]
    Nul,
}

impl VirtualPath {
    pub fn root() -> Self {
        VirtualPath {
            components: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// Resolves a client-supplied path against `self` (the working directory).
    pub fn resolve(&self, arg: &[u8]) -> Result<VirtualPath, PathError> {
        if arg.contains(&0) {
            return Err(PathError::Nul);
        }
        let mut components = if arg.first() == Some(&b'/') {
            Vec::new()
        } else {
            self.components.clone()
        };
        for part in arg.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    components.pop();
                }
                name => components.push(name.to_vec()),
            }
        }
        Ok(VirtualPath { components })
    }

    pub fn parent(&self) -> VirtualPath {
        let mut components = self.components.clone();
        components.pop();
        VirtualPath { components }
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&[u8]> {
        self.components.last().map(Vec::as_slice)
    }

    /// The path as the client sees it, e.g. `/dir/file`.
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.components.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for component in &self.components {
            out.push(b'/');
            out.extend_from_slice(component);
        }
        out
    }

    /// The same path on the upstream, under `root`.
    pub fn to_remote(&self, root: &RemotePath) -> RemotePath {
        self.components
            .iter()
            .fold(root.clone(), |path, component| path.join(component))
    }
}

impl std::fmt::Debug for VirtualPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl std::fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(cwd: &str, arg: &str) -> String {
        VirtualPath::root()
            .resolve(cwd.as_bytes())
            .unwrap()
            .resolve(arg.as_bytes())
            .unwrap()
            .to_string()
    }

    #[test]
    fn relative_paths_resolve_against_the_working_directory() {
        assert_eq!(resolve("/a/b", "c.txt"), "/a/b/c.txt");
        assert_eq!(resolve("/a/b", "./c/../d"), "/a/b/d");
    }

    #[test]
    fn absolute_paths_start_at_the_user_root() {
        assert_eq!(resolve("/a/b", "/x"), "/x");
    }

    #[test]
    fn dot_dot_never_climbs_above_the_root() {
        assert_eq!(resolve("/", "../../.."), "/");
        assert_eq!(resolve("/a", "../../../etc/passwd"), "/etc/passwd");
        assert_eq!(resolve("/a", "/../.."), "/");
    }

    #[test]
    fn doubled_and_trailing_slashes_collapse() {
        assert_eq!(resolve("/", "a//b/"), "/a/b");
    }

    #[test]
    fn remote_path_is_always_under_the_root() {
        let root = RemotePath::new(b"/srv/ftp/alice".to_vec());
        let escape = VirtualPath::root().resolve(b"../../etc/passwd").unwrap();
        assert_eq!(
            escape.to_remote(&root).as_bytes(),
            b"/srv/ftp/alice/etc/passwd"
        );
        assert_eq!(VirtualPath::root().to_remote(&root), root);
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert_eq!(
            VirtualPath::root().resolve(b"a\0/../../x"),
            Err(PathError::Nul)
        );
    }

    #[test]
    fn non_utf8_names_are_kept_verbatim() {
        let path = VirtualPath::root().resolve(b"caf\xe9/\xff").unwrap();
        assert_eq!(path.to_bytes(), b"/caf\xe9/\xff".to_vec());
        assert_eq!(path.file_name(), Some(&b"\xff"[..]));
    }

    #[test]
    fn parent_of_the_root_is_the_root() {
        assert!(VirtualPath::root().parent().is_root());
    }
}
