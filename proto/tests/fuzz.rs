//! Property tests for the parsers that take input from outside (`make fuzz` runs them
//! with many more cases): quantities, label and field selectors, YAML manifests and the
//! protobuf decoding of every request message. Each must return `Ok` or an error that
//! names the problem, never panic; where a printer exists, printing and parsing again
//! gives the same value.

use std::collections::BTreeMap;

use hypermesh_api::manifest::{parse_yaml, to_yaml};
use hypermesh_api::quantity::Quantity;
use hypermesh_api::selector::{FieldSelector, LabelSelector};
use hypermesh_api::v1;
use proptest::prelude::*;
use serde_json::Value;

/// Text that looks like a quantity often enough to reach every branch.
fn quantity_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+]?[0-9]{0,45}(\\.[0-9]{0,45})?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[a-zA-Z-]{0,3})?",
        "[ +.0-9a-zA-Z-]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn quantity_parse_never_panics_and_round_trips(input in quantity_like()) {
        match input.parse::<Quantity>() {
            Ok(q) => {
                let printed = q.to_string();
                let again: Quantity = printed
                    .parse()
                    .map_err(|e| TestCaseError::fail(format!("{printed:?} (from {input:?}): {e}")))?;
                prop_assert_eq!(again, q, "printed {:?}", printed);
            }
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.is_empty());
                if !input.trim().is_empty() {
                    prop_assert!(message.contains(&format!("{input:?}")), "{message} does not name {input:?}");
                }
            }
        }
    }

    #[test]
    fn quantity_from_millis_round_trips(millis in any::<u128>()) {
        let q = Quantity::from_millis(millis);
        let printed = q.to_string();
        let again: Quantity = printed
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{printed:?}: {e}")))?;
        prop_assert_eq!(again, q);
    }

    #[test]
    fn label_selector_parse_never_panics_and_round_trips(
        input in prop_oneof![
            "[a-z0-9./!=(), -]{0,40}|(notin|in|!|=|!=|==|,|\\(|\\)|[a-z]{1,5}| ){0,12}",
            any::<String>(),
        ]
    ) {
        match LabelSelector::parse(&input) {
            Ok(selector) => {
                let printed = selector.to_string();
                let again = LabelSelector::parse(&printed)
                    .map_err(|e| TestCaseError::fail(format!("{printed:?} (from {input:?}): {e}")))?;
                prop_assert_eq!(again, selector);
            }
            Err(e) => {
                prop_assert!(!e.detail.is_empty());
                prop_assert_eq!(&e.selector, &input);
            }
        }
    }

    #[test]
    fn label_selector_from_labels_matches_them(
        labels in proptest::collection::btree_map("[a-z]([a-z0-9-]{0,8}[a-z0-9])?", "[a-z0-9]{0,8}", 0..6)
    ) {
        let selector = LabelSelector::from_map(&labels);
        prop_assert!(selector.matches(&labels));
        let again = LabelSelector::parse(&selector.to_string())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(again.matches(&labels));
        let mut other = labels.clone();
        other.insert("zz-not-there".into(), "x".into());
        prop_assert!(again.matches(&other));
        prop_assert!(again.is_empty() || !again.matches(&BTreeMap::new()));
    }

    #[test]
    fn field_selector_parse_never_panics(input in "[a-zA-Z.!=, _]{0,40}|\\PC{0,40}") {
        const SUPPORTED: &[&str] = &["metadata.name", "metadata.namespace", "spec.nodeName"];
        if let Err(e) = FieldSelector::parse(&input, SUPPORTED) {
            prop_assert!(!e.detail.is_empty());
        }
    }

    #[test]
    fn manifest_parse_of_any_text_never_panics(input in prop_oneof![
        any::<String>(),
        "(apiVersion|kind|metadata|name|spec|---|:|-|\\{|\\}|\\[|\\]|&a|\\*a|!!str|\\n|  | |[a-z0-9]{1,6}){0,40}",
    ]) {
        if let Err(e) = parse_yaml(&input) {
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn manifest_parse_of_structured_documents_errs_by_field_or_round_trips(
        docs in proptest::collection::vec(manifest_document(), 1..4)
    ) {
        let text = serde_saphyr::to_string_multiple(&docs)
            .map_err(|e| TestCaseError::reject(e.to_string()))?;
        match parse_yaml(&text) {
            Ok(objects) => {
                let printed = to_yaml(&objects);
                let again = parse_yaml(&printed)
                    .map_err(|e| TestCaseError::fail(format!("re-parsing {printed:?}: {e}")))?;
                prop_assert_eq!(again, objects);
            }
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                prop_assert!(e.document >= 1 && e.document <= docs.len(), "{e} for {text}");
            }
        }
    }
}

