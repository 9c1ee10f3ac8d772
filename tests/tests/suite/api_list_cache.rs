//! Selective Lists (with a label or field selector) answered from the watch cache:
//! they still see every write acknowledged before them — through the same apiserver
//! on the embedded store, through another apiserver on etcd — while other kinds move
//! the store's revision on, and `hypermesh_apiserver_list_pages` says the cache
//! answered them; and they are authorized as any List is.

use hypermesh_api::v1::{Instance, Lease, ListRequest, Workload};
use hypermesh_api::{Api, client::connect_to};
use hypermesh_tests::etcd::EtcdCluster;
use hypermesh_tests::fixtures::{
    delete_request, instance, labels, lease, names, namespace, workload,
};
use hypermesh_tests::ha::apiserver_on;
use hypermesh_tests::metrics::{free_address, sample, scrape};
use hypermesh_tests::{InProcessApiServer, connect_target, identities};

/// The names a label-selected List of Instances in `default` returns (one page).
async fn selected(api: &Api<Instance>, label_selector: &str) -> Vec<String> {
    let (items, _, cont) = api
        .list(ListRequest {
            namespace: "default".into(),
            label_selector: label_selector.into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(cont.is_empty(), "one page");
    names(&items)
}

/// Creates, relabels and deletes Instances through `writer` and lists them by label
/// through `reader` right after each acknowledged write, with Lease writes in between
/// so the store's revision moves past the Instance cache's.
async fn every_write_is_listed(
    writer: &Api<Instance>,
    reader: &Api<Instance>,
    leases: &Api<Lease>,
) {
    for i in 0..20 {
        let name = format!("i-{i:02}");
        leases
            .create(&lease("default", &format!("l-{i:02}")))
            .await
            .expect("lease");
        let mut created = instance("default", &name);
        created.metadata.as_mut().expect("meta").labels = labels(&[("batch", &name)]);
        let mut created = writer.create(&created).await.expect("create");
        assert_eq!(
            selected(reader, &format!("batch={name}")).await,
            [name.as_str()],
            "created"
        );

        created.metadata.as_mut().expect("meta").labels = labels(&[("batch", "moved")]);
        writer.update(&created).await.expect("relabel");
        leases
            .delete(delete_request("default", &format!("l-{i:02}")))
            .await
            .expect("lease delete");
        assert!(
            selected(reader, &format!("batch={name}")).await.is_empty(),
            "relabelled away"
        );
        assert!(
            selected(reader, "batch=moved").await.contains(&name),
            "relabelled to"
        );

        writer
            .delete(delete_request("default", &name))
            .await
            .expect("delete");
        assert!(
            !selected(reader, "batch=moved").await.contains(&name),
            "deleted"
        );
    }
}

#[tokio::test]
async fn selective_lists_from_the_cache_see_every_acknowledged_write() {
    let metrics = free_address();
    let server = InProcessApiServer::start_with(|c| c.metrics_addr = Some(metrics))
        .await
        .expect("apiserver");
    let instances = server.api::<Instance>();
    let leases = server.api::<Lease>();
    every_write_is_listed(&instances, &instances, &leases).await;

    let (_, body) = scrape(metrics, None).await.expect("scrape");
    let count = |source: &str| {
        sample(
            &body,
            &format!(
                "hypermesh_apiserver_list_pages_total{{kind=\"Instance\",source=\"{source}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    let (cache, store) = (count("cache"), count("store"));
    println!("selective Instance lists: {cache} from the cache, {store} from the store");
    // 80 Lists; the first may read the store while the cache fills.
    assert!(
        cache >= 75.0,
        "the cache answered {cache} of 80 (store: {store})"
    );

    // More matches than the List's limit: pages come from one store snapshot.
    for name in ["p-1", "p-2", "p-3"] {
        let mut paged = instance("default", name);
        paged.metadata.as_mut().expect("meta").labels = labels(&[("paged", "yes")]);
        instances.create(&paged).await.expect("create");
    }
    let (items, _, cont) = instances
        .list(ListRequest {
            namespace: "default".into(),
            label_selector: "paged=yes".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(names(&items), ["p-1", "p-2"]);
    assert!(!cont.is_empty(), "a continue token for p-3");
    let (_, body) = scrape(metrics, None).await.expect("scrape");
    let series = "hypermesh_apiserver_list_pages_total{kind=\"Instance\",source=\"store\"}";
    assert_eq!(
        sample(&body, series),
        Some(store + 1.0),
        "the paged List read the store"
    );
}

#[tokio::test]
async fn selective_lists_through_one_apiserver_see_writes_through_another() {
    let etcd = EtcdCluster::start().await.expect("etcd");
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("encryption.key");
    let a = apiserver_on(&etcd, &key_file, &[]).await;
    let b = apiserver_on(&etcd, &key_file, &[]).await;
    let mut admin_on_b = a
        .config_target(hypermesh_apiserver::server::ADMIN_CONFIG)
        .expect("a's admin.config");
    admin_on_b.url = b.url().to_string();
    let channel_a = a.channel().await.expect("a");
    let on_b: Api<Instance> = Api::new(connect_to(&admin_on_b).await.expect("b"));
    // B's Instance cache starts with its first selective List.
    assert!(selected(&on_b, "batch=none").await.is_empty());
    let on_a: Api<Instance> = Api::new(channel_a.clone());
    every_write_is_listed(&on_a, &on_b, &Api::new(channel_a)).await;

    // B's cache is busy with a burst of writes through A when the write to find lands.
    for round in 0..5 {
        let burst = (0..200).map(|i| {
            let on_a = on_a.clone();
            async move {
                let mut noise = instance("default", &format!("noise-{round}-{i:03}"));
                noise.metadata.as_mut().expect("meta").annotations =
                    labels(&[("noise", &"x".repeat(2000))]);
                on_a.create(&noise).await.expect("noise")
            }
        });
        futures::future::join_all(burst).await;
        let name = format!("after-burst-{round}");
        let mut target = instance("default", &name);
        target.metadata.as_mut().expect("meta").labels = labels(&[("find", "me")]);
        on_a.create(&target).await.expect("create");
        assert!(
            selected(&on_b, "find=me").await.contains(&name),
            "B lists {name}, written through A just before"
        );
    }
}

/// The cached path sits behind the same authorization as the store's: the selective
/// List the admin gets from the cache is refused to an anonymous client, and to an
/// editor outside its namespace or across all of them.
#[tokio::test]
async fn selective_lists_from_the_cache_are_authorized_as_any_list() {
    let metrics = free_address();
    let server = InProcessApiServer::start_with(|c| {
        c.tls = Some(hypermesh_apiserver::TlsSettings::default());
        c.metrics_addr = Some(metrics);
    })
    .await
    .expect("apiserver");
    let namespaces = server.api::<hypermesh_api::v1::Namespace>();
    let admin = server.api::<Workload>();
    for ns in ["team-a", "team-b"] {
        namespaces.create(&namespace(ns)).await.expect("namespace");
        let mut web = workload(ns, "web", 1);
        web.metadata.as_mut().expect("meta").labels = labels(&[("app", "web")]);
        admin.create(&web).await.expect("workload");
    }
    let select = |namespace: &str| ListRequest {
        namespace: namespace.into(),
        label_selector: "app=web".into(),
        ..Default::default()
    };
    let (all, _, _) = admin.list(select("")).await.expect("admin lists");
    assert_eq!(all.len(), 2);

    let anonymous = connect_target(&identities::anonymous(&server).expect("anonymous"))
        .await
        .expect("connect");
    let err = Api::<Workload>::new(anonymous)
        .list(select("team-a"))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    let editor = identities::user(&server, "bob", "editor", &["team-a"])
        .await
        .expect("editor");
    let editor: Api<Workload> = Api::new(connect_target(&editor).await.expect("connect"));
    for namespace in ["team-b", ""] {
        let err = editor
            .list(select(namespace))
            .await
            .expect_err("outside team-a");
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "{namespace:?}: {err:?}"
        );
    }
    let (mine, _, _) = editor.list(select("team-a")).await.expect("own namespace");
    assert_eq!(
        mine.iter()
            .map(|w| w.metadata.as_ref().expect("meta").namespace.as_str())
            .collect::<Vec<_>>(),
        ["team-a"]
    );

    let (_, body) = scrape(metrics, None).await.expect("scrape");
    let from_cache = sample(
        &body,
        "hypermesh_apiserver_list_pages_total{kind=\"Workload\",source=\"cache\"}",
    );
    assert!(
        from_cache.is_some_and(|n| n >= 1.0),
        "the allowed selective Lists came from the cache: {from_cache:?}"
    );
}
