//! Registry authentication: credentials from a docker `config.json` (`--registry-auth`),
//! `WWW-Authenticate` challenges, and turning a challenge into an `Authorization` header
//! — `Basic` sends the credentials, `Bearer` fetches a token from the challenge's realm
//! with the credentials the caller allows for the realm's host (see the session's
//! `credentials_for_realm`: only those configured for that host), anonymously otherwise.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::http::{self, HttpError, Transport};

/// Token responses are small; anything bigger is refused.
const TOKEN_LIMIT: usize = 1 << 20;

/// Why no `Authorization` could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `--registry-auth` could not be read or is not a docker config.json.
    #[error("--registry-auth {path}: {detail}")]
    CredentialsFile { path: PathBuf, detail: String },
    /// The registry wants credentials and `--registry-auth` has none for it.
    #[error("{scheme} authentication required and --registry-auth has no credentials for it")]
    NoCredentials { scheme: String },
    /// The registry answered 401 without a challenge we understand.
    #[error("unsupported authentication challenge {0:?}")]
    Challenge(String),
    /// The token service refused the credentials (401/403).
    #[error("token service {realm} refused: HTTP {status}")]
    TokenRefused { realm: String, status: u16 },
    /// The token service answered something else than a token.
    #[error("token service {realm}: {detail}")]
    TokenResponse { realm: String, detail: String },
    /// The token service could not be reached.
    #[error("token service: {0}")]
    Http(#[from] HttpError),
}

