//! The node's TLS identity. On first start the agent joins: it pins the cluster CA by
//! the hash it was given (`--ca-cert-hash sha256:…`), sends a certificate signing
//! request with its FALCON-1024 public key and a FALCON signature over the request
//! (`--join-token`), and keeps what it gets in `<state-dir>/pki/`:
//!
//! - `ca.crt`: the cluster CA;
//! - `node.crt`: its certificate (`node:<name>`, group `system:nodes`, DNS
//!   `<name>.node.hypermesh`, its NodeId bound in);
//! - `node.key`: the certificate's ECDSA P-256 key (0600).
//!
//! A restarted agent uses those files and needs no token. A background task renews
//! the certificate at two thirds of its lifetime (`JoinService.Renew`, authenticated by
//! the current one); new connections use the new certificate. hm-proxy reads the same
//! files. A plaintext `http://` server (`--insecure-dev`) needs none of this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hypermesh_api::client::{ClientTls, Target};
use hypermesh_api::v1::{JoinRequest, RenewRequest, join_service_client::JoinServiceClient};
use hypermesh_trust::NodeIdentity;
use hypermesh_trust::at_rest::write_private;
use hypermesh_trust::pki::{self, make_csr, new_key};
use hypermesh_trust::tls::{ClientIdentity, client_config, pinned_client_config, provider};
use tokio_util::sync::CancellationToken;

/// Directory of the node's credentials under the state dir.
pub const PKI_DIR: &str = "pki";
/// The cluster CA certificate.
pub const CA_FILE: &str = "ca.crt";
/// The node's certificate.
pub const CERT_FILE: &str = "node.crt";
/// The node's private key.
pub const KEY_FILE: &str = "node.key";

/// Why the node has no usable credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// No certificate yet and no way to get one.
    #[error(
        "{server} needs TLS credentials and {dir} has none: start the agent once with \
         --join-token TOKEN --ca-cert-hash sha256:HEX (an admin prints both with `hmctl token create`)"
    )]
    NotJoined {
        /// The server URL.
        server: String,
        /// Where credentials would be.
        dir: PathBuf,
    },
    /// The server refused the join (bad, expired or used-up token; key mismatch).
    #[error("joining {server} was refused: {message}")]
    Refused {
        /// The server URL.
        server: String,
        /// The server's reason.
        message: String,
    },
    /// The server's CA does not match `--ca-cert-hash`.
    #[error(
        "the server at {server} does not present the CA pinned by --ca-cert-hash {pin}: refusing to talk to it ({detail})"
    )]
    PinMismatch {
        /// The server URL.
        server: String,
        /// The pin.
        pin: String,
        /// What TLS said.
        detail: String,
    },
    /// Local files or keys could not be read, written or made.
    #[error("credentials in {dir}: {message}")]
    Local {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        message: String,
    },
}

fn local(dir: &Path) -> impl Fn(String) -> CredentialsError + '_ {
    move |message| CredentialsError::Local {
        dir: dir.to_path_buf(),
        message,
    }
}

/// The node's credential files.
#[derive(Debug, Clone)]
struct Files {
    dir: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn exist(&self) -> bool {
        [CA_FILE, CERT_FILE, KEY_FILE]
            .iter()
            .all(|f| self.path(f).exists())
    }

    fn read(&self, name: &str) -> Result<String, CredentialsError> {
        std::fs::read_to_string(self.path(name))
            .map_err(|e| local(&self.dir)(format!("{name}: {e}")))
    }

    fn write(&self, ca: &str, cert: &str, key: &str) -> Result<(), CredentialsError> {
        let fail = local(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(e.to_string()))?;
        write_private(&self.path(KEY_FILE), key.as_bytes()).map_err(|e| fail(e.to_string()))?;
        write_private(&self.path(CERT_FILE), cert.as_bytes()).map_err(|e| fail(e.to_string()))?;
        write_private(&self.path(CA_FILE), ca.as_bytes()).map_err(|e| fail(e.to_string()))
    }

    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, CredentialsError> {
        let identity = ClientIdentity {
            cert_pem: self.read(CERT_FILE)?,
            key_pem: self.read(KEY_FILE)?,
        };
        client_config(&self.read(CA_FILE)?, Some(&identity), provider())
            .map(Arc::new)
            .map_err(|e| local(&self.dir)(e.to_string()))
    }

    /// When the current certificate expires (and when it started being valid).
    fn validity(&self) -> Result<(SystemTime, SystemTime), CredentialsError> {
        let der = pki::first_certificate(&self.read(CERT_FILE)?)
            .map_err(|e| local(&self.dir)(e.to_string()))?;
        let id = pki::read_identity(&der).map_err(|e| local(&self.dir)(e.to_string()))?;
        let modified = std::fs::metadata(self.path(CERT_FILE))
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Ok((modified, id.not_after))
    }
}

