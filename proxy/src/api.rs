//! The one place the proxy connects to the apiserver: over TLS with the node's own
//! certificate (the agent's `<state-dir>/pki/`, the identity `node:<name>` node
//! restriction judges) for `https://` servers, plaintext for an `--insecure-dev` one.

use std::sync::Arc;

use hypermesh_api::client::Target;
use tonic::transport::Channel;

use crate::Config;

/// Why the proxy could not connect to the apiserver.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The node's credentials could not be read.
    #[error("the node's credentials in {dir}: {message}")]
    Credentials {
        /// The pki directory.
        dir: std::path::PathBuf,
        /// What failed.
        message: String,
    },
    /// The connection failed.
    #[error(transparent)]
    Connect(#[from] hypermesh_api::client::ConnectError),
}

/// The apiserver target: TLS with the node's certificate for `https://` servers.
pub fn target(config: &Config) -> Result<Target, ApiError> {
    if !config.server.starts_with("https://") {
        return Ok(Target::insecure(config.server.clone()));
    }
    let dir = config.state_dir.join("pki");
    let fail = |message: String| ApiError::Credentials {
        dir: dir.clone(),
        message,
    };
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| fail(format!("{name}: {e}")))
    };
    let identity = hypermesh_trust::tls::ClientIdentity {
        cert_pem: read("node.crt")?,
        key_pem: read("node.key")?,
    };
    let tls = hypermesh_trust::tls::client_config(
        &read("ca.crt")?,
        Some(&identity),
        hypermesh_trust::tls::provider(),
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(Target::tls(config.server.clone(), Arc::new(tls)))
}

/// Connects to `config.server`.
pub async fn connect(config: &Config) -> Result<Channel, ApiError> {
    Ok(hypermesh_api::client::connect_to(&target(config)?).await?)
}
