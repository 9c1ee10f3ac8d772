//! List filtering and paging: label selectors (=, ==, !=, in, notin, key, !key) and
//! field selectors return exactly the matching objects; bad selectors and tokens are
//! INVALID_ARGUMENT; pages are a consistent snapshot that later writes do not leak
//! into; listing with namespace "" spans every namespace.

use hypermesh_tests::fixtures;

use std::collections::BTreeSet;

use fixtures::{assert_status, instance, labels, lease, names, namespace, rv};
use hypermesh_api::reason::Reason;
use hypermesh_api::v1::{self, Instance, InstancePhase, Lease, ListRequest, WatchRequest};
use hypermesh_api::{Api, Resource};
use hypermesh_tests::InProcessApiServer;
use tonic::Code;

/// One Instance the selector tests list.
struct Seed {
    name: &'static str,
    labels: &'static [(&'static str, &'static str)],
    node: &'static str,
    phase: InstancePhase,
}

const INSTANCES: &[Seed] = &[
    Seed {
        name: "a",
        labels: &[("app", "web"), ("env", "prod"), ("tier", "front")],
        node: "n1",
        phase: InstancePhase::Running,
    },
    Seed {
        name: "b",
        labels: &[("app", "web"), ("env", "dev")],
        node: "n2",
        phase: InstancePhase::Pending,
    },
    Seed {
        name: "c",
        labels: &[("app", "db"), ("env", "prod"), ("tier", "back")],
        node: "n1",
        phase: InstancePhase::Failed,
    },
    Seed {
        name: "d",
        labels: &[("app", "cache")],
        node: "",
        phase: InstancePhase::Pending,
    },
    Seed {
        name: "e",
        labels: &[],
        node: "",
        phase: InstancePhase::Pending,
    },
];

/// Creates the [`INSTANCES`] in `default`; new Instances start PENDING, the others
/// get their phase through UpdateStatus.
async fn seed_instances(server: &InProcessApiServer) -> Api<Instance> {
    let api = server.api::<Instance>();
    for seed in INSTANCES {
        let mut i = instance("default", seed.name);
        i.metadata.as_mut().expect("meta").labels = labels(seed.labels);
        i.spec.as_mut().expect("spec").node_name = seed.node.into();
        let created = api.create(&i).await.expect("create instance");
        if seed.phase != InstancePhase::Pending {
            let mut reported = created;
            reported.status = Some(v1::InstanceStatus {
                phase: seed.phase as i32,
                ..Default::default()
            });
            api.update_status(&reported).await.expect("set phase");
        }
    }
    api
}

async fn select(
    api: &Api<Instance>,
    namespace: &str,
    label_selector: &str,
    field_selector: &str,
) -> Result<Vec<String>, tonic::Status> {
    let (items, _, cont) = api
        .list(ListRequest {
            namespace: namespace.into(),
            label_selector: label_selector.into(),
            field_selector: field_selector.into(),
            ..Default::default()
        })
        .await?;
    assert!(cont.is_empty(), "an unlimited list has no continue token");
    Ok(names(&items))
}

#[tokio::test]
async fn label_selectors_return_exactly_the_matching_objects() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = seed_instances(&server).await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["a", "b", "c", "d", "e"]),
        ("app=web", &["a", "b"]),
        ("app==web", &["a", "b"]),
        ("app!=web", &["c", "d", "e"]),
        ("env in (prod,dev)", &["a", "b", "c"]),
        ("env in (staging)", &[]),
        ("env notin (prod)", &["b", "d", "e"]),
        ("tier", &["a", "c"]),
        ("!tier", &["b", "d", "e"]),
        ("app=web,env=prod", &["a"]),
        ("app in (web,db),!tier", &["b"]),
        ("env,tier notin (front)", &["b", "c"]),
    ];
    for (selector, expected) in cases {
        let got = select(&api, "default", selector, "")
            .await
            .unwrap_or_else(|e| panic!("{selector:?}: {e:?}"));
        assert_eq!(got, *expected, "label selector {selector:?}");
    }
}

