//! An `hm-apiserver` killed with `kill -9` and started again on its data dir finds its
//! own previous identity holding the controllers' Lease and leads again at once: its
//! controllers act well before the lease (30 s here) would have lapsed.

use std::time::Duration;

use hypermesh_api::Api;
use hypermesh_api::v1::{Instance, Lease, ListRequest, Workload};
use hypermesh_tests::fixtures::workload;
use hypermesh_tests::{ApiServerProcess, wait_for};
use tokio::time::Instant;

const LEASE_SECONDS: u64 = 30;

async fn instances_of(api: &Api<Instance>, app: &str) -> usize {
    api.list_all(ListRequest {
        namespace: "default".into(),
        label_selector: format!("app={app}"),
        ..Default::default()
    })
    .await
    .map(|(items, _)| items.len())
    .unwrap_or(0)
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases
        .get("hypermesh-system", "hypermesh-controllers")
        .await
        .ok()?;
    Some(lease.spec?.holder_identity).filter(|h| !h.is_empty())
}

#[tokio::test]
async fn a_restarted_apiserver_leads_again_at_once() {
    let lease = LEASE_SECONDS.to_string();
    let mut server = ApiServerProcess::start_with_args(&[
        "--controllers",
        "all",
        "--controllers-lease-seconds",
        &lease,
    ])
    .await
    .expect("apiserver");
    let channel = server.channel().await.expect("channel");
    Api::<Workload>::new(channel.clone())
        .create(&workload("default", "before", 1))
        .await
        .expect("create");
    let instances = Api::<Instance>::new(channel.clone());
    wait_for(Duration::from_secs(20), || async {
        (instances_of(&instances, "before").await == 1).then_some(())
    })
    .await
    .expect("the controllers act");
    let leases = Api::<Lease>::new(channel);
    let first = holder(&leases).await.expect("the Lease has a holder");

    // No release: the Lease still names the dead process.
    server.restart().await.expect("kill -9 and start again");
    let restarted = Instant::now();
    let channel = server.channel().await.expect("channel");
    Api::<Workload>::new(channel.clone())
        .create(&workload("default", "after", 1))
        .await
        .expect("create after the restart");
    let instances = Api::<Instance>::new(channel.clone());
    wait_for(Duration::from_secs(LEASE_SECONDS * 3), || async {
        (instances_of(&instances, "after").await == 1).then_some(())
    })
    .await
    .expect("the controllers act after the restart");
    let acted_after = restarted.elapsed();
    assert!(
        acted_after < Duration::from_secs(LEASE_SECONDS / 3),
        "the controllers acted {acted_after:?} after the restart; the lease is {LEASE_SECONDS}s"
    );
    assert_eq!(
        holder(&Api::<Lease>::new(channel)).await.as_deref(),
        Some(first.as_str()),
        "the same identity leads"
    );
}
