//! Login names and the templates they fill: `root = "/home/{user}"`,
//! `upstream_user = "{local}"`.
//!
//! `{user}` is the login name as typed, `{local}` the part before an `@`
//! and `{domain}` the part after it. A name that could change the meaning
//! of a path (a `/`, a `\`, `..`, a leading `.`, control characters) is
//! refused before any template sees it, so `{user}` can never climb out of
//! the directory it is placed in.

use std::fmt;

/// The longest login name accepted for routing.
const MAX_NAME: usize = 256;

/// A login name that is safe to place into paths and URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    full: String,
    at: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is longer than {MAX_NAME} bytes")]
    TooLong,
    #[error("the name contains '/', '\\\\', a control character or a space")]
    Separator,
    #[error("the name starts with '.' or is '..'")]
    Dot,
}

impl LoginName {
    pub fn parse(name: &str) -> Result<LoginName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME {
            return Err(NameError::TooLong);
        }
        if name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || c.is_whitespace())
        {
            return Err(NameError::Separator);
        }
        if name.starts_with('.') {
            return Err(NameError::Dot);
        }
        let at = name.rfind('@');
        let name = LoginName {
            full: name.to_owned(),
            at,
        };
        // `alice@..` would make {domain} a parent-directory reference.
        if name.domain().is_some_and(|d| d.starts_with('.')) || name.local().ends_with("..") {
            return Err(NameError::Dot);
        }
        Ok(name)
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part before the last `@`, or the whole name.
    pub fn local(&self) -> &str {
        match self.at {
            Some(at) => &self.full[..at],
            None => &self.full,
        }
    }

    /// The part after the last `@`, if there is one.
    pub fn domain(&self) -> Option<&str> {
        self.at.map(|at| &self.full[at + 1..])
    }
}

impl fmt::Display for LoginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    User,
    Local,
    Domain,
}

/// A string with `{user}`, `{local}` and `{domain}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| i + open)
                .ok_or_else(|| format!("{text:?}: '{{' without '}}'"))?;
            parts.push(match &rest[open + 1..close] {
                "user" => Part::User,
                "local" => Part::Local,
                "domain" => Part::Domain,
                other => {
                    return Err(format!(
                        "{text:?}: unknown placeholder {{{other}}}; use {{user}}, {{local}} or {{domain}}"
                    ));
                }
            });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: '}}' without '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    pub fn uses_domain(&self) -> bool {
        self.parts.contains(&Part::Domain)
    }

    /// The template filled in for `name`; `None` when it needs `{domain}`
    /// and the name has no `@`.
    pub fn expand(&self, name: &LoginName) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::User => out.push_str(name.as_str()),
                Part::Local => out.push_str(name.local()),
                Part::Domain => out.push_str(name.domain()?),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> LoginName {
        LoginName::parse(text).unwrap()
    }

    #[test]
    fn names_split_at_the_last_at_sign() {
        let n = name("alice@example.com");
        assert_eq!((n.local(), n.domain()), ("alice", Some("example.com")));
        let n = name("bob");
        assert_eq!((n.local(), n.domain()), ("bob", None));
        assert_eq!(name("a@b@c").local(), "a@b");
    }

    #[test]
    fn names_that_could_escape_a_directory_are_refused() {
        for bad in [
            "", "../etc", "a/b", "a\\b", "..", ".hidden", "a b", "a\nb", "x@..", "..@x", "a..@x",
        ] {
            assert!(LoginName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(LoginName::parse(&"x".repeat(300)).is_err());
        assert!(LoginName::parse("first.last@corp.example").is_ok());
    }

    #[test]
    fn templates_fill_their_placeholders() {
        let t = Template::parse("/home/{domain}/{local}").unwrap();
        assert_eq!(
            t.expand(&name("alice@corp")),
            Some("/home/corp/alice".into())
        );
        assert_eq!(t.expand(&name("alice")), None, "no domain to fill in");
        assert!(t.uses_domain());
        let t = Template::parse("/srv/{user}").unwrap();
        assert_eq!(
            t.expand(&name("alice@corp")),
            Some("/srv/alice@corp".into())
        );
        assert_eq!(
            Template::parse("/fixed").unwrap().expand(&name("x")),
            Some("/fixed".into())
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert!(
            Template::parse("/home/{name}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            Template::parse("/home/{user")
                .unwrap_err()
                .contains("without")
        );
        assert!(
            Template::parse("/home/user}")
                .unwrap_err()
                .contains("without")
        );
    }
}