/// A manifest document built from the real field names, with wrong types and unknown
/// fields mixed in.
fn manifest_document() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("Workload".to_string()),
        Just("Namespace".to_string()),
        Just("Secret".to_string()),
        Just("Route".to_string()),
        Just("Node".to_string()),
        Just("Asset".to_string()),
        Just("Instance".to_string()),
        Just("Role".to_string()),
        "[A-Za-z]{0,8}",
    ];
    let api_version = prop_oneof![
        4 => Just(Value::String("hypermesh.io/v1".into())),
        1 => Just(Value::String("v1".into())),
        1 => leaf(),
    ];
    (kind, api_version, value_tree()).prop_map(|(kind, api_version, body)| {
        let mut map = match body {
            Value::Object(map) => map,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("spec".into(), other);
                m
            }
        };
        map.insert("apiVersion".into(), api_version);
        map.insert("kind".into(), Value::String(kind));
        Value::Object(map)
    })
}

const FIELD_NAMES: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "replicas",
    "selector",
    "template",
    "containers",
    "image",
    "command",
    "args",
    "env",
    "value",
    "ports",
    "containerPort",
    "protocol",
    "resources",
    "cpu",
    "memory",
    "gpu",
    "storage",
    "privacy",
    "nodeSelector",
    "tolerations",
    "key",
    "operator",
    "effect",
    "restartPolicy",
    "data",
    "type",
    "rules",
    "verbs",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "nodeName",
    "phase",
    "conditions",
    "backends",
    "port",
    "unknownField",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-z0-9.:/-]{0,12}".prop_map(Value::String),
        Just(Value::String("500m".into())),
        Just(Value::String("128Mi".into())),
        Just(Value::String("PUBLIC_NETWORK".into())),
        Just(Value::String("2026-12-06T11:00:00Z".into())),
    ]
}

fn value_tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(FIELD_NAMES), inner), 0..6)
                .prop_map(|fields| Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                )),
        ]
    })
}

/// Decoding arbitrary bytes as `M` returns `Ok` or `Err`; what decodes re-encodes to
/// bytes that decode to the same message (compared by encoding, so NaN floats and
/// dropped unknown fields do not matter).
fn decode_round_trips<M: prost::Message + Default>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(message) = M::decode(bytes) else {
        return Ok(());
    };
    let encoded = message.encode_to_vec();
    let again = M::decode(encoded.as_slice())
        .map_err(|e| TestCaseError::fail(format!("re-decoding our own encoding: {e}")))?;
    prop_assert_eq!(again.encode_to_vec(), encoded);
    Ok(())
}

/// Arbitrary bytes, and bytes that are mostly well-formed protobuf fields.
fn wire_bytes() -> impl Strategy<Value = Vec<u8>> {
    let field = (
        1u32..40,
        0u8..6,
        proptest::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(number, wire_type, payload)| {
            let mut out = Vec::new();
            let key = u64::from((number << 3) | u32::from(wire_type));
            prost::encoding::encode_varint(key, &mut out);
            match wire_type {
                0 => prost::encoding::encode_varint(
                    payload
                        .iter()
                        .fold(0u64, |a, b| a.wrapping_mul(31) ^ u64::from(*b)),
                    &mut out,
                ),
                2 => {
                    prost::encoding::encode_varint(payload.len() as u64, &mut out);
                    out.extend_from_slice(&payload);
                }
                _ => out.extend_from_slice(&payload),
            }
            out
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(field, 0..12).prop_map(|fields| fields.concat()),
    ]
}

macro_rules! decode_properties {
    ($($name:ident => $ty:ty),* $(,)?) => {
        proptest! {
            $(
                #[test]
                fn $name(bytes in wire_bytes()) {
                    decode_round_trips::<$ty>(&bytes)?;
                }
            )*
        }
    };
}

decode_properties! {
    decode_agent_hello => v1::AgentHello,
    decode_asset => v1::Asset,
    decode_bind_request => v1::BindRequest,
    decode_certificate => v1::Certificate,
    decode_delete_request => v1::DeleteRequest,
    decode_event => v1::Event,
    decode_exec_input => v1::ExecInput,
    decode_get_request => v1::GetRequest,
    decode_image_import_request => v1::ImageImportRequest,
    decode_instance => v1::Instance,
    decode_issue_request => v1::IssueRequest,
    decode_join_request => v1::JoinRequest,
    decode_join_token => v1::JoinToken,
    decode_lease => v1::Lease,
    decode_list_request => v1::ListRequest,
    decode_logs_request => v1::LogsRequest,
    decode_namespace => v1::Namespace,
    decode_node => v1::Node,
    decode_proof_challenge_request => v1::ProofChallengeRequest,
    decode_renew_request => v1::RenewRequest,
    decode_role => v1::Role,
    decode_role_binding => v1::RoleBinding,
    decode_route => v1::Route,
    decode_secret => v1::Secret,
    decode_session_frame => v1::SessionFrame,
    decode_watch_request => v1::WatchRequest,
    decode_workload => v1::Workload,
}
