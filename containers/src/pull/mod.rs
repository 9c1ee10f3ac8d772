//! Pulling images from OCI/Docker registries (distribution API v2), client-side as
//! `ctr images pull` does, since containerd 1.6 has no Transfer service.
//!
//! A pull fetches the manifest (an index picks `linux/<host arch>`), the config and the
//! layers, and checks every digest: the manifest against the digest in the reference (or
//! the registry's `Docker-Content-Digest`), the platform manifest against its index entry,
//! and every blob against its descriptor's digest and size. Layers stream into the
//! content store chunk by chunk and are committed only once verified; the image is then
//! recorded with the same code as archive imports ([`crate::image::record`]), all under
//! one lease, so a failed pull leaves no image record and nothing that could be used.
//!
//! # Layout
//! - [`http`]: the HTTP/1.1 transport (plain for `--insecure-registry`, else TLS).
//! - [`auth`]: `--registry-auth` credentials, `WWW-Authenticate` challenges, tokens.

pub mod auth;
pub mod http;

use std::collections::HashMap;
use std::path::PathBuf;

use ::http::StatusCode;
use ::http::header::CONTENT_TYPE;
use containerd_client::types::Descriptor;
use hyper::body::Incoming;

use self::auth::{AuthError, Challenge, Credentials};
use self::http::{HttpError, Transport};
use crate::content::{BlobWriter, sha256_digest, with_lease};
use crate::image::{
    self, DescriptorJson, INDEX_DOCKER, INDEX_OCI, ImageParts, ImportedImage, MANIFEST_DOCKER,
    MANIFEST_OCI,
};
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
    let credentials = match &config.auth_file {
        Some(path) => auth::credentials_for(path, &registry)
            .await
            .map_err(|source| PullError::Auth {
                registry: registry.clone(),
                source,
            })?,
        None => None,
    };
    let transport = Transport::new(config.insecure.clone(), config.ca_file.clone());
    let base = format!(
        "{}://{host}/v2/{repository}",
        transport.scheme_for(&registry)
    );
    let mut session = Session {
        transport,
        registry,
        host,
        base,
        repository,
        credentials,
        authorization: None,
    };
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
        Ok(image::record(client, lease, name, parts).await?)
    })
    .await
}

/// The requests of one pull from one repository, with the authorization won so far.
struct Session {
    transport: Transport,
    /// The registry as the reference names it (for messages and credentials).
    registry: String,
    /// The host requests go to.
    host: String,
    /// `scheme://host/v2/<repository>`.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Option<String>,
}