impl AuthError {
    /// Whether the credentials were refused or missing (as opposed to a broken setup
    /// or an unreachable token service).
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            AuthError::NoCredentials { .. } | AuthError::TokenRefused { .. }
        )
    }
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Basic` header value.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The credentials for `registry` (`host[:port]` as written in image references) in
/// the docker config.json at `path`; `None` when it has none for that registry.
pub async fn credentials_for(
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, AuthError> {
    let bad = |detail: String| AuthError::CredentialsFile {
        path: path.to_path_buf(),
        detail,
    };
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| bad(e.to_string()))?;
    parse_credentials(&text, registry).map_err(bad)
}

/// [`credentials_for`] on the file's bytes.
pub fn parse_credentials(text: &[u8], registry: &str) -> Result<Option<Credentials>, String> {
    let config: DockerConfig = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let wanted = registry_key(registry);
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(key, _)| registry_key(key) == wanted)
    else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            password: password.clone(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Err(format!(
            "auths.{key:?}: neither \"auth\" nor \"username\" and \"password\""
        ));
    };
    let decoded = BASE64
        .decode(auth.trim())
        .map_err(|e| format!("auths.{key:?}.auth: not base64: {e}"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| format!("auths.{key:?}.auth: not UTF-8 \"user:password\""))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| format!("auths.{key:?}.auth: expected base64 of \"user:password\""))?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// A config.json key or a reference's registry, reduced to `host[:port]`: keys may carry
/// a scheme and path (`https://index.docker.io/v1/`), and Docker Hub has several names.
fn registry_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="…"`: send the credentials with every request.
    Basic,
    /// `Bearer realm="…",service="…",scope="…"`: fetch a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// The challenge to answer among those in a `WWW-Authenticate` header: `Bearer` if
    /// offered (it needs no credentials for public images), else `Basic`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let challenges = parse_challenges(header);
        let bearer = challenges.iter().find_map(|(scheme, params)| {
            (scheme == "bearer").then(|| Challenge::Bearer {
                realm: params.get("realm").cloned().unwrap_or_default(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        });
        bearer.or_else(|| {
            challenges
                .iter()
                .any(|(scheme, _)| scheme == "basic")
                .then_some(Challenge::Basic)
        })
    }
}

/// `scheme param=value, param="quoted", Other …` → (lowercase scheme, params) per
/// challenge (RFC 7235 `auth-param` syntax, parameter names lowercased).
fn parse_challenges(header: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        // A token: a scheme, or a parameter name when `=` follows.
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        if token.is_empty() {
            break;
        }
        let after = rest[end..].trim_start_matches([' ', '\t']);
        if let Some(value_part) = after.strip_prefix('=')
            && let Some((_, params)) = out.last_mut()
        {
            let value_part = value_part.trim_start_matches([' ', '\t']);
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut consumed = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            consumed = i + 1;
                            break;
                        }
                        other => value.push(other),
                    }
                }
                (value, &quoted[consumed..])
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim().to_string(), &value_part[end..])
            };
            params.insert(token.to_ascii_lowercase(), value);
            rest = remaining;
        } else {
            out.push((token.to_ascii_lowercase(), BTreeMap::new()));
            rest = after;
        }
    }
    out
}

/// The `Authorization` header value answering `challenge` for pulling `repository`.
pub async fn authorize(
    transport: &Transport,
    challenge: &Challenge,
    credentials: Option<&Credentials>,
    repository: &str,
) -> Result<String, AuthError> {
    match challenge {
        Challenge::Basic => {
            credentials
                .map(Credentials::basic)
                .ok_or_else(|| AuthError::NoCredentials {
                    scheme: "Basic".into(),
                })
        }
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => {
            let scope = scope
                .clone()
                .unwrap_or_else(|| format!("repository:{repository}:pull"));
            let mut url = realm.clone();
            let mut sep = if url.contains('?') { '&' } else { '?' };
            if let Some(service) = service {
                url.push_str(&format!("{sep}service={}", encode(service)));
                sep = '&';
            }
            url.push_str(&format!("{sep}scope={}", encode(&scope)));
            let basic = credentials.map(Credentials::basic);
            let mut response = transport
                .get(&url, "application/json", basic.as_deref())
                .await?;
            let status = response.status();
            if status == ::http::StatusCode::UNAUTHORIZED || status == ::http::StatusCode::FORBIDDEN
            {
                return Err(AuthError::TokenRefused {
                    realm: realm.clone(),
                    status: status.as_u16(),
                });
            }
            let body =
                http::read_body(response.body_mut(), realm, "token response", TOKEN_LIMIT).await?;
            if !status.is_success() {
                return Err(AuthError::TokenResponse {
                    realm: realm.clone(),
                    detail: format!("HTTP {}", status.as_u16()),
                });
            }
            let token = parse_token(&body).map_err(|detail| AuthError::TokenResponse {
                realm: realm.clone(),
                detail,
            })?;
            Ok(format!("Bearer {token}"))
        }
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// `{"token": …}` or `{"access_token": …}` (the distribution token spec allows either).
fn parse_token(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct TokenJson {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let parsed: TokenJson =
        serde_json::from_slice(body).map_err(|e| format!("not a token response: {e}"))?;
    parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the response holds no token".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_quoted_params() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            Challenge::parse(header),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
    }

    #[test]
    fn basic_challenges_parse_and_bearer_is_preferred() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"basic realm=registry"#),
            Some(Challenge::Basic)
        );
        let both = r#"Basic realm="r", Bearer realm="http://127.0.0.1:1/t",service=reg"#;
        assert_eq!(
            Challenge::parse(both),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let parsed = parse_challenges(
            r#"Bearer realm="https://a/t",scope="repository:x:pull,push",error="say \"no\"""#,
        );
        assert_eq!(parsed.len(), 1);
        let params = &parsed[0].1;
        assert_eq!(params["scope"], "repository:x:pull,push");
        assert_eq!(params["error"], r#"say "no""#);
    }

    #[test]
    fn unknown_or_empty_challenges_are_none() {
        assert_eq!(Challenge::parse(""), None);
        assert_eq!(Challenge::parse(r#"Negotiate abc"#), None);
    }

    #[test]
    fn docker_config_credentials_are_found_by_registry() {
        let auth = BASE64.encode("alice:s3cret:with:colons");
        let config = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://registry.example.com/v1/": {{"username": "bob", "password": "pw"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}}
            }}}}"#,
            BASE64.encode("hub:token")
        );
        let alice = parse_credentials(config.as_bytes(), "127.0.0.1:5000")
            .expect("parses")
            .expect("has credentials");
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.password, "s3cret:with:colons");
        let bob = parse_credentials(config.as_bytes(), "registry.example.com")
            .expect("parses")
            .expect("has credentials");
        assert_eq!(bob.username, "bob");
        let hub = parse_credentials(config.as_bytes(), "docker.io")
            .expect("parses")
            .expect("has credentials");
        assert_eq!(hub.password, "token");
        assert_eq!(
            parse_credentials(config.as_bytes(), "127.0.0.1:5001").expect("parses"),
            None
        );
        assert!(parse_credentials(b"{not json", "x").is_err());
        assert!(parse_credentials(br#"{"auths":{"h:1":{"auth":"!!"}}}"#, "h:1").is_err());
        assert_eq!(
            alice.basic(),
            format!("Basic {}", BASE64.encode("alice:s3cret:with:colons"))
        );
    }

    /// The (path and query, Authorization header) of each request a test server saw.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

    /// A token service on loopback answering every request with `status` and `body`;
    /// returns its address and what it saw.
    async fn token_service(status: u16, body: &'static str) -> (std::net::SocketAddr, Seen) {
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Seen = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    let auth = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let target = request.uri().to_string();
                    record.lock().expect("record").push((target, auth));
                    async move {
                        hyper::Response::builder()
                            .status(status)
                            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn bearer_tokens_are_fetched_from_the_realm_with_the_credentials() {
        let (addr, seen) = token_service(200, r#"{"token":"abc123"}"#).await;
        let transport = Transport::new(Vec::new(), None);
        let challenge = Challenge::Bearer {
            realm: format!("http://{addr}/token"),
            service: Some("test registry".into()),
            scope: None,
        };
        let credentials = Credentials {
            username: "alice".into(),
            password: "pw".into(),
        };
        let header = authorize(
            &transport,
            &challenge,
            Some(&credentials),
            "hypermesh/busybox",
        )
        .await
        .expect("token");
        assert_eq!(header, "Bearer abc123");
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(
            seen,
            vec![(
                "/token?service=test%20registry&scope=repository%3Ahypermesh%2Fbusybox%3Apull"
                    .to_string(),
                Some(credentials.basic())
            )]
        );
    }

    #[tokio::test]
    async fn a_refused_token_request_is_unauthorized() {
        let (addr, _) = token_service(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).await;
        let transport = Transport::new(Vec::new(), None);
        let challenge = Challenge::Bearer {
            realm: format!("http://{addr}/token"),
            service: None,
            scope: Some("repository:x:pull".into()),
        };
        let error = authorize(&transport, &challenge, None, "x")
            .await
            .expect_err("refused");
        assert!(error.is_unauthorized(), "{error}");
        let basic = authorize(&transport, &Challenge::Basic, None, "x")
            .await
            .expect_err("no credentials");
        assert!(basic.is_unauthorized(), "{basic}");
    }

    #[test]
    fn tokens_come_from_token_or_access_token() {
        assert_eq!(parse_token(br#"{"token":"t1"}"#), Ok("t1".into()));
        assert_eq!(parse_token(br#"{"access_token":"t2"}"#), Ok("t2".into()));
        assert!(parse_token(br#"{}"#).is_err());
    }
}
