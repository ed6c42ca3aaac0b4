//! Between upstream paths (raw bytes) and WebDAV URLs (percent-encoded).
//!
//! Pure functions, no I/O. Every path segment is percent-encoded on the way
//! out, so names with `&`, spaces, `%`, `#`, `?` or any non-ASCII byte reach
//! the server as themselves; `href`s in PROPFIND answers are decoded back to
//! bytes whether the server sends an absolute URL or an absolute path
//! (RFC 4918 §8.3 allows both).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str};

use crate::upstream::RemotePath;

/// Bytes left as they are in a path segment: RFC 3986 "unreserved". Every
/// other byte is encoded, including sub-delims some servers treat specially.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The placeholder in `url` replaced by the FTP login name.
pub const USER_PLACEHOLDER: &str = "{user}";
/// The part of the login name before its last `@`.
pub const LOCAL_PLACEHOLDER: &str = "{local}";
/// The part of the login name after its last `@`.
pub const DOMAIN_PLACEHOLDER: &str = "{domain}";
const PLACEHOLDERS: [&str; 3] = [USER_PLACEHOLDER, LOCAL_PLACEHOLDER, DOMAIN_PLACEHOLDER];

/// A configured base URL, possibly with `{user}` in its path, checked once
/// at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// `https://host:port`, no trailing slash.
    origin: String,
    /// The path as written (percent-encoded, may contain `{user}`), ending in `/`.
    path: String,
}

impl UrlTemplate {
    /// Checks `text`: `http` or `https`, a host, a path, no query or
    /// fragment, `{user}` (if any) only in the path.
    pub fn parse(text: &str) -> Result<UrlTemplate, String> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not a URL (expected https://host/path/)"))?;
        if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
            return Err(format!("{scheme:?} is not http or https"));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['{', '}']) {
            return Err("the URL needs a host (placeholders may appear only in the path)".into());
        }
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not allowed; use auth, username and password".into(),
            );
        }
        if path.contains(['?', '#']) {
            return Err("the URL must not have a query or fragment".into());
        }
        let filled = PLACEHOLDERS.iter().fold(path.to_owned(), |p, placeholder| {
            p.replace(placeholder, "u")
        });
        if filled.contains(['{', '}']) {
            return Err(format!(
                "{text:?}: unknown placeholder; use {{user}}, {{local}} or {{domain}}"
            ));
        }
        // The rest must parse as a URI once the placeholders are filled in.
        let probe = format!("{scheme}://{authority}{filled}");
        let uri: http::Uri = probe
            .parse()
            .map_err(|e| format!("{text:?} is not a valid URL: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err("the URL needs a host".into());
        }
        let mut path = path.to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        Ok(UrlTemplate {
            origin: format!("{}://{authority}", scheme.to_ascii_lowercase()),
            path,
        })
    }

    pub fn is_https(&self) -> bool {
        self.origin.starts_with("https://")
    }

    /// The server's host and port (default 443 or 80), for reachability probes.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let uri: http::Uri = self.origin.parse().ok()?;
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 });
        Some((host, port))
    }

    pub fn has_user_placeholder(&self) -> bool {
        PLACEHOLDERS.iter().any(|p| self.path.contains(p))
    }

    /// The base URL for one FTP user: `{user}` becomes the percent-encoded
    /// name, `{local}` and `{domain}` its parts around the last `@`. `None`
    /// when the URL needs `{domain}` and the name has no `@`.
    pub fn for_user(&self, ftp_user: &str) -> Option<BaseUrl> {
        let (local, domain) = match ftp_user.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (ftp_user, None),
        };
        let mut path = self
            .path
            .replace(USER_PLACEHOLDER, &encode_segment(ftp_user.as_bytes()))
            .replace(LOCAL_PLACEHOLDER, &encode_segment(local.as_bytes()));
        if path.contains(DOMAIN_PLACEHOLDER) {
            path = path.replace(DOMAIN_PLACEHOLDER, &encode_segment(domain?.as_bytes()));
        }
        Some(BaseUrl {
            origin: self.origin.clone(),
            path,
        })
    }
}

impl std::fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin, self.path)
    }
}

/// One session's base URL; upstream paths are below its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    origin: String,
    /// Percent-encoded, ends with `/`.
    path: String,
}

impl BaseUrl {
    /// The absolute URL of `path`; collections get the trailing `/` that
    /// nginx requires for MKCOL, DELETE and MOVE of a directory.
    pub fn url_of(&self, path: &RemotePath, collection: bool) -> String {
        let mut url = self.origin.clone();
        url.push_str(&self.url_path_of(path, collection));
        url
    }

    /// The percent-encoded URL path of `path` (what hrefs are compared with).
    pub fn url_path_of(&self, path: &RemotePath, collection: bool) -> String {
        let mut out = self.path.clone();
        let mut first = true;
        for segment in path.as_bytes().split(|&b| b == b'/') {
            if segment.is_empty() {
                continue;
            }
            if !first {
                out.push('/');
            }
            first = false;
            out.push_str(&encode_segment(segment));
        }
        if collection && !out.ends_with('/') {
            out.push('/');
        }
        out
    }
}

fn encode_segment(segment: &[u8]) -> String {
    // Segments are arbitrary bytes, not necessarily UTF-8.
    percent_encoding::percent_encode(segment, SEGMENT).to_string()
}

/// The percent-encoded path of an `href`: the scheme and authority of an
/// absolute URL are dropped, and any query or fragment.
fn href_encoded_path(href: &str) -> &str {
    let href = href.trim();
    let path = match href.split_once("://") {
        // An absolute URL: the path starts at the first '/' after the authority.
        Some((scheme, rest)) if !scheme.contains('/') => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => href,
    };
    path.split(['?', '#']).next().unwrap_or_default()
}

