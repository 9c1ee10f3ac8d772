//! Global addresses in `fd48:4d00::/32` and the names that resolve to them: pure
//! functions, so the agent, the proxy and (later) the apiserver's collision check agree.
//!
//! An address is the prefix followed by the first 96 bits of a BLAKE3 hash of the
//! thing's identity: an Instance's is owned by its node (`global_address(node_id,
//! "instance/<uid>")`, set by the agent), a Route's depends only on its namespace and
//! name ([`route_address`]), so it stays the same when the Route is recreated.

use std::net::Ipv6Addr;

/// The ULA prefix of global addresses, `fd48:4d00::/32`.
pub const GLOBAL_PREFIX: [u8; 4] = [0xfd, 0x48, 0x4d, 0x00];

/// Prefix length of [`GLOBAL_PREFIX`].
pub const GLOBAL_PREFIX_LEN: u8 = 32;

/// DNS suffix of global names (`web.default.route.hypermesh`).
pub const DNS_SUFFIX: &str = "hypermesh";

/// The global address of `name` owned by `owner`: the prefix followed by the first 96
/// bits of BLAKE3(owner ‖ 0 ‖ name). The agent derives Instance (`instance/<uid>`),
/// Asset and Node addresses this way with the node's NodeId as owner.
pub fn global_address(owner: &str, name: &str) -> Ipv6Addr {
    let mut hasher = blake3::Hasher::new();
    hasher.update(owner.as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_bytes());
    with_prefix(hasher.finalize().as_bytes())
}

/// The stable address of Route `namespace/name`: independent of its uid and of any
/// node, so clients keep it across a delete and re-create.
pub fn route_address(namespace: &str, name: &str) -> Ipv6Addr {
    global_address("route", &format!("{namespace}/{name}"))
}

fn with_prefix(hash: &[u8; 32]) -> Ipv6Addr {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&GLOBAL_PREFIX);
    bytes[4..].copy_from_slice(&hash[..12]);
    Ipv6Addr::from(bytes)
}

/// Whether `addr` lies in `fd48:4d00::/32`.
pub fn is_global(addr: &Ipv6Addr) -> bool {
    addr.octets()[..4] == GLOBAL_PREFIX
}

/// What a global name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// `NAME.NS.instance.hypermesh`.
    Instance,
    /// `NAME.NS.route.hypermesh`.
    Route,
}

/// A parsed global name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalName {
    /// Instance or Route.
    pub kind: NameKind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

/// Parses `NAME.NS.route.hypermesh` or `NAME.NS.instance.hypermesh` (case-insensitive,
/// an optional trailing dot); `None` for anything else.
pub fn parse_global_name(host: &str) -> Option<GlobalName> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let mut labels = host.rsplitn(4, '.');
    if labels.next()? != DNS_SUFFIX {
        return None;
    }
    let kind = match labels.next()? {
        "route" => NameKind::Route,
        "instance" => NameKind::Instance,
        _ => return None,
    };
    let namespace = labels.next()?.to_string();
    let name = labels.next()?.to_string();
    let ok = |s: &str| {
        !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    // Object names may hold dots; namespaces may not.
    (ok(&namespace) && name.split('.').all(ok)).then_some(GlobalName {
        kind,
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_the_prefix_and_stable() {
        let a = route_address("team-a", "web");
        assert!(is_global(&a));
        assert_eq!(a, route_address("team-a", "web"));
        assert_ne!(a, route_address("team-b", "web"));
        assert_ne!(a, route_address("team-a", "web2"));
        assert!(!is_global(&"fd00:1::1".parse().expect("addr")));
    }

    #[test]
    fn names_parse() {
        assert_eq!(
            parse_global_name("web.team-a.route.hypermesh."),
            Some(GlobalName {
                kind: NameKind::Route,
                namespace: "team-a".into(),
                name: "web".into()
            })
        );
        let i = parse_global_name("Echo-1.Default.instance.hypermesh").expect("parses");
        assert_eq!(
            (i.kind, i.namespace.as_str()),
            (NameKind::Instance, "default")
        );
        assert_eq!(parse_global_name("web.team-a.svc.hypermesh"), None);
        assert_eq!(parse_global_name("route.hypermesh"), None);
        assert_eq!(parse_global_name("a b.ns.route.hypermesh"), None);
        assert_eq!(parse_global_name("example.com"), None);
    }
}
