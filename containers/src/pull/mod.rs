//! Pulling images from OCI/Docker registries (distribution API v2), client-side as
//! `ctr images pull` does, since containerd 1.6 has no Transfer service.
//!
//! A pull fetches the manifest (an index picks `linux/<host arch>`), the config and the
//! layers, and checks every digest: the manifest against the digest in the reference (or
//! the registry's `Docker-Content-Digest`), the platform manifest against its index entry,
//! and every blob against its descriptor's digest and size. Layers stream into the
//! content store chunk by chunk and are committed only once verified; the image is then
//! recorded with the same code as archive imports (`image::record`), all under
//! one lease, so a failed pull leaves no image record and nothing that could be used.
//!
//! # Layout
//! - [`http`]: the HTTP/1.1 transport (plain for `--insecure-registry`, else TLS).
//! - [`auth`]: `--registry-auth` credentials, `WWW-Authenticate` challenges, tokens.
//! - `session`: one pull's requests: challenges answered, documents and layers checked.

pub mod auth;
pub mod http;
mod session;

use std::path::PathBuf;

use self::auth::AuthError;
use self::http::HttpError;
use self::session::Session;
use crate::content::with_lease;
use crate::image::{self, ImageParts, ImportedImage};
use crate::reference::{Reference, ReferenceError};
use crate::{ContainerdClient, Error};

/// Manifests, indexes and configs are read into memory up to this size.
const DOCUMENT_LIMIT: usize = 8 << 20;
/// Registry error bodies are read up to this size for their message.
const ERROR_LIMIT: usize = 64 << 10;

/// How the agent reaches registries (`--registry-auth`, `--insecure-registry`,
/// `--registry-ca`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullConfig {
    /// A docker `config.json` with credentials per registry; read at every pull.
    pub auth_file: Option<PathBuf>,
    /// `host:port`s reached over plain http; every other registry over https.
    pub insecure: Vec<String>,
    /// Extra PEM root certificates trusted for https registries.
    pub ca_file: Option<PathBuf>,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The image reference does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The reference names no registry host, so there is nowhere to pull it from.
    #[error("{0}: the reference names no registry (e.g. registry.example.com/{0})")]
    NoRegistry(String),
    /// The registry has no such repository, tag or digest.
    #[error("manifest unknown: registry {registry} has no {repository}{tag_or_digest} ({detail})")]
    ManifestUnknown {
        registry: String,
        repository: String,
        tag_or_digest: String,
        detail: String,
    },
    /// The registry refused us: credentials missing, wrong, or without access.
    #[error(
        "unauthorized by registry {registry}: {detail}; check the credentials for {registry} in --registry-auth"
    )]
    Unauthorized { registry: String, detail: String },
    /// Content did not hash to the digest it was asked for by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Content had another size than its descriptor says.
    #[error("{what}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: i64,
        actual: i64,
    },
    /// The registry (or its token service) could not be reached or broke off.
    #[error("registry {registry} unreachable: {source}")]
    Unreachable {
        registry: String,
        #[source]
        source: HttpError,
    },
    /// Authentication could not be attempted (unreadable `--registry-auth`, odd challenge,
    /// broken token service).
    #[error("registry {registry}: {source}")]
    Auth {
        registry: String,
        #[source]
        source: AuthError,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {registry}: GET {path}: HTTP {status}: {detail}")]
    Status {
        registry: String,
        path: String,
        status: u16,
        detail: String,
    },
    /// The registry sent a document we cannot use (unsupported media type, bad JSON,
    /// no manifest for this platform).
    #[error("{detail}")]
    Invalid { detail: String },
    /// containerd failed while storing or unpacking the image.
    #[error(transparent)]
    Containerd(Error),
}

impl From<Error> for PullError {
    fn from(e: Error) -> Self {
        match e {
            Error::DigestMismatch { expected, actual } => PullError::DigestMismatch {
                what: format!("blob {expected}"),
                expected,
                actual,
            },
            Error::SizeMismatch {
                digest,
                expected,
                actual,
            } => PullError::SizeMismatch {
                what: format!("blob {digest}"),
                expected,
                actual,
            },
            other => PullError::Containerd(other),
        }
    }
}

impl PullError {
    /// The containerd error, when containerd (not the registry) failed.
    pub fn containerd(&self) -> Option<&Error> {
        match self {
            PullError::Containerd(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether `name` names a registry to pull from.
pub fn is_pullable(name: &str) -> bool {
    Reference::parse(name).is_ok_and(|r| r.registry.is_some())
}

/// Pulls image `name` (a reference with a registry host) into containerd, unpacks it and
/// records it under `name`, so [`image::resolve`] finds it by the same string.
pub async fn pull(
    client: &ContainerdClient,
    config: &PullConfig,
    name: &str,
) -> Result<ImportedImage, PullError> {
    let reference = Reference::parse(name)?;
    let (Some(registry), Some((host, repository))) =
        (reference.registry.clone(), reference.endpoint())
    else {
        return Err(PullError::NoRegistry(name.to_string()));
    };
    let mut session = Session::open(config, registry, host, repository).await?;
    let invalid = |detail: String| PullError::Invalid { detail };

    let (manifest_desc, manifest_bytes) = session.manifest(&reference, name).await?;
    let manifest = image::parse_manifest(&manifest_bytes).map_err(invalid)?;
    let config_bytes = session.document(&manifest.config, "config").await?;
    let config = image::parse_config(&config_bytes, &manifest).map_err(invalid)?;
    with_lease(client, async |lease| {
        for layer in &manifest.layers {
            session.layer(client, lease, layer).await?;
        }
        let parts = ImageParts {
            manifest_desc,
            manifest_bytes,
            manifest,
            config_bytes,
            config,
        };
        Ok(image::record(client, lease, name, parts, image::FROM_REGISTRY).await?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_references_with_a_registry_are_pullable() {
        assert!(is_pullable("127.0.0.1:5000/busybox:v1"));
        assert!(is_pullable("registry.example.com/app"));
        assert!(!is_pullable("busybox"));
        assert!(!is_pullable("hypermesh/busybox:latest"));
        assert!(!is_pullable("Bad Name"));
    }
}
