//! A sealed Secret reaches a real container: with TLS and a joined agent, the apiserver
//! seals the Secret to the node, the agent opens it, and a container running as an
//! unprivileged user reads one key as a file on tmpfs (its own, mode 0400) and another
//! as an environment variable (`secretKeyRef`); the values are on the node only under
//! its tmpfs secrets directory, and the files go with the Instance.

use std::os::unix::fs::MetadataExt;

use hypermesh_api::Resource;
use hypermesh_api::v1::{self, RestartPolicy, Secret};
use hypermesh_tests::instance::{delete, log_of, sh};
use hypermesh_tests::node_env::{Env, TIMEOUT};
use hypermesh_tests::secrets::{canary, secret};
use hypermesh_tests::wait_for;

#[tokio::test]
async fn a_container_reads_a_sealed_secret_as_a_file_and_as_env() {
    let env = Env::start_tls().await;
    let token = canary("file-token");
    let api_key = canary("env-api-key");
    env.server
        .api::<Secret>()
        .create(&secret(
            "default",
            "app",
            &[("token", &token), ("api-key", &api_key)],
        ))
        .await
        .expect("create secret");

    let script = "echo FILE=$(cat /etc/app/token); echo ENV=$API_KEY; \
                  echo UID=$(id -u); ls -ln /etc/app/token; sleep 300";
    let mut c = sh("main", script);
    c.user = "1234:1234".into();
    c.volume_mounts.push(v1::VolumeMount {
        name: "app".into(),
        mount_path: "/etc/app".into(),
        read_only: true,
    });
    c.env.push(v1::EnvVar {
        name: "API_KEY".into(),
        secret_key_ref: Some(v1::SecretKeyRef {
            name: "app".into(),
            key: "api-key".into(),
        }),
        ..Default::default()
    });
    let spec = v1::InstanceSpec {
        containers: vec![c],
        volumes: vec![v1::Volume {
            name: "app".into(),
            source: Some(v1::volume::Source::Secret(v1::SecretVolume {
                secret_name: "app".into(),
            })),
        }],
        restart_policy: RestartPolicy::Never as i32,
        termination_grace_period_seconds: 1,
        ..Default::default()
    };
    let instance = env.run_spec("reader", spec).await;
    let log = wait_for(TIMEOUT, || async {
        let log = log_of(&env, &instance, "main");
        log.contains("/etc/app/token").then_some(log)
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the container never listed its secret file; status {:?}",
            instance.status
        )
    });
    let token_text = String::from_utf8(token.clone()).expect("ascii");
    let key_text = String::from_utf8(api_key.clone()).expect("ascii");
    assert!(log.contains(&format!("FILE={token_text}")), "{log:?}");
    assert!(log.contains(&format!("ENV={key_text}")), "{log:?}");
    assert!(log.contains("UID=1234"), "{log:?}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("-r--------") && l.contains(" 1234 ")),
        "the file is the container user's, mode 0400: {log:?}"
    );

    // On the node the value is a file under the tmpfs secrets dir (owned by the
    // container user's uid on the host, which a user namespace may shift).
    let m = instance.meta();
    let dir = env
        .secrets_dir
        .path()
        .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
        .join("app");
    let file = dir.join("token");
    assert_eq!(std::fs::read(&file).expect("secret file"), token);
    assert_ne!(
        std::fs::metadata(&file).expect("meta").uid(),
        0,
        "not root's"
    );

    delete(&env, "reader").await;
    wait_for(TIMEOUT, || async { (!dir.exists()).then_some(()) })
        .await
        .expect("secret files removed with the Instance");
    env.stop().await;
}
