//! Story: two proxies' TLS configurations agree on TLS 1.3 with the hybrid
//! post-quantum key exchange X25519MLKEM768, read the peer's node name from its
//! certificate, and refuse a peer whose certificate another CA issued.

use std::sync::Arc;

use hypermesh_proxy::tls::{self, NodeCredentials};
use hypermesh_tests::pki::TestCa;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, NamedGroup, ServerConnection};

fn credentials(ca: &TestCa, node: &str) -> (NodeCredentials, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    ca.write_node(dir.path(), node).expect("write");
    (NodeCredentials::load(dir.path()).expect("load"), dir)
}

/// Runs a handshake in memory; the two connections, or the first error.
fn handshake(
    client: &NodeCredentials,
    server: &NodeCredentials,
    name: &str,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let mut c = ClientConnection::new(
        Arc::new(client.client_config().expect("client config")),
        ServerName::try_from(name.to_string()).expect("name"),
    )?;
    let mut s = ServerConnection::new(Arc::new(server.server_config().expect("server config")))?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("read");
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("write");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("read");
        }
        c.process_new_packets()?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn hybrid_post_quantum_key_exchange_and_node_names() {
    tls::install_default_provider();
    let ca = TestCa::new().expect("ca");
    let (a, _da) = credentials(&ca, "alpha");
    let (b, _db) = credentials(&ca, "beta");
    assert_eq!(a.node_name, "alpha");
    let (c, s) = handshake(&a, &b, &tls::server_name_for("beta")).expect("handshake");
    for group in [
        c.negotiated_key_exchange_group().expect("client group"),
        s.negotiated_key_exchange_group().expect("server group"),
    ] {
        assert_eq!(group.name(), NamedGroup::X25519MLKEM768);
    }
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let peer = s.peer_certificates().expect("client certificate")[0].clone();
    assert_eq!(tls::node_name_of(&peer).as_deref(), Some("alpha"));
    // Dialing by address only: any node of the cluster is accepted, by its certificate.
    handshake(&a, &b, tls::ANY_NODE).expect("any-node handshake");
    // The wrong node name is refused.
    assert!(handshake(&a, &b, &tls::server_name_for("gamma")).is_err());
}

#[test]
fn certificates_of_another_ca_are_refused_both_ways() {
    tls::install_default_provider();
    let ca = TestCa::new().expect("ca");
    let rogue_ca = TestCa::new().expect("rogue ca");
    let (good, _d1) = credentials(&ca, "alpha");
    let (rogue, _d2) = credentials(&rogue_ca, "beta");
    // A rogue server.
    assert!(handshake(&good, &rogue, &tls::server_name_for("beta")).is_err());
    // A rogue client.
    assert!(handshake(&rogue, &good, &tls::server_name_for("alpha")).is_err());
}