/// The decoded path of an `href`, as bytes. A trailing `/` is kept (it
/// marks a collection).
pub fn href_path(href: &str) -> Vec<u8> {
    percent_decode_str(href_encoded_path(href)).collect()
}

/// The decoded last segment of an `href` (`/a/b%20c/` → `b c`): the name
/// of a listed member. `None` for the root, `.`, `..`, and names that
/// cannot be a path component (an encoded `/` or NUL).
pub fn href_name(href: &str) -> Option<Vec<u8>> {
    let path = href_encoded_path(href).trim_end_matches('/');
    let encoded = &path[path.rfind('/').map_or(0, |i| i + 1)..];
    let name: Vec<u8> = percent_decode_str(encoded).collect();
    let usable = !name.is_empty()
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0);
    usable.then_some(name)
}

/// `a/b//` and `a/b` are the same resource: compare without trailing slashes.
pub fn same_path(a: &[u8], b: &[u8]) -> bool {
    trim_slashes(a) == trim_slashes(b)
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str, user: &str) -> BaseUrl {
        UrlTemplate::parse(text).unwrap().for_user(user).unwrap()
    }

    fn path(p: &str) -> RemotePath {
        RemotePath::new(p.as_bytes().to_vec())
    }

    #[test]
    fn local_and_domain_placeholders_split_the_name_at_its_last_at_sign() {
        let template = UrlTemplate::parse("https://dav/{domain}/{local}/").unwrap();
        assert_eq!(
            template
                .for_user("j doe@corp.example")
                .unwrap()
                .url_of(&path("/a"), false),
            "https://dav/corp.example/j%20doe/a"
        );
        assert_eq!(template.for_user("nodomain"), None);
        let local_only = UrlTemplate::parse("https://dav/{local}/").unwrap();
        assert_eq!(
            local_only.for_user("ann").unwrap().url_of(&path("/"), true),
            "https://dav/ann/"
        );
    }

    #[test]
    fn the_user_placeholder_becomes_the_encoded_login_name() {
        let url = base("https://dav.example.com/files/{user}/", "j doe&co");
        assert_eq!(
            url.url_of(&path("/"), true),
            "https://dav.example.com/files/j%20doe%26co/"
        );
    }

    #[test]
    fn every_reserved_byte_of_a_name_is_encoded() {
        let url = base("https://h/dav", "u");
        assert_eq!(
            url.url_of(&path("/R&D 100%/#1?x;é.txt"), false),
            "https://h/dav/R%26D%20100%25/%231%3Fx%3B%C3%A9.txt"
        );
        let latin1 = RemotePath::new(b"/caf\xe9".to_vec());
        assert_eq!(url.url_path_of(&latin1, false), "/dav/caf%E9");
    }

    #[test]
    fn collections_get_one_trailing_slash() {
        let url = base("http://h:8080/", "u");
        assert_eq!(url.url_of(&path("/a/b"), true), "http://h:8080/a/b/");
        assert_eq!(url.url_of(&path("/a/b"), false), "http://h:8080/a/b");
        assert_eq!(url.url_of(&path("/"), false), "http://h:8080/");
    }

    #[test]
    fn templates_without_a_scheme_host_or_with_a_query_are_refused() {
        for bad in [
            "dav.example.com/files",
            "ftp://h/",
            "https:///files",
            "https://{user}.example.com/",
            "https://h/files/{name}/",
            "https://h/files?x=1",
            "https://svc:pw@h/files",
        ] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad} accepted");
        }
        let template = UrlTemplate::parse("HTTPS://h/files").unwrap();
        assert_eq!(template.host_port(), Some(("h".to_owned(), 443)));
        assert_eq!(
            UrlTemplate::parse("http://[::1]:8080/d/")
                .unwrap()
                .host_port(),
            Some(("::1".to_owned(), 8080))
        );
        assert_eq!(template.to_string(), "https://h/files/");
        assert!(template.is_https());
        assert!(!template.has_user_placeholder());
    }

    #[test]
    fn hrefs_are_decoded_from_absolute_urls_and_absolute_paths() {
        assert_eq!(href_path("/dav/R%26D%20x.txt"), b"/dav/R&D x.txt");
        assert_eq!(
            href_path("https://h:8443/dav/caf%C3%A9/"),
            "/dav/café/".as_bytes()
        );
        assert_eq!(href_path("http://h"), b"/");
        assert_eq!(href_path("/dav/100%25"), b"/dav/100%");
        // Unencoded characters some servers leave as they are.
        assert_eq!(href_path("/dav/a b&c"), b"/dav/a b&c");
    }

    #[test]
    fn paths_compare_without_trailing_slashes() {
        assert!(same_path(b"/dav/a/", b"/dav/a"));
        assert!(same_path(b"/", b""));
        assert!(!same_path(b"/dav/a", b"/dav/ab"));
    }

    #[test]
    fn member_names_are_the_decoded_last_segment() {
        assert_eq!(href_name("/dav/a/R%26D%20x.txt").unwrap(), b"R&D x.txt");
        assert_eq!(
            href_name("https://h/dav/a/caf%C3%A9/").unwrap(),
            "café".as_bytes()
        );
        assert_eq!(href_name("/dav/a/100%25").unwrap(), b"100%");
        assert_eq!(href_name("/dav/a/sub%2Fdir/"), None, "an encoded slash");
        assert_eq!(href_name("/dav/a/../"), None);
        assert_eq!(href_name("/"), None);
        assert_eq!(href_name("https://h"), None);
    }
}
