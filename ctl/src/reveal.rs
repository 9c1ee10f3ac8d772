//! `hmctl get secrets --reveal`: Secrets with their values. The server withholds values
//! (keys and sizes only) unless a request carries `x-hypermesh-reveal: true` and the
//! caller may `get secrets/data`; this module sends that header on Get and List.

use hypermesh_api::client::MAX_MESSAGE_BYTES;
use hypermesh_api::v1::{self, GetRequest, ListRequest};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// The request header asking for a Secret's values.
pub const REVEAL_HEADER: &str = "x-hypermesh-reveal";

type Client = v1::secret_service_client::SecretServiceClient<Channel>;

fn client(channel: Channel) -> Client {
    Client::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn revealing<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        REVEAL_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}

/// One Secret with its values.
pub async fn get(channel: Channel, namespace: &str, name: &str) -> Result<v1::Secret, Status> {
    let request = GetRequest {
        namespace: namespace.into(),
        name: name.into(),
    };
    Ok(client(channel).get(revealing(request)).await?.into_inner())
}

/// Every Secret of a listing (all pages) with their values.
pub async fn list(channel: Channel, mut request: ListRequest) -> Result<Vec<v1::Secret>, Status> {
    let mut client = client(channel);
    let mut all = Vec::new();
    loop {
        let page = client.list(revealing(request.clone())).await?.into_inner();
        all.extend(page.items);
        if page.continue_token.is_empty() {
            return Ok(all);
        }
        request.continue_token = page.continue_token;
    }
}
