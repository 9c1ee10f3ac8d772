//! Secrets sealed to nodes, with real joined nodes and their real keys: a node reading
//! a Secret its Instance uses gets no plaintext, only a copy sealed to its own
//! ML-KEM-1024 key that the agent's code opens; another node cannot open that copy
//! (not with its own key, nor by claiming to be the first node), and its own copy of
//! the same Secret is a different ciphertext; a copy does not open once it is presented
//! as another Secret or another resourceVersion.

use std::sync::Arc;

use hypermesh_agent::volumes::SealedSecrets;
use hypermesh_api::Resource;
use hypermesh_api::v1::{Instance, Secret};
use hypermesh_tests::InProcessApiServer;
use hypermesh_tests::fixtures;
use hypermesh_tests::identities::{JoinedNode, join_node};
use hypermesh_tests::secrets::{canary, contains, secret};
use hypermesh_trust::sealing::{Sealed, secret_aad};
use prost::Message;

/// What the agent of `node` uses to read Secrets: its client and its ML-KEM key.
async fn reader(node: &JoinedNode) -> SealedSecrets {
    SealedSecrets::new(
        node.api::<Secret>().await.expect("node client"),
        node.name.clone(),
        Arc::new(node.identity.kem().clone()),
    )
}

fn sealed_copy(secret: &Secret) -> Sealed {
    let spec = secret.spec.as_ref().expect("spec");
    assert_eq!(spec.sealed.len(), 1, "one copy, for the reading node");
    let copy = &spec.sealed[0];
    Sealed {
        kem_ciphertext: copy.kem_ciphertext.clone(),
        nonce: copy.nonce.clone(),
        ciphertext: copy.ciphertext.clone(),
    }
}

#[tokio::test]
async fn a_node_cannot_open_another_nodes_sealed_secret() {
    let server = InProcessApiServer::start_tls().await.expect("server");
    let alpha = join_node(&server, "alpha").await.expect("join alpha");
    let beta = join_node(&server, "beta").await.expect("join beta");
    let password = canary("sealed-password");
    server
        .api::<Secret>()
        .create(&secret("default", "db", &[("password", &password)]))
        .await
        .expect("create secret");
    for (instance, node) in [("on-alpha", "alpha"), ("on-beta", "beta")] {
        server
            .api::<Instance>()
            .create(&fixtures::instance_using_secret(instance, node, "db"))
            .await
            .expect("create instance");
    }

    // Alpha gets a copy sealed to it: no plaintext anywhere in the answer.
    let as_alpha = alpha
        .api::<Secret>()
        .await
        .expect("alpha")
        .get("default", "db")
        .await
        .expect("alpha reads the Secret its Instance uses");
    let spec = as_alpha.spec.as_ref().expect("spec");
    assert!(spec.data.is_empty(), "no plaintext values for a node");
    assert!(!contains(&as_alpha.encode_to_vec(), &password));
    assert_eq!(spec.sealed[0].node_id, alpha.identity.node_id());
    // ... which the agent's code opens with alpha's key.
    let alpha_reader = reader(&alpha).await;
    let opened = alpha_reader
        .read("default", "db")
        .await
        .expect("alpha opens");
    assert_eq!(opened["password"], password);

    // Beta cannot open alpha's copy: not as itself...
    let beta_reader = reader(&beta).await;
    let err = beta_reader
        .open(&as_alpha)
        .expect_err("beta must not open alpha's copy");
    assert!(err.to_string().contains("db"), "{err}");
    // ... nor with alpha's binding (its own key is simply the wrong one).
    let meta = as_alpha.meta();
    let alpha_aad = secret_aad("alpha", &meta.namespace, &meta.name, meta.resource_version);
    assert!(
        beta.identity
            .kem()
            .open(&alpha_aad, &sealed_copy(&as_alpha))
            .is_err()
    );
    // Alpha's own key does open it with that binding (the check above is meaningful).
    assert!(
        alpha
            .identity
            .kem()
            .open(&alpha_aad, &sealed_copy(&as_alpha))
            .is_ok()
    );

    // Beta's own copy is its own ciphertext, and it opens it.
    let as_beta = beta
        .api::<Secret>()
        .await
        .expect("beta")
        .get("default", "db")
        .await
        .expect("beta reads the Secret its Instance uses");
    assert_eq!(
        as_beta.spec.as_ref().expect("spec").sealed[0].node_id,
        beta.identity.node_id()
    );
    assert_ne!(sealed_copy(&as_beta), sealed_copy(&as_alpha));
    assert!(
        alpha_reader.open(&as_beta).is_err(),
        "alpha cannot open beta's copy"
    );
    assert_eq!(
        beta_reader.open(&as_beta).expect("beta opens")["password"],
        password
    );

    // A copy is bound to the Secret and revision it was sealed for.
    let mut renamed = as_alpha.clone();
    renamed.meta_mut().name = "other".into();
    assert!(alpha_reader.open(&renamed).is_err());
    let mut older = as_alpha.clone();
    older.meta_mut().resource_version -= 1;
    assert!(alpha_reader.open(&older).is_err());
}