#[tokio::test]
async fn field_selectors_return_exactly_the_matching_objects() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = seed_instances(&server).await;
    server
        .api::<v1::Namespace>()
        .create(&namespace("other"))
        .await
        .expect("create ns");
    let mut elsewhere = instance("other", "a");
    elsewhere.spec.as_mut().expect("spec").node_name = "n1".into();
    api.create(&elsewhere).await.expect("create in other");

    let cases: &[(&str, &str, &[&str])] = &[
        ("default", "metadata.name=a", &["a"]),
        ("default", "metadata.name!=a", &["b", "c", "d", "e"]),
        (
            "default",
            "metadata.namespace=default",
            &["a", "b", "c", "d", "e"],
        ),
        ("default", "metadata.namespace=other", &[]),
        ("default", "spec.nodeName=n1", &["a", "c"]),
        ("default", "spec.nodeName==n2", &["b"]),
        ("default", "spec.nodeName=", &["d", "e"]),
        ("default", "status.phase=RUNNING", &["a"]),
        ("default", "status.phase=PENDING", &["b", "d", "e"]),
        ("default", "status.phase!=PENDING", &["a", "c"]),
        ("default", "spec.nodeName=n1,status.phase=FAILED", &["c"]),
        ("", "metadata.name=a", &["a", "a"]),
        ("", "metadata.namespace=other", &["a"]),
        ("", "spec.nodeName=n1", &["a", "c", "a"]),
    ];
    for (ns, selector, expected) in cases {
        let got = select(&api, ns, "", selector)
            .await
            .unwrap_or_else(|e| panic!("{selector:?}: {e:?}"));
        assert_eq!(got, *expected, "field selector {selector:?} in {ns:?}");
    }
    // Label and field selectors together.
    assert_eq!(
        select(&api, "default", "app=web", "spec.nodeName=n2")
            .await
            .expect("both selectors"),
        ["b"]
    );
    // Across namespaces: items come back namespace by namespace.
    let (all, _, _) = api
        .list(fixtures::list_request(""))
        .await
        .expect("list all");
    let where_: Vec<(String, String)> = all
        .iter()
        .map(|i| (i.meta().namespace.clone(), i.meta().name.clone()))
        .collect();
    assert_eq!(where_.len(), 6);
    assert!(where_.contains(&("other".into(), "a".into())));
    assert_eq!(
        select(&api, "other", "", "").await.expect("list other"),
        ["a"]
    );
}

#[tokio::test]
async fn invalid_selectors_are_rejected() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = seed_instances(&server).await;
    for (label_selector, field_selector) in [
        ("app in web", ""),
        ("app in (web", ""),
        ("app=web,,env=prod", ""),
        ("Bad Key=x", ""),
        ("", "spec.replicas=3"),
        ("", "status.hostIP=1.2.3.4"),
        ("", "metadata.name"),
    ] {
        let err = select(&api, "default", label_selector, field_selector)
            .await
            .expect_err("invalid selector");
        assert_status(&err, Code::InvalidArgument, Reason::SelectorInvalid);
        let which = if label_selector.is_empty() {
            "field_selector"
        } else {
            "label_selector"
        };
        assert!(
            err.message().starts_with(which),
            "{label_selector:?}/{field_selector:?}: {}",
            err.message()
        );
        // Watch parses selectors the same way.
        let err = api
            .watch(WatchRequest {
                namespace: "default".into(),
                label_selector: label_selector.into(),
                field_selector: field_selector.into(),
                ..Default::default()
            })
            .await
            .expect_err("invalid selector on watch");
        assert_status(&err, Code::InvalidArgument, Reason::SelectorInvalid);
    }
    // A field only Instances have is refused for Leases.
    let err = server
        .api::<Lease>()
        .list(ListRequest {
            namespace: "default".into(),
            field_selector: "status.phase=RUNNING".into(),
            ..Default::default()
        })
        .await
        .expect_err("unsupported field");
    assert_status(&err, Code::InvalidArgument, Reason::SelectorInvalid);
}

fn page_request(namespace: &str, limit: u32, continue_token: String) -> ListRequest {
    ListRequest {
        namespace: namespace.into(),
        limit,
        continue_token,
        ..Default::default()
    }
}

