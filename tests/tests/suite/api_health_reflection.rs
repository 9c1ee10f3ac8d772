//! The apiserver answers the standard gRPC health service and server reflection, so
//! grpcurl and clients in any language work without the `.proto` files.

use hypermesh_api::resource::KIND_INFOS;
use hypermesh_tests::InProcessApiServer;
use prost::Message;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// The kinds of the API; each has a `hypermesh.v1.<Kind>Service`.
const KINDS: [&str; 13] = [
    "Namespace",
    "Node",
    "Asset",
    "Workload",
    "Role",
    "RoleBinding",
    "JoinToken",
    "Certificate",
    "Instance",
    "Route",
    "Secret",
    "Lease",
    "Event",
];

/// The parts of `google.protobuf.FileDescriptorProto` this test reads.
#[derive(Clone, PartialEq, Message)]
struct FileDescriptor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<Descriptor>,
}

/// The part of `google.protobuf.DescriptorProto` this test reads.
#[derive(Clone, PartialEq, Message)]
struct Descriptor {
    #[prost(string, tag = "1")]
    name: String,
}

/// One reflection request on its own stream: the response, or the status that ended it.
async fn try_reflect(
    server: &InProcessApiServer,
    request: MessageRequest,
) -> Result<MessageResponse, tonic::Status> {
    let mut client = ServerReflectionClient::new(server.channel());
    let outbound = futures::stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut responses = client
        .server_reflection_info(outbound)
        .await
        .expect("reflection call")
        .into_inner();
    let response: ServerReflectionResponse = responses.message().await?.expect("one response");
    Ok(response.message_response.expect("a message response"))
}

async fn reflect(server: &InProcessApiServer, request: MessageRequest) -> MessageResponse {
    try_reflect(server, request)
        .await
        .expect("reflection response")
}

#[tokio::test]
async fn health_reports_serving() {
    let server = InProcessApiServer::start().await.expect("server");
    let mut health = HealthClient::new(server.channel());
    for service in [
        "",
        "hypermesh.v1.WorkloadService",
        "hypermesh.v1.NamespaceService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health check {service:?}: {e:?}"))
            .into_inner()
            .status;
        assert_eq!(
            ServingStatus::try_from(status),
            Ok(ServingStatus::Serving),
            "{service:?}"
        );
    }
    let err = health
        .check(HealthCheckRequest {
            service: "hypermesh.v1.NoSuchService".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn reflection_lists_every_kind_service() {
    let server = InProcessApiServer::start().await.expect("server");
    let MessageResponse::ListServicesResponse(list) =
        reflect(&server, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a ListServices response");
    };
    let services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for kind in KINDS {
        let name = format!("hypermesh.v1.{kind}Service");
        assert!(services.contains(&name), "{name} missing from {services:?}");
    }
    assert!(
        services.contains(&"grpc.health.v1.Health".to_string()),
        "{services:?}"
    );
    // Every kind the API knows is served.
    assert_eq!(KIND_INFOS.len(), KINDS.len());
    for info in KIND_INFOS {
        assert!(
            services.iter().any(|s| s == info.service),
            "{}",
            info.service
        );
    }
}

#[tokio::test]
async fn reflection_describes_the_workload_message() {
    let server = InProcessApiServer::start().await.expect("server");
    let response = reflect(
        &server,
        MessageRequest::FileContainingSymbol("hypermesh.v1.Workload".into()),
    )
    .await;
    let MessageResponse::FileDescriptorResponse(files) = response else {
        panic!("expected a file descriptor, got {response:?}");
    };
    let decoded: Vec<FileDescriptor> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| FileDescriptor::decode(bytes.as_slice()).expect("a FileDescriptorProto"))
        .collect();
    let file = decoded
        .iter()
        .find(|f| f.message_type.iter().any(|m| m.name == "Workload"))
        .unwrap_or_else(|| panic!("no file defines Workload: {decoded:?}"));
    assert_eq!(file.package, "hypermesh.v1");
    assert!(file.name.ends_with(".proto"), "{}", file.name);

    // The service is described too.
    let response = reflect(
        &server,
        MessageRequest::FileContainingSymbol("hypermesh.v1.WorkloadService".into()),
    )
    .await;
    assert!(
        matches!(response, MessageResponse::FileDescriptorResponse(ref f) if !f.file_descriptor_proto.is_empty()),
        "{response:?}"
    );

    // An unknown symbol is NOT_FOUND (tonic-reflection ends the stream with the status
    // rather than sending an ErrorResponse; either is a clear answer).
    let response = try_reflect(
        &server,
        MessageRequest::FileContainingSymbol("hypermesh.v1.NoSuchThing".into()),
    )
    .await;
    match response {
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        Ok(MessageResponse::ErrorResponse(e)) => {
            assert_eq!(e.error_code, Code::NotFound as i32, "{e:?}")
        }
        Ok(other) => panic!("expected NOT_FOUND, got {other:?}"),
    }
}
