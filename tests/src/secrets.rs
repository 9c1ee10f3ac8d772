//! Shared by the secrets_* tests: Secrets with a unique canary value (so a test can
//! look for its bytes anywhere), and reading a Secret's values the way a permitted
//! user does (the `x-hypermesh-reveal: true` request header).

use hypermesh_api::v1::{self, GetRequest, Secret};
use tonic::transport::Channel;

/// A value no other test writes: `prefix-` and 16 random hex digits.
pub fn canary(prefix: &str) -> Vec<u8> {
    let n: u64 = rand::random();
    format!("{prefix}-{n:016x}").into_bytes()
}

/// Secret `namespace/name` holding `data`.
pub fn secret(namespace: &str, name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: Some(crate::fixtures::meta(namespace, name)),
        spec: Some(v1::SecretSpec {
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Reads Secret `namespace/name` asking for its values (`x-hypermesh-reveal: true`).
pub async fn get_revealed(
    channel: Channel,
    namespace: &str,
    name: &str,
) -> Result<Secret, tonic::Status> {
    let mut request = tonic::Request::new(GetRequest {
        namespace: namespace.into(),
        name: name.into(),
    });
    request.metadata_mut().insert(
        "x-hypermesh-reveal",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut client = v1::secret_service_client::SecretServiceClient::new(channel);
    Ok(client.get(request).await?.into_inner())
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
