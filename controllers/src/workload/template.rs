//! Instances stamped from a Workload's template: the template hash that names a
//! revision, the labels, owner reference and name every Instance gets, and how an
//! Instance's health reads (available, ready, terminal).

use hypermesh_api::Resource;
use hypermesh_api::v1::{
    Instance, InstancePhase, InstanceSpec, InstanceTemplate, ObjectMeta, OwnerReference, Workload,
};
use hypermesh_api::validation::shorten_name;
use prost::Message;
use rand::Rng;

/// Label carrying the hash of the template an Instance was stamped from.
pub const TEMPLATE_HASH_LABEL: &str = "hypermesh.io/template-hash";

/// Hex characters of the BLAKE3 digest kept as the template hash.
const HASH_LEN: usize = 10;
/// Characters of the hash in Instance names.
const NAME_HASH_LEN: usize = 5;
/// Random characters ending each Instance name.
const NAME_SUFFIX_LEN: usize = 5;

/// The first 10 hex characters of the BLAKE3 hash of the encoded template. Maps
/// encode in key order, so equal templates always hash alike.
pub fn template_hash(template: &InstanceTemplate) -> String {
    let digest = blake3::hash(&template.encode_to_vec());
    digest.to_hex()[..HASH_LEN].to_string()
}

/// The owner reference of `instance` that marks its managing Workload.
pub fn controller_of(instance: &Instance) -> Option<&OwnerReference> {
    instance
        .meta()
        .owner_references
        .iter()
        .find(|r| r.controller && r.kind == Workload::KIND)
}

/// The template hash label of `instance` (empty when missing).
pub fn hash_of(instance: &Instance) -> &str {
    instance
        .meta()
        .labels
        .get(TEMPLATE_HASH_LABEL)
        .map_or("", String::as_str)
}

/// The phase of `instance`.
pub fn phase_of(instance: &Instance) -> InstancePhase {
    instance
        .status
        .as_ref()
        .and_then(|s| InstancePhase::try_from(s.phase).ok())
        .unwrap_or(InstancePhase::Unspecified)
}

/// True when the Instance's `Ready` condition is `True`.
pub fn is_ready(instance: &Instance) -> bool {
    instance.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Available: running and ready.
pub fn is_available(instance: &Instance) -> bool {
    phase_of(instance) == InstancePhase::Running && is_ready(instance)
}

/// Finished for good (FAILED or SUCCEEDED): the Workload replaces it.
pub fn is_terminal(instance: &Instance) -> bool {
    matches!(
        phase_of(instance),
        InstancePhase::Failed | InstancePhase::Succeeded
    )
}

/// Being deleted (waiting for finalizers).
pub fn is_deleting(instance: &Instance) -> bool {
    instance.meta().deletion_timestamp.is_some()
}

/// A new Instance of `workload` from `template` (whose hash is `hash`): the
/// template's labels plus the hash label, its annotations, an owner reference to the
/// Workload as controller, a fresh random name, and the template's spec.
pub fn stamp_instance(workload: &Workload, template: &InstanceTemplate, hash: &str) -> Instance {
    let meta = workload.meta();
    let mut labels = template.labels.clone();
    labels.insert(TEMPLATE_HASH_LABEL.to_string(), hash.to_string());
    Instance {
        metadata: Some(ObjectMeta {
            name: instance_name(&meta.name, hash),
            namespace: meta.namespace.clone(),
            labels,
            annotations: template.annotations.clone(),
            owner_references: vec![OwnerReference {
                kind: Workload::KIND.to_string(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                controller: true,
            }],
            ..Default::default()
        }),
        spec: Some(InstanceSpec {
            containers: template.containers.clone(),
            volumes: template.volumes.clone(),
            node_selector: template.node_selector.clone(),
            affinity: template.affinity.clone(),
            tolerations: template.tolerations.clone(),
            privacy: template.privacy,
            restart_policy: template.restart_policy,
            priority: template.priority,
            termination_grace_period_seconds: template.termination_grace_period_seconds,
            node_name: String::new(),
            assigned_assets: Vec::new(),
        }),
        status: None,
    }
}

/// `{workload}-{hash[..5]}-{5 random lowercase alphanumerics}`, with the Workload's
/// name shortened when the result would be too long to be a valid name.
pub fn instance_name(workload: &str, hash: &str) -> String {
    let hash = hash.get(..NAME_HASH_LEN).unwrap_or(hash);
    let suffix = format!("-{hash}-{}", random_suffix(NAME_SUFFIX_LEN));
    format!("{}{suffix}", shorten_name(workload, suffix.len()))
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypermesh_api::v1::{Container, WorkloadSpec};
    use hypermesh_api::validation::dns_subdomain_problem;

    fn template(image: &str) -> InstanceTemplate {
        InstanceTemplate {
            labels: [("app".to_string(), "web".to_string())].into(),
            containers: vec![Container {
                name: "main".into(),
                image: image.into(),
                ..Default::default()
            }],
            priority: 7,
            ..Default::default()
        }
    }

    #[test]
    fn hash_is_stable_and_changes_with_the_template() {
        let a = template_hash(&template("web:1"));
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, template_hash(&template("web:1")));
        assert_ne!(a, template_hash(&template("web:2")));
        let expected = blake3::hash(&template("web:1").encode_to_vec()).to_hex();
        assert_eq!(a, expected[..10]);
    }

    #[test]
    fn stamped_instances_carry_labels_owner_name_and_spec() {
        let workload = Workload {
            metadata: Some(ObjectMeta {
                name: "web".into(),
                namespace: "team".into(),
                uid: "u-1".into(),
                ..Default::default()
            }),
            spec: Some(WorkloadSpec::default()),
            status: None,
        };
        let t = template("web:1");
        let hash = template_hash(&t);
        let i = stamp_instance(&workload, &t, &hash);
        let meta = i.meta();
        assert_eq!(meta.namespace, "team");
        assert_eq!(meta.labels["app"], "web");
        assert_eq!(meta.labels[TEMPLATE_HASH_LABEL], hash);
        let owner = controller_of(&i).unwrap();
        assert_eq!((owner.name.as_str(), owner.uid.as_str()), ("web", "u-1"));
        let prefix = format!("web-{}-", &hash[..5]);
        assert!(meta.name.starts_with(&prefix), "{}", meta.name);
        let suffix = &meta.name[prefix.len()..];
        assert_eq!(suffix.len(), 5);
        assert!(
            suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        let spec = i.spec.unwrap();
        assert_eq!(spec.containers, t.containers);
        assert_eq!(spec.priority, 7);
        assert!(spec.node_name.is_empty());
    }

    #[test]
    fn long_workload_names_still_make_valid_instance_names() {
        let long = format!("{}-{}", "a".repeat(61), "b");
        let name = instance_name(&long, "0123456789");
        assert_eq!(dns_subdomain_problem(&name), None, "{name}");
        let part = "x".repeat(60);
        let dotted = format!("{part}.{part}.{part}.{}", "y".repeat(52));
        assert_eq!(dns_subdomain_problem(&dotted), None);
        let name = instance_name(&dotted, "0123456789");
        assert_eq!(dns_subdomain_problem(&name), None, "{name}");
        assert_eq!(shorten_name("web", 12), "web");
        assert_eq!(shorten_name("abc-def", 59), "abc");
    }
}
