//! The manifests in `examples/` (which README's tour applies) parse and pass admission.

use hypermesh_api::DynObject;
use hypermesh_api::validation::validate;

fn check(object: &DynObject) -> Result<(), String> {
    let result = match object {
        DynObject::Namespace(o) => validate(o),
        DynObject::Workload(o) => validate(o),
        DynObject::Route(o) => validate(o),
        DynObject::Instance(o) => validate(o),
        DynObject::Secret(o) => validate(o),
        DynObject::Node(o) => validate(o),
        DynObject::Asset(o) => validate(o),
        DynObject::Lease(o) => validate(o),
        DynObject::Event(o) => validate(o),
        DynObject::Role(o) => validate(o),
        DynObject::RoleBinding(o) => validate(o),
        DynObject::JoinToken(o) => validate(o),
        DynObject::Certificate(o) => validate(o),
    };
    result.map_err(|e| e.to_string())
}

#[test]
fn every_example_parses_and_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut kinds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("manifest is readable");
        let objects = hypermesh_api::manifest::parse_yaml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for object in &objects {
            if let Err(e) = check(object) {
                panic!(
                    "{}: {} {}: {e}",
                    file.display(),
                    object.kind(),
                    object.meta().name
                );
            }
            kinds.push(object.kind());
        }
    }
    for kind in ["Namespace", "Workload", "Route"] {
        assert!(kinds.contains(&kind), "examples/ has no {kind}");
    }
}