impl Session {
    /// GETs `<base>/<path>`, answering one authentication challenge; a non-2xx status
    /// becomes [`PullError::Status`] (401/403 [`PullError::Unauthorized`]).
    async fn get(
        &mut self,
        path: &str,
        accept: &str,
    ) -> Result<hyper::Response<Incoming>, PullError> {
        let url = format!("{}/{path}", self.base);
        let mut challenged = false;
        loop {
            let mut response = self
                .transport
                .get(&url, accept, self.authorization.as_deref())
                .await
                .map_err(|source| self.unreachable(source))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let header = response
                    .headers()
                    .get(::http::header::WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let challenge = Challenge::parse(&header).ok_or_else(|| PullError::Auth {
                    registry: self.registry.clone(),
                    source: AuthError::Challenge(header.clone()),
                })?;
                let authorization = auth::authorize(
                    &self.transport,
                    &challenge,
                    self.credentials.as_ref(),
                    &self.repository,
                )
                .await
                .map_err(|source| self.auth_error(source))?;
                self.authorization = Some(authorization);
                continue;
            }
            let detail = error_detail(&mut response, &self.host).await;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let who = if self.credentials.is_some() {
                    "credentials refused"
                } else {
                    "no credentials sent"
                };
                return Err(PullError::Unauthorized {
                    registry: self.registry.clone(),
                    detail: format!("HTTP {}, {who}: {detail}", status.as_u16()),
                });
            }
            return Err(PullError::Status {
                registry: self.registry.clone(),
                path: format!("/v2/{}/{path}", self.repository),
                status: status.as_u16(),
                detail,
            });
        }
    }

    /// The image manifest for this host, with its descriptor; resolves an index to
    /// the `linux/<arch>` entry. Every document is checked against its digest.
    async fn manifest(
        &mut self,
        reference: &Reference,
        name: &str,
    ) -> Result<(Descriptor, Vec<u8>), PullError> {
        let accept = [MANIFEST_OCI, MANIFEST_DOCKER, INDEX_OCI, INDEX_DOCKER].join(", ");
        let tag_or_digest = reference.manifest_reference();
        let response = match self
            .get(&format!("manifests/{tag_or_digest}"), &accept)
            .await
        {
            Err(PullError::Status {
                status: 404,
                detail,
                ..
            }) => {
                return Err(PullError::ManifestUnknown {
                    registry: self.registry.clone(),
                    repository: reference.repository.clone(),
                    tag_or_digest: match &reference.digest {
                        Some(digest) => format!("@{digest}"),
                        None => format!(":{tag_or_digest}"),
                    },
                    detail,
                });
            }
            other => other?,
        };
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let content_type = media_type_of(&response);
        let mut body = response.into_body();
        let bytes = http::read_body(&mut body, &self.host, "manifest", DOCUMENT_LIMIT)
            .await
            .map_err(|source| self.unreachable(source))?;
        let actual = sha256_digest(&bytes);
        // The digest we asked for, else the one the registry vouches for.
        let (expected, source) = match (&reference.digest, &header_digest) {
            (Some(d), _) => (Some(d.clone()), "reference"),
            (None, Some(d)) => (Some(d.clone()), "Docker-Content-Digest"),
            (None, None) => (None, ""),
        };
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(PullError::DigestMismatch {
                what: format!("manifest {name} (digest from the {source})"),
                expected,
                actual,
            });
        }
        let media_type = document_media_type(content_type, &bytes);
        if image::is_manifest(&media_type) {
            let desc = Descriptor {
                media_type,
                digest: actual,
                size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                annotations: HashMap::new(),
            };
            return Ok((desc, bytes));
        }
        if !image::is_index(&media_type) {
            return Err(PullError::Invalid {
                detail: format!("unsupported manifest media type {media_type:?}"),
            });
        }
        let mut entry =
            image::pick_platform(&bytes).map_err(|detail| PullError::Invalid { detail })?;
        if entry.media_type.is_empty() {
            entry.media_type = MANIFEST_OCI.to_string();
        }
        let manifest = self.document(&entry, "platform manifest").await?;
        Ok((Descriptor::from(&entry), manifest))
    }

    /// A small document (platform manifest, config) by its descriptor, checked.
    async fn document(&mut self, desc: &DescriptorJson, what: &str) -> Result<Vec<u8>, PullError> {
        let kind = if what == "config" {
            "blobs"
        } else {
            "manifests"
        };
        let accept = if kind == "manifests" {
            desc.media_type.as_str()
        } else {
            "*/*"
        };
        let response = self.get(&format!("{kind}/{}", desc.digest), accept).await?;
        let mut body = response.into_body();
        let bytes = http::read_body(&mut body, &self.host, what, DOCUMENT_LIMIT)
            .await
            .map_err(|source| self.unreachable(source))?;
        let actual = sha256_digest(&bytes);
        if actual != desc.digest {
            return Err(PullError::DigestMismatch {
                what: format!("{what} {}", desc.digest),
                expected: desc.digest.clone(),
                actual,
            });
        }
        if i64::try_from(bytes.len()).ok() != Some(desc.size) {
            return Err(PullError::SizeMismatch {
                what: format!("{what} {}", desc.digest),
                expected: desc.size,
                actual: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            });
        }
        Ok(bytes)
    }

    /// Streams layer `desc` into the content store unless it is there already; the
    /// writer commits it only if size and digest match.
    async fn layer(
        &mut self,
        client: &ContainerdClient,
        lease: &str,
        desc: &DescriptorJson,
    ) -> Result<(), PullError> {
        let Some(mut writer) = BlobWriter::open(client, lease, &desc.digest, desc.size).await?
        else {
            return Ok(());
        };
        let streamed = async {
            let response = self.get(&format!("blobs/{}", desc.digest), "*/*").await?;
            let mut body = response.into_body();
            while let Some(chunk) = http::next_chunk(&mut body, &self.host)
                .await
                .map_err(|source| self.unreachable(source))?
            {
                writer.write(&chunk).await?;
            }
            Ok::<(), PullError>(())
        }
        .await;
        match streamed {
            Ok(()) => {
                Ok(writer
                    .commit(HashMap::new())
                    .await
                    .map_err(|e| match PullError::from(e) {
                        PullError::DigestMismatch {
                            expected, actual, ..
                        } => PullError::DigestMismatch {
                            what: format!("layer {}", desc.digest),
                            expected,
                            actual,
                        },
                        other => other,
                    })?)
            }
            Err(e) => {
                writer.abort().await;
                Err(e)
            }
        }
    }

    /// An HTTP failure: the registry unreachable, or a document too large to accept.
    fn unreachable(&self, source: HttpError) -> PullError {
        match source {
            HttpError::TooLarge { .. } => PullError::Invalid {
                detail: format!("registry {}: {source}", self.registry),
            },
            source => PullError::Unreachable {
                registry: self.registry.clone(),
                source,
            },
        }
    }

    fn auth_error(&self, source: AuthError) -> PullError {
        match source {
            AuthError::Http(source) => self.unreachable(source),
            source if source.is_unauthorized() => PullError::Unauthorized {
                registry: self.registry.clone(),
                detail: source.to_string(),
            },
            source => PullError::Auth {
                registry: self.registry.clone(),
                source,
            },
        }
    }
}