#[tokio::test]
async fn pages_are_a_consistent_snapshot() {
    let server = InProcessApiServer::start().await.expect("server");
    server
        .api::<v1::Namespace>()
        .create(&namespace("pages"))
        .await
        .expect("create ns");
    let api = server.api::<Lease>();
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(
            api.create(&lease("pages", &format!("lease-{i:02}")))
                .await
                .expect("create lease"),
        );
    }

    let (page1, rv1, token1) = api
        .list(page_request("pages", 10, String::new()))
        .await
        .expect("page 1");
    assert_eq!(page1, created[0..10]);
    assert!(!token1.is_empty());
    assert!(rv1 >= rv(&created[24]));

    // Writes between pages: a create sorting into page 2, an update on page 2, a
    // delete on page 3 and a create after the end.
    api.create(&lease("pages", "lease-12a"))
        .await
        .expect("create between pages");
    let mut relabelled = created[15].clone();
    relabelled
        .metadata
        .as_mut()
        .expect("meta")
        .labels
        .insert("changed".into(), "yes".into());
    let relabelled = api.update(&relabelled).await.expect("update lease-15");
    assert!(rv(&relabelled) > rv1);
    api.delete(fixtures::delete_request("pages", "lease-22"))
        .await
        .expect("delete lease-22");
    api.create(&lease("pages", "lease-99"))
        .await
        .expect("create after the end");

    let (page2, rv2, token2) = api
        .list(page_request("pages", 10, token1))
        .await
        .expect("page 2");
    assert_eq!(rv2, rv1, "every page is read at the first page's revision");
    assert_eq!(
        page2,
        created[10..20],
        "page 2 is the snapshot, not the present"
    );
    assert!(!token2.is_empty());

    let (page3, rv3, token3) = api
        .list(page_request("pages", 10, token2))
        .await
        .expect("page 3");
    assert_eq!(rv3, rv1);
    assert_eq!(page3, created[20..25]);
    assert!(token3.is_empty(), "the last page has no continue token");

    // A fresh listing sees the present.
    let (now, rv_now) = api
        .list_all(page_request("pages", 10, String::new()))
        .await
        .expect("list again");
    assert!(rv_now > rv1);
    assert_eq!(now.len(), 26);
    assert!(names(&now).contains(&"lease-12a".to_string()));
    assert!(!names(&now).contains(&"lease-22".to_string()));
    assert!(now.contains(&relabelled));
}

#[tokio::test]
async fn pages_with_a_label_selector_hold_only_matches() {
    let server = InProcessApiServer::start().await.expect("server");
    let api = server.api::<Lease>();
    let mut expected = BTreeSet::new();
    for i in 0..25u32 {
        let parity = if i.is_multiple_of(2) { "even" } else { "odd" };
        let mut l = lease("default", &format!("lease-{i:02}"));
        l.metadata.as_mut().expect("meta").labels = labels(&[("parity", parity)]);
        api.create(&l).await.expect("create");
        if parity == "even" {
            expected.insert(format!("lease-{i:02}"));
        }
    }
    let mut request = ListRequest {
        namespace: "default".into(),
        label_selector: "parity=even".into(),
        limit: 5,
        ..Default::default()
    };
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        let (items, _, token) = api.list(request.clone()).await.expect("page");
        sizes.push(items.len());
        seen.extend(names(&items));
        if token.is_empty() {
            break;
        }
        request.continue_token = token;
    }
    assert_eq!(sizes, [5, 5, 3]);
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test]
async fn bad_continue_tokens_are_rejected() {
    let server = InProcessApiServer::start().await.expect("server");
    server
        .api::<v1::Namespace>()
        .create(&namespace("pages"))
        .await
        .expect("create ns");
    let api = server.api::<Lease>();
    for i in 0..3 {
        api.create(&lease("pages", &format!("lease-{i}")))
            .await
            .expect("create");
    }
    let (_, _, token) = api
        .list(page_request("pages", 1, String::new()))
        .await
        .expect("page 1");
    assert!(!token.is_empty());

    for (namespace, garbage) in [
        ("pages", "garbage".to_string()),
        ("pages", "v1.notanumber.00".to_string()),
        ("pages", format!("{token}zz")),
        // A token from another listing (another namespace's prefix).
        ("default", token.clone()),
    ] {
        let err = api
            .list(page_request(namespace, 1, garbage.clone()))
            .await
            .expect_err("garbage token");
        assert_status(&err, Code::InvalidArgument, Reason::ContinueTokenInvalid);
        assert!(
            err.message().contains("continue_token"),
            "{garbage}: {}",
            err.message()
        );
    }
    // The real token still works.
    let (items, _, _) = api
        .list(page_request("pages", 1, token))
        .await
        .expect("page 2");
    assert_eq!(names(&items), ["lease-1"]);
}

#[tokio::test]
async fn a_continue_token_past_the_kept_history_has_expired() {
    let server = InProcessApiServer::start_with(|config| config.store.set_retain_revisions(10))
        .await
        .expect("server");
    let api = server.api::<Lease>();
    for i in 0..3 {
        api.create(&lease("default", &format!("lease-{i}")))
            .await
            .expect("create");
    }
    let (_, _, token) = api
        .list(page_request("default", 1, String::new()))
        .await
        .expect("page 1");
    for i in 0..40 {
        api.create(&lease("default", &format!("later-{i:02}")))
            .await
            .expect("create");
    }
    let err = api
        .list(page_request("default", 1, token))
        .await
        .expect_err("the snapshot was compacted");
    assert_status(&err, Code::OutOfRange, Reason::Expired);
}
