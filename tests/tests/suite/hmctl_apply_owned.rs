//! `hmctl apply` of an Instance over one a Workload owns (and the scheduler bound) is
//! refused with an error naming the owner, not only the immutable field it trips on.

use hypermesh_tests::hmctl;

use hmctl::{Hmctl, web_workload};
use hypermesh_api::Api;
use hypermesh_api::v1::{self, BindRequest, Instance, Node, ObjectMeta, OwnerReference, Workload};
use hypermesh_tests::ApiServerProcess;

#[tokio::test]
async fn hmctl_apply_over_a_workload_owned_instance_names_the_owner() {
    let server = ApiServerProcess::start().await.expect("apiserver");
    let hmctl = Hmctl::new(server.url());
    let channel = server.channel().await.expect("channel");
    hmctl
        .run_with_stdin(&["apply", "-f", "-"], &web_workload("web", 1))
        .await
        .ok();
    let web = Api::<Workload>::new(channel.clone())
        .get("default", "web")
        .await
        .expect("web");
    Api::<Node>::new(channel.clone())
        .create(&Node {
            metadata: Some(ObjectMeta {
                name: "vm".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("node");
    let instances = Api::<Instance>::new(channel);
    let container = v1::Container {
        name: "main".into(),
        image: "hypermesh.local/busybox:latest".into(),
        ..Default::default()
    };
    instances
        .create(&Instance {
            metadata: Some(ObjectMeta {
                name: "web-x1".into(),
                namespace: "default".into(),
                owner_references: vec![OwnerReference {
                    kind: "Workload".into(),
                    name: "web".into(),
                    uid: web.metadata.clone().expect("meta").uid,
                    controller: true,
                }],
                ..Default::default()
            }),
            spec: Some(v1::InstanceSpec {
                containers: vec![container],
                ..Default::default()
            }),
            status: None,
        })
        .await
        .expect("instance");
    instances
        .bind(BindRequest {
            namespace: "default".into(),
            name: "web-x1".into(),
            node_name: "vm".into(),
            ..Default::default()
        })
        .await
        .expect("bind");

    let manifest = "apiVersion: hypermesh.io/v1\nkind: Instance\nmetadata:\n  name: web-x1\n\
                    spec:\n  containers:\n    - name: main\n      image: hypermesh.local/busybox:1\n";
    let out = hmctl
        .run_with_stdin(&["apply", "-f", "-"], manifest)
        .await
        .failed();
    assert!(
        out.stderr.contains(
            "instance web-x1 is owned by Workload web; change the Workload instead \
             (spec.nodeName: cannot change from \"vm\" to \"\""
        ),
        "{out:#?}"
    );
    let kept = instances
        .get("default", "web-x1")
        .await
        .expect("still there");
    assert_eq!(kept.spec.as_ref().map(|s| s.node_name.as_str()), Some("vm"));
}