/// The response's `Content-Type` without parameters.
fn media_type_of(response: &hyper::Response<Incoming>) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
}

/// A manifest document's media type: its `Content-Type` when specific, else its own
/// `mediaType` field, else what its shape says (`manifests` → index).
fn document_media_type(content_type: Option<String>, bytes: &[u8]) -> String {
    if let Some(t) = content_type.filter(|t| image::is_manifest(t) || image::is_index(t)) {
        return t;
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(t),
            ..
        }) => t,
        Ok(Shape {
            manifests: Some(_), ..
        }) => INDEX_OCI.to_string(),
        Ok(_) => MANIFEST_OCI.to_string(),
        Err(_) => "(not JSON)".to_string(),
    }
}

/// The registry's error messages (`{"errors":[{"code","message"}]}`) or the start of
/// the body.
async fn error_detail(response: &mut hyper::Response<Incoming>, host: &str) -> String {
    let body = http::read_body(response.body_mut(), host, "error body", ERROR_LIMIT)
        .await
        .unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorJson>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorJson {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(parsed) = serde_json::from_slice::<Errors>(&body)
        && !parsed.errors.is_empty()
    {
        return parsed
            .errors
            .iter()
            .map(|e| match (e.message.is_empty(), e.code.is_empty()) {
                (false, _) => e.message.clone(),
                (true, false) => e.code.to_lowercase().replace('_', " "),
                (true, true) => "error".to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        "no details".to_string()
    } else {
        text.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_header_or_the_document() {
        assert_eq!(
            document_media_type(Some(MANIFEST_DOCKER.into()), b"{}"),
            MANIFEST_DOCKER
        );
        let index = format!(r#"{{"mediaType":"{INDEX_DOCKER}","manifests":[]}}"#);
        assert_eq!(
            document_media_type(Some("application/json".into()), index.as_bytes()),
            INDEX_DOCKER
        );
        assert_eq!(
            document_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            INDEX_OCI
        );
        assert_eq!(
            document_media_type(None, br#"{"schemaVersion":2,"layers":[]}"#),
            MANIFEST_OCI
        );
    }

    #[test]
    fn only_references_with_a_registry_are_pullable() {
        assert!(is_pullable("127.0.0.1:5000/busybox:v1"));
        assert!(is_pullable("registry.example.com/app"));
        assert!(!is_pullable("busybox"));
        assert!(!is_pullable("hypermesh/busybox:latest"));
        assert!(!is_pullable("Bad Name"));
    }
}
