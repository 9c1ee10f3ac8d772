//! Message size limits: a request over the server's 16 MiB gRPC limit is refused with
//! an error — the server neither crashes nor stops answering — and Lists whose
//! response would exceed the limit neither masquerade as "expired" nor break paging.

use hypermesh_tests::fixtures;

use hypermesh_api::Api;
use hypermesh_api::v1::{self, ListRequest, Workload};
use hypermesh_tests::ApiServerProcess;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Sends and receives already-encoded messages, so the test can send more than the
/// typed client allows.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `/hypermesh.v1.WorkloadService/{method}` with `body`, with no client-side limit.
async fn raw_call(channel: Channel, method: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(format!("/hypermesh.v1.WorkloadService/{method}"))
        .expect("valid path");
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A Workload whose one environment variable holds `bytes` bytes.
fn heavy_workload(name: &str, bytes: usize) -> Workload {
    let mut w = fixtures::workload("default", name, 1);
    w.spec
        .as_mut()
        .expect("spec")
        .template
        .as_mut()
        .expect("template")
        .containers[0]
        .env = vec![v1::EnvVar {
        name: "BLOB".into(),
        value: "x".repeat(bytes),
        ..Default::default()
    }];
    w
}

async fn still_answers(server: &ApiServerProcess, name: &str) {
    let api = Api::<Workload>::new(server.channel().await.expect("connect"));
    let created = api
        .create(&fixtures::workload("default", name, 1))
        .await
        .expect("the server still takes writes");
    assert_eq!(api.get("default", name).await.expect("and reads"), created);
}

#[tokio::test]
async fn a_request_over_16_mib_is_refused_and_the_server_survives() {
    let server = ApiServerProcess::start().await.expect("start hm-apiserver");
    let channel = server.channel().await.expect("connect");

    let body = heavy_workload("huge", 17 * 1024 * 1024).encode_to_vec();
    assert!(body.len() > 16 * 1024 * 1024);
    let err = raw_call(channel.clone(), "Create", body)
        .await
        .expect_err("a 17 MiB request");
    eprintln!(
        "17 MiB request refused with {:?}: {}",
        err.code(),
        err.message()
    );

    // Twice more on the same channel, then fresh connections work too.
    for _ in 0..2 {
        let body = heavy_workload("huge", 20 * 1024 * 1024).encode_to_vec();
        raw_call(channel.clone(), "Create", body)
            .await
            .expect_err("a 20 MiB request");
    }
    let api = Api::<Workload>::new(channel);
    assert!(fixtures::get_opt(&api, "default", "huge").await.is_none());
    still_answers(&server, "small").await;
}

/// Twelve objects just under the 1.5 MiB object limit: ~17 MiB in one List.
async fn fill_with_large_objects(api: &Api<Workload>) {
    for i in 0..12 {
        api.create(&heavy_workload(&format!("big-{i:02}"), 1400 * 1024))
            .await
            .expect("create a large object");
    }
}

#[tokio::test]
async fn an_unpaged_list_too_large_for_one_message_is_not_reported_as_expired() {
    let server = ApiServerProcess::start().await.expect("start hm-apiserver");
    let api = Api::<Workload>::new(server.channel().await.expect("connect"));
    fill_with_large_objects(&api).await;

    // The server cuts pages before they outgrow a gRPC message and hands out a
    // continue token even without a limit; following it yields everything.
    match api.list(fixtures::list_request("default")).await {
        Ok((items, _, token)) => {
            assert!(
                items.len() < 12 && !token.is_empty(),
                "a ~17 MiB listing comes in pages"
            );
            let (all, _) = api
                .list_all(fixtures::list_request("default"))
                .await
                .expect("list all pages");
            assert_eq!(all.len(), 12);
        }
        // OUT_OF_RANGE means "your resource_version expired, re-list" in this API
        // (hmctl prints it as Expired, watchers re-list on it); a response that is
        // too large must not be reported that way.
        Err(e) => assert_ne!(
            e.code(),
            tonic::Code::OutOfRange,
            "an oversized List answered as if expired: {e:?}"
        ),
    }
    still_answers(&server, "after-list").await;

    // Small pages always work.
    let (all, _) = api
        .list_all(ListRequest {
            namespace: "default".into(),
            limit: 4,
            ..Default::default()
        })
        .await
        .expect("paged listing");
    assert_eq!(all.len(), 13);
}

#[tokio::test]
async fn a_list_in_default_sized_pages_of_large_objects_succeeds() {
    let server = ApiServerProcess::start().await.expect("start hm-apiserver");
    let api = Api::<Workload>::new(server.channel().await.expect("connect"));
    fill_with_large_objects(&api).await;

    // hmctl and the runtime's watcher list in pages of 500 and follow continue tokens;
    // the server has to keep each page under its message limit for that to work.
    let (all, _) = api
        .list_all(ListRequest {
            namespace: "default".into(),
            limit: 500,
            ..Default::default()
        })
        .await
        .expect("listing in pages of 500 objects");
    assert_eq!(all.len(), 12);
}
