//! `hmctl version`: the client's version, the apiserver's (`VersionService.Get`, which
//! any authenticated user may call) and whether it answers its gRPC health check.

use anyhow::Result;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use hypermesh_api::v1::VersionRequest;
use hypermesh_api::v1::version_service_client::VersionServiceClient;

use crate::error::ServerError;
use crate::output::print;
use crate::{Context, Exit};

/// This build of hmctl.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs `hmctl version`; without a context (`--client`) the server is not contacted.
pub async fn run(ctx: Option<&Context>) -> Result<Exit> {
    print(&format!("Client Version: {CLIENT_VERSION}\n"))?;
    let Some(ctx) = ctx else {
        return Ok(Exit::Success);
    };
    print(&format!("Server: {}\n", ctx.server))?;
    let channel = ctx.connect().await?;
    let mut versions = VersionServiceClient::new(channel.clone());
    match versions.get(VersionRequest {}).await {
        Ok(response) => {
            let v = response.into_inner();
            print(&format!(
                "Server Version: {} (API {}, store {})\n",
                v.version, v.api_version, v.store
            ))?;
        }
        Err(s) if s.code() == Code::Unimplemented => {
            print("Server Version: unknown (the apiserver predates VersionService)\n")?;
        }
        Err(s) => return Err(ServerError::from_status(&s).into()),
    }
    let mut health = HealthClient::new(channel);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    match answer {
        Ok(response) => {
            let status = ServingStatus::try_from(response.into_inner().status)
                .map_or("UNKNOWN", |s| s.as_str_name());
            print(&format!("Server Health: {status}\n"))?;
            Ok(if status == ServingStatus::Serving.as_str_name() {
                Exit::Success
            } else {
                Exit::Failure
            })
        }
        Err(s) if s.code() == Code::Unimplemented => {
            print("Server Health: reachable, but it does not serve grpc.health.v1\n")?;
            Ok(Exit::Success)
        }
        Err(s) => Err(ServerError::from_status(&s).into()),
    }
}
