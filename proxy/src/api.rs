//! The one place the proxy connects to the apiserver, so switching it to mTLS with the
//! node's certificate is one change.

use tonic::transport::Channel;

use crate::Config;

/// Connects to `config.server` (plaintext today: the apiserver's mTLS lands with the
/// cluster CA and join).
pub async fn connect(config: &Config) -> Result<Channel, hypermesh_api::client::ConnectError> {
    hypermesh_api::client::connect(&config.server).await
}
