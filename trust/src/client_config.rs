//! The client configuration file every HyperMesh client reads — `hmctl`,
//! `hm-scheduler --config`, `hm-bench` — and the apiserver writes for its own
//! identities (`admin.config`, `scheduler.config`):
//!
//! ```yaml
//! server: https://127.0.0.1:7443
//! certificateAuthority: /path/ca.crt        # or the PEM inline
//! clientCertificate: /path/me.crt           # or inline
//! clientKey: /path/me.key                   # or inline
//! ```
//!
//! Relative paths are relative to the file's directory. A config without the three
//! TLS entries is for a plaintext `--insecure-dev` server (`http://` URL).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hypermesh_api::client::Target;
use serde::{Deserialize, Serialize};

use crate::tls::{ClientIdentity, TlsError, client_config, provider};

/// Largest config file or referenced PEM file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why a client configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a PEM file it names) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The TLS material does not make a usable configuration.
    #[error("{path}: {source}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TlsError,
    },
}

/// The contents of a client config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfigFile {
    /// Apiserver URL: `https://HOST:PORT` (or `http://` for `--insecure-dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// More apiservers of the same cluster, tried in turn when one does not answer
    /// (`servers: [https://a:7443, https://b:7443]`; with or without `server`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// The cluster CA certificate: a path or the PEM itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// This client's certificate: a path or the PEM itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// This client's private key: a path or the PEM itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            message: format!("{len} bytes; at most {MAX_FILE_BYTES} are read"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

impl ClientConfigFile {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.exists() {
            return Ok(ClientConfigFile::default());
        }
        let text = read_bounded(path)?;
        Self::parse(&text, path)
    }

    /// Parses the text of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ClientConfigFile::default());
        }
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Writes the config to `path`, readable by the owner only (it may hold a key).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let io = |source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_saphyr::to_string(self).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::at_rest::write_private(path, text.as_bytes()).map_err(io)
    }

    /// True when the config carries TLS material.
    pub fn has_tls(&self) -> bool {
        self.certificate_authority.is_some()
    }

    /// The PEM an entry holds or names (relative to `base`).
    fn pem(value: &str, base: &Path) -> Result<String, ConfigError> {
        if value.contains("-----BEGIN") {
            return Ok(value.to_string());
        }
        let path = base.join(value);
        read_bounded(&path)
    }

    /// The CA certificate PEM the file holds or names, if any.
    pub fn ca_pem(&self, path: &Path) -> Result<Option<String>, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        self.certificate_authority
            .as_deref()
            .map(|ca| Self::pem(ca, base))
            .transpose()
    }

    /// The rustls client configuration the entries describe (`None` without TLS).
    /// `path` is the config file's path (for relative paths and messages).
    pub fn tls_config(
        &self,
        path: &Path,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        let Some(ca) = &self.certificate_authority else {
            if self.client_certificate.is_some() || self.client_key.is_some() {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: "clientCertificate/clientKey need certificateAuthority too".into(),
                });
            }
            return Ok(None);
        };
        let ca_pem = Self::pem(ca, base)?;
        let identity = match (&self.client_certificate, &self.client_key) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_pem: Self::pem(cert, base)?,
                key_pem: Self::pem(key, base)?,
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: "clientCertificate and clientKey go together".into(),
                });
            }
        };
        client_config(&ca_pem, identity.as_ref(), provider())
            .map(|c| Some(Arc::new(c)))
            .map_err(|source| ConfigError::Tls {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The apiserver to talk to: `server` (or `server_override`) with the TLS
    /// configuration the file describes.
    pub fn target(
        &self,
        path: &Path,
        server_override: Option<&str>,
    ) -> Result<Target, ConfigError> {
        let listed: Vec<&String> = self.server.iter().chain(&self.servers).collect();
        let url = server_override
            .map(str::to_string)
            .or_else(|| (!listed.is_empty()).then(|| hypermesh_api::client::join_urls(&listed)))
            .ok_or_else(|| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "no server: add `server: https://HOST:PORT`".into(),
            })?;
        Ok(Target {
            url,
            tls: self
                .tls_config(path)?
                .map(hypermesh_api::client::ClientTls::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.config");
        let config = ClientConfigFile {
            server: Some("https://127.0.0.1:7443".into()),
            certificate_authority: Some("ca.crt".into()),
            client_certificate: None,
            client_key: None,
            servers: Vec::new(),
        };
        config.save(&path).unwrap();
        assert_eq!(ClientConfigFile::load(&path).unwrap(), config);
        std::fs::write(&path, "sever: x\n").unwrap();
        assert!(ClientConfigFile::load(&path).is_err());
        assert_eq!(
            ClientConfigFile::load(&dir.path().join("missing")).unwrap(),
            ClientConfigFile::default()
        );
    }
}
