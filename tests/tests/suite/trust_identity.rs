//! A node identity kept in a state directory: key files are private (0600) and
//! loading the directory again gives the same NodeId and a key that still signs.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use hypermesh_trust::{
    NodeIdentity, PUBLIC_KEY_FILE, SECRET_KEY_FILE, node_id_of, verify_signature,
};

#[test]
fn identity_files_are_private_and_reload_to_the_same_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent-state");
    let first = NodeIdentity::load_or_create(&state).unwrap();
    assert_eq!(first.node_id(), node_id_of(first.public_key()));
    for file in [SECRET_KEY_FILE, PUBLIC_KEY_FILE] {
        let mode = std::fs::metadata(state.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} mode {mode:o}");
    }
    let again = NodeIdentity::load_or_create(&state).unwrap();
    assert_eq!(first.node_id(), again.node_id());
    assert_eq!(first.public_key(), again.public_key());
    let sig = again.sign(b"hello");
    assert!(verify_signature(first.public_key(), b"hello", &sig));
}
