//! Tables of every kind: as many cells as headers, and the values shown.

#[test]
fn byte_quantities_read_well_in_tables() {
    assert_eq!(readable_bytes("24683652Ki"), "23.5Gi");
    assert_eq!(readable_bytes("256Gi"), "256Gi");
    assert_eq!(readable_bytes("512"), "512");
    assert_eq!(readable_bytes("<none>"), "<none>");
}

use super::*;
use hypermesh_api::time::now;

fn meta(name: &str) -> Option<v1::ObjectMeta> {
    Some(v1::ObjectMeta {
        name: name.into(),
        creation_timestamp: Some(now()),
        ..Default::default()
    })
}

#[test]
fn title_cases_enum_names() {
    assert_eq!(title_case("RUNNING"), "Running");
    assert_eq!(title_case("PRIVATE_NETWORK"), "PrivateNetwork");
}

#[test]
fn workload_row_shows_ready_of_desired() {
    let w = Workload {
        metadata: meta("web"),
        spec: Some(v1::WorkloadSpec {
            replicas: 3,
            ..Default::default()
        }),
        status: Some(v1::WorkloadStatus {
            ready_replicas: 2,
            updated_replicas: 3,
            available_replicas: 2,
            ..Default::default()
        }),
    };
    assert_eq!(w.cells(false), ["web", "2/3", "3", "2", "0s"]);
    assert_eq!(Workload::headers(true).len(), w.cells(true).len());
}

#[test]
fn node_row_reads_ready_condition_role_and_capacity() {
    let mut node = Node {
        metadata: meta("host-1"),
        spec: Some(v1::NodeSpec {
            unschedulable: true,
            ..Default::default()
        }),
        status: Some(v1::NodeStatus {
            capacity: [("cpu".to_string(), "8".to_string())].into(),
            conditions: vec![Condition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    };
    node.meta_mut()
        .labels
        .insert(ROLE_LABEL.into(), "gpu".into());
    let cells = node.cells(false);
    assert_eq!(
        cells,
        [
            "host-1",
            "Ready,SchedulingDisabled",
            "gpu",
            "0s",
            NONE,
            "8",
            NONE,
            NONE
        ]
    );
    assert_eq!(Node::headers(true).len(), node.cells(true).len());
}

#[test]
fn every_kind_has_as_many_cells_as_headers() {
    fn check<K: Columns>() {
        let obj = K::default();
        for wide in [false, true] {
            assert_eq!(K::headers(wide).len(), obj.cells(wide).len(), "{}", K::KIND);
        }
    }
    check::<Namespace>();
    check::<Node>();
    check::<Asset>();
    check::<Secret>();
    check::<Route>();
    check::<Workload>();
    check::<Instance>();
    check::<Lease>();
    check::<Event>();
}

#[test]
fn events_name_their_object() {
    let e = Event {
        metadata: meta("web.1"),
        spec: Some(v1::EventSpec {
            involved_object: Some(v1::ObjectReference {
                kind: "Workload".into(),
                name: "web".into(),
                ..Default::default()
            }),
            reason: "ScalingUp".into(),
            r#type: "Normal".into(),
            message: "created web-abc".into(),
            ..Default::default()
        }),
        status: None,
    };
    assert_eq!(
        e.cells(false),
        [
            "0s",
            "Normal",
            "ScalingUp",
            "workload/web",
            "1",
            "created web-abc"
        ]
    );
}

#[test]
fn events_list_oldest_first_by_when_they_last_happened() {
    let at = |name: &str, seconds: i64| Event {
        metadata: meta(name),
        spec: Some(v1::EventSpec {
            last_timestamp: Some(pbjson_types::Timestamp { seconds, nanos: 0 }),
            count: 3,
            ..Default::default()
        }),
        status: None,
    };
    let mut events = vec![at("c", 30), at("a", 50), at("b", 10)];
    Event::sort_listing(&mut events);
    let names: Vec<&str> = events.iter().map(|e| e.meta().name.as_str()).collect();
    assert_eq!(names, ["b", "c", "a"]);
    assert_eq!(events[0].cells(false)[4], "3", "COUNT column");
}
