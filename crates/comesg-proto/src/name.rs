//! Validated object names.

use serde::{Deserialize, Serialize};

/// Longest name in bytes.
pub const MAX_NAME: usize = 255;
/// Deepest nesting of namespaces.
pub const MAX_DEPTH: usize = 16;

/// A path in the comesg namespace tree: `/` alone (the root) or `/`-separated
/// components of ASCII letters, digits, `.`, `_` and `-`, none of them `.`
/// or `..`, at most 255 bytes and 16 levels.
///
/// ```
/// use comesg_proto::Name;
/// assert!(Name::try_from("/app/sensors/imu").is_ok());
/// assert!(Name::try_from("/").is_ok());
/// assert!(Name::try_from("app").is_err());          // not absolute
/// assert!(Name::try_from("/app/../etc").is_err());  // no dot-dot
/// assert!(Name::try_from("/a//b").is_err());        // empty component
/// assert!(Name::try_from("/a b").is_err());         // bad character
/// assert!(Name::try_from("/app/").is_err());        // trailing slash
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Does not start with `/`.
    #[error("name {0:?} must start with '/'")]
    NotAbsolute(String),
    /// Longer than `MAX_NAME` bytes or deeper than `MAX_DEPTH`.
    #[error("name {0:?} is too long or too deep")]
    TooLong(String),
    /// An empty, `.` or `..` component, or a forbidden character.
    #[error("name {0:?} has an invalid component")]
    BadComponent(String),
}

impl Name {
    /// The root namespace, `/`.
    pub fn root() -> Name {
        Name("/".into())
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// Components from the root down; empty for the root.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent namespace and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(Name, &str)> {
        if self.is_root() {
            return None;
        }
        let i = self.0.rfind('/')?;
        let parent = if i == 0 { "/".to_string() } else { self.0[..i].to_string() };
        Some((Name(parent), &self.0[i + 1..]))
    }

    /// The child `component` of this namespace.
    pub fn join(&self, component: &str) -> Result<Name, NameError> {
        let s = if self.is_root() { format!("/{component}") } else { format!("{}/{component}", self.0) };
        Name::try_from(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Name, NameError> {
        if !s.starts_with('/') {
            return Err(NameError::NotAbsolute(s));
        }
        if s == "/" {
            return Ok(Name(s));
        }
        if s.len() > MAX_NAME || s.split('/').count() - 1 > MAX_DEPTH {
            return Err(NameError::TooLong(s));
        }
        let ok = s[1..].split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
        if ok {
            Ok(Name(s))
        } else {
            Err(NameError::BadComponent(s))
        }
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Name, NameError> {
        Name::try_from(s.to_string())
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Name, NameError> {
        Name::try_from(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_joins() {
        let n = Name::try_from("/a/b").unwrap();
        let (p, last) = n.split_last().unwrap();
        assert_eq!(p.as_str(), "/a");
        assert_eq!(last, "b");
        assert_eq!(Name::try_from("/a").unwrap().split_last().unwrap().0, Name::root());
        assert_eq!(Name::root().join("x").unwrap().as_str(), "/x");
        assert_eq!(n.components().collect::<Vec<_>>(), ["a", "b"]);
        let deep = "/a".repeat(17);
        assert!(matches!(Name::try_from(deep), Err(NameError::TooLong(_))));
    }
}
