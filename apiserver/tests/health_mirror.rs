//! The gRPC health service follows the process health: `NOT_SERVING` for the empty
//! service name while an in-process controller is down, `SERVING` again once it is
//! back (`in_process::mirror_health`), checked with a real gRPC health client.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

use std::time::Duration;

use hypermesh_apiserver::in_process::mirror_health;
use hypermesh_runtime::health::{ComponentState, Health};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status(client: &mut HealthClient<tonic::transport::Channel>) -> ServingStatus {
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

async fn wait_status(client: &mut HealthClient<tonic::transport::Channel>, wanted: ServingStatus) {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut pause = Duration::from_millis(5);
        while status(client).await != wanted {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("health never became {wanted:?}"));
}

#[tokio::test]
async fn grpc_health_reports_a_controller_that_is_down() {
    let shutdown = CancellationToken::new();
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let health = Health::new();
    tokio::spawn(mirror_health(health.clone(), reporter, shutdown.clone()));
    let channel = hypermesh_api::client::connect(&url).await.unwrap();
    let mut client = HealthClient::new(channel);

    wait_status(&mut client, ServingStatus::Serving).await;
    health.set(
        "controller/workload",
        ComponentState::Down("panicked".into()),
    );
    wait_status(&mut client, ServingStatus::NotServing).await;
    health.set("controller/workload", ComponentState::Ready);
    wait_status(&mut client, ServingStatus::Serving).await;
    shutdown.cancel();
}