/// The apiserver target for this node: plaintext for `http://`, else TLS with the
/// node's certificate, joining first when there is none.
pub async fn establish(
    config: &crate::Config,
    identity: &NodeIdentity,
    shutdown: &CancellationToken,
) -> Result<Option<Target>, CredentialsError> {
    if config.server.starts_with("http://") {
        return Ok(Some(Target::insecure(config.server.clone())));
    }
    let files = Files {
        dir: config.state_dir.join(PKI_DIR),
    };
    if !files.exist() {
        let (Some(token), Some(pin)) = (&config.join_token, &config.ca_cert_hash) else {
            return Err(CredentialsError::NotJoined {
                server: config.server.clone(),
                dir: files.dir.clone(),
            });
        };
        if !join(config, identity, &files, token, pin, shutdown).await? {
            return Ok(None);
        }
    }
    Ok(Some(Target {
        url: config.server.clone(),
        tls: Some(ClientTls::new(files.client_config()?)),
    }))
}

/// Joins with the token; false when shut down first. Unreachable servers are retried
/// with back-off; refusals and a CA that does not match the pin are final.
async fn join(
    config: &crate::Config,
    identity: &NodeIdentity,
    files: &Files,
    token: &str,
    pin: &str,
    shutdown: &CancellationToken,
) -> Result<bool, CredentialsError> {
    let fail = local(&files.dir);
    let pinned = pinned_client_config(pin).map_err(|e| CredentialsError::PinMismatch {
        server: config.server.clone(),
        pin: pin.to_string(),
        detail: e.to_string(),
    })?;
    let key = new_key().map_err(|e| fail(e.to_string()))?;
    let csr =
        make_csr(&key, &format!("node:{}", config.node_name)).map_err(|e| fail(e.to_string()))?;
    let token_name = token.split('.').next().unwrap_or_default();
    let kem_public_key = identity.kem().public_key().to_vec();
    let signature = identity.sign(&pki::join_message(
        token_name,
        &config.node_name,
        &csr,
        &kem_public_key,
    ));
    let request = JoinRequest {
        token: token.to_string(),
        node_name: config.node_name.clone(),
        csr_pem: csr,
        falcon_public_key: identity.public_key().to_vec(),
        falcon_signature: signature,
        kem_public_key,
    };
    let target = Target::tls(config.server.clone(), Arc::new(pinned));
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            let channel = hypermesh_api::client::connect_to(&target).await?;
            let mut client = JoinServiceClient::new(channel);
            Ok::<_, AttemptError>(client.join(request.clone()).await?.into_inner())
        };
        match attempt.await {
            Ok(response) => {
                files.write(
                    &response.ca_pem,
                    &response.certificate_pem,
                    &key.serialize_pem(),
                )?;
                tracing::info!(serial = %response.serial, dir = %files.dir.display(), "joined the cluster");
                return Ok(true);
            }
            Err(AttemptError::Status(status)) => {
                return Err(CredentialsError::Refused {
                    server: config.server.clone(),
                    message: status.message().to_string(),
                });
            }
            Err(AttemptError::Connect(e)) => {
                let detail = error_chain(&e);
                if detail.contains("pinned") || detail.contains("UnknownIssuer") {
                    return Err(CredentialsError::PinMismatch {
                        server: config.server.clone(),
                        pin: pin.to_string(),
                        detail,
                    });
                }
                tracing::warn!(server = %config.server, error = %detail, "cannot reach the apiserver to join; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why one join attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// The connection failed.
    Connect(hypermesh_api::client::ConnectError),
    /// The server answered with an error.
    Status(tonic::Status),
}

impl From<hypermesh_api::client::ConnectError> for AttemptError {
    fn from(e: hypermesh_api::client::ConnectError) -> Self {
        AttemptError::Connect(e)
    }
}

impl From<tonic::Status> for AttemptError {
    fn from(s: tonic::Status) -> Self {
        AttemptError::Status(s)
    }
}

/// Renews the certificate at two thirds of its lifetime until `shutdown`; new
/// connections on `tls` use the new one.
pub async fn renew_loop(config: crate::Config, target: Target, shutdown: CancellationToken) {
    let Some(tls) = target.tls.clone() else {
        return;
    };
    let files = Files {
        dir: config.state_dir.join(PKI_DIR),
    };
    loop {
        let wait = match files.validity() {
            Ok((start, end)) => {
                let life = end.duration_since(start).unwrap_or_default();
                let renew_at = start + life * 2 / 3;
                renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node certificate's validity");
                Duration::from_secs(3600)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait.max(Duration::from_secs(1))) => {}
        }
        match renew(&files, &target).await {
            Ok(new_config) => {
                tls.replace(new_config);
                tracing::info!("node certificate renewed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in a minute");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        }
    }
}

async fn renew(
    files: &Files,
    target: &Target,
) -> Result<Arc<rustls::ClientConfig>, CredentialsError> {
    let fail = local(&files.dir);
    let key = new_key().map_err(|e| fail(e.to_string()))?;
    let csr = make_csr(&key, "renewal").map_err(|e| fail(e.to_string()))?;
    let channel = hypermesh_api::client::connect_to(target)
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    let response = JoinServiceClient::new(channel)
        .renew(RenewRequest { csr_pem: csr })
        .await
        .map_err(|s| fail(format!("renewal refused: {}", s.message())))?
        .into_inner();
    files.write(
        &response.ca_pem,
        &response.certificate_pem,
        &key.serialize_pem(),
    )?;
    files.client_config()
}
