//! `hmctl version`: the client's version, and whether the apiserver answers its gRPC
//! health check (the API has no version call, so no server version is claimed).

use anyhow::Result;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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
