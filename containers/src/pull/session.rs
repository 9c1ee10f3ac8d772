//! One pull's requests to one repository: GETs with the authorization won so far
//! (answering a `WWW-Authenticate` challenge once), the manifest resolved for this
//! host's platform, small documents and streamed layers, every one digest-checked.

use std::collections::HashMap;

use ::http::StatusCode;
use ::http::header::CONTENT_TYPE;
use containerd_client::types::Descriptor;
use hyper::body::Incoming;

use super::auth::{self, AuthError, Challenge, Credentials};
use super::http::{self, HttpError, Transport};
use super::{DOCUMENT_LIMIT, ERROR_LIMIT, PullConfig, PullError};
use crate::ContainerdClient;
use crate::content::{BlobWriter, sha256_digest};
use crate::image::{self, DescriptorJson, INDEX_DOCKER, INDEX_OCI, MANIFEST_DOCKER, MANIFEST_OCI};
use crate::reference::Reference;

/// The requests of one pull from one repository, with the authorization won so far.
pub(super) struct Session {
    transport: Transport,
    /// The registry as the reference names it (for messages and credentials).
    registry: String,
    /// The host requests go to.
    host: String,
    /// `scheme://host/v2/<repository>`.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    /// `--registry-auth`, for credentials configured for a token service's own host.
    auth_file: Option<std::path::PathBuf>,
    authorization: Option<String>,
    /// Set when the registry's credentials were withheld from a token service on another
    /// host (its host), for the message if that service then refuses.
    withheld_from: Option<String>,
}

impl Session {
    /// A session with `registry` (as the reference names it), reached at `host`, for
    /// `repository`; reads the credentials configured for the registry.
    pub(super) async fn open(
        config: &PullConfig,
        registry: String,
        host: String,
        repository: String,
    ) -> Result<Session, PullError> {
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
        Ok(Session {
            transport,
            registry,
            host,
            base,
            repository,
            credentials,
            auth_file: config.auth_file.clone(),
            authorization: None,
            withheld_from: None,
        })
    }

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
                // Credentials go only to the host they were configured for.
                let credentials = match &challenge {
                    Challenge::Basic => self.credentials.clone(),
                    Challenge::Bearer { realm, .. } => self.credentials_for_realm(realm).await?,
                };
                let authorization = auth::authorize(
                    &self.transport,
                    &challenge,
                    credentials.as_ref(),
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
    pub(super) async fn manifest(
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
    pub(super) async fn document(
        &mut self,
        desc: &DescriptorJson,
        what: &str,
    ) -> Result<Vec<u8>, PullError> {
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
    pub(super) async fn layer(
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

    /// The credentials that may be sent to the token service at `realm`: only those
    /// configured for the realm's own host (the registry's own credentials when it is
    /// the registry host), and none in plain text to a host not listed with
    /// `--insecure-registry`. A registry cannot make us hand its credentials to a host of
    /// its choosing.
    async fn credentials_for_realm(
        &mut self,
        realm: &str,
    ) -> Result<Option<Credentials>, PullError> {
        let Ok(uri) = realm.parse::<::http::Uri>() else {
            return Ok(None);
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Ok(None);
        };
        let host = origin_host(scheme, authority.as_str());
        if scheme != "https" && self.transport.scheme_for(&host) != "http" {
            tracing::debug!(realm, "token service over plain http: no credentials sent");
            return Ok(None);
        }
        let registry_scheme = if self.base.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        if host == origin_host(registry_scheme, &self.host) {
            return Ok(self.credentials.clone());
        }
        let own = match &self.auth_file {
            Some(path) => {
                auth::credentials_for(path, &host)
                    .await
                    .map_err(|source| PullError::Auth {
                        registry: self.registry.clone(),
                        source,
                    })?
            }
            None => None,
        };
        if own.is_none() && self.credentials.is_some() {
            tracing::debug!(realm, registry = %self.registry, "token service on another host: registry credentials withheld");
            self.withheld_from = Some(host);
        }
        Ok(own)
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
                detail: match &self.withheld_from {
                    Some(host) => format!(
                        "{source} (the credentials for {} are not sent to the token service on \
                         another host {host}: add credentials for {host} to --registry-auth \
                         to authenticate there)",
                        self.registry
                    ),
                    None => source.to_string(),
                },
            },
            source => PullError::Auth {
                registry: self.registry.clone(),
                source,
            },
        }
    }
}

/// `host[:port]` of a URL's authority, without the scheme's default port.
fn origin_host(scheme: &str, authority: &str) -> String {
    let default = if scheme == "https" { ":443" } else { ":80" };
    authority
        .strip_suffix(default)
        .unwrap_or(authority)
        .to_ascii_lowercase()
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
#[path = "session_tests.rs"]
mod tests;
