//! Image references in the Docker grammar: `[host[:port]/]path[:tag][@sha256:hex]`.
//!
//! The first path component names a registry only when it looks like a host (it holds a
//! `.` or a `:`, or is `localhost`) and more components follow; otherwise the reference
//! has no registry and the agent only looks for it among imported archives. Nothing here
//! does I/O.

use std::fmt;

/// Why an image reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The reference is empty.
    #[error("empty image reference")]
    Empty,
    /// A path component holds characters outside `[a-z0-9._-]` or misplaced separators.
    #[error("image reference {reference:?}: invalid repository path {path:?}")]
    Path { reference: String, path: String },
    /// The tag is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("image reference {reference:?}: invalid tag {tag:?}")]
    Tag { reference: String, tag: String },
    /// The digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("image reference {reference:?}: invalid digest {digest:?} (expected sha256:<64 hex>)")]
    Digest { reference: String, digest: String },
    /// The registry host or port is malformed.
    #[error("image reference {reference:?}: invalid registry {registry:?}")]
    Registry { reference: String, registry: String },
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` when the reference names a registry.
    pub registry: Option<String>,
    /// The repository path, e.g. `library/busybox`.
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// `sha256:<hex>`, if one was given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `text` per the Docker reference grammar.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256(digest) {
                    return Err(ReferenceError::Digest {
                        reference: text.into(),
                        digest: digest.into(),
                    });
                }
                (rest, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // The tag separator is a ':' after the last '/', so `host:5000/x` has no tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(ReferenceError::Tag {
                reference: text.into(),
                tag: tag.into(),
            });
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !is_host(first) {
                    return Err(ReferenceError::Registry {
                        reference: text.into(),
                        registry: first.into(),
                    });
                }
                (Some(first.to_string()), path)
            }
            _ => (None, name),
        };
        if !repository.split('/').all(is_path_component) {
            return Err(ReferenceError::Path {
                reference: text.into(),
                path: repository.into(),
            });
        }
        Ok(Reference {
            registry,
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest when there is one,
    /// else the tag, else `latest`.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host to talk to and the repository path as the registry's API names them:
    /// `docker.io` is served by `registry-1.docker.io`, and its one-component names live
    /// under `library/`.
    pub fn endpoint(&self) -> Option<(String, String)> {
        let registry = self.registry.as_deref()?;
        if registry == "docker.io" || registry == "index.docker.io" {
            let repository = if self.repository.contains('/') {
                self.repository.clone()
            } else {
                format!("library/{}", self.repository)
            };
            return Some(("registry-1.docker.io".into(), repository));
        }
        Some((registry.to_string(), self.repository.clone()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|b| alnum(*b)) || !bytes.last().is_some_and(|b| alnum(*b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A DNS name or IPv4 address (or `[ipv6]`), with an optional numeric port.
fn is_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match after {
                    "" => return true,
                    _ => match after.strip_prefix(':') {
                        Some(port) => ("ipv6", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port_ok && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(text: &str) -> Reference {
        Reference::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_first_component_with_a_port_dot_or_localhost_is_the_registry() {
        let r = parse("127.0.0.1:5000/hypermesh/busybox:v1");
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "hypermesh/busybox");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest, None);
        assert_eq!(r.to_string(), "127.0.0.1:5000/hypermesh/busybox:v1");

        let r = parse("localhost/app");
        assert_eq!(r.registry.as_deref(), Some("localhost"));
        assert_eq!(r.manifest_reference(), "latest");

        let r = parse("registry.example.com/team/app");
        assert_eq!(r.registry.as_deref(), Some("registry.example.com"));
        assert_eq!(r.repository, "team/app");

        let r = parse("[::1]:5000/app:1");
        assert_eq!(r.registry.as_deref(), Some("[::1]:5000"));
    }

    #[test]
    fn names_without_a_host_have_no_registry() {
        let r = parse("busybox");
        assert_eq!(r.registry, None);
        assert_eq!(r.repository, "busybox");
        let r = parse("team/app:1.2");
        assert_eq!(r.registry, None);
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
    }

    #[test]
    fn a_port_is_not_a_tag_and_a_digest_wins_over_a_tag() {
        let r = parse("host:5000/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.repository, "app");
        let r = parse(&format!("host:5000/app:v1@{DIGEST}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(DIGEST));
        assert_eq!(r.manifest_reference(), DIGEST);
        let r = parse(&format!("host:5000/app@{DIGEST}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.to_string(), format!("host:5000/app@{DIGEST}"));
    }

    #[test]
    fn docker_hub_names_map_to_its_api_host_and_library() {
        let r = parse("docker.io/busybox:1.36");
        assert_eq!(
            r.endpoint(),
            Some(("registry-1.docker.io".into(), "library/busybox".into()))
        );
        let r = parse("127.0.0.1:5000/busybox");
        assert_eq!(
            r.endpoint(),
            Some(("127.0.0.1:5000".into(), "busybox".into()))
        );
        assert_eq!(parse("busybox").endpoint(), None);
    }

    #[test]
    fn malformed_references_are_rejected() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse("host:5000/App"),
            Err(ReferenceError::Path { .. })
        ));
        assert!(matches!(
            Reference::parse("host:5000/app:-bad"),
            Err(ReferenceError::Tag { .. })
        ));
        assert!(matches!(
            Reference::parse("host:5000/app@sha256:abc"),
            Err(ReferenceError::Digest { .. })
        ));
        assert!(matches!(
            Reference::parse("host:99999/app"),
            Err(ReferenceError::Registry { .. })
        ));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ReferenceError::Path { .. })
        ));
        assert!(matches!(
            Reference::parse("app..x"),
            Err(ReferenceError::Path { .. })
        ));
        assert!(parse("a__b/c-d--e.f").registry.is_none());
    }
}
