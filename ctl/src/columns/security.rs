//! Table columns of the security kinds: Role, RoleBinding, JoinToken, Certificate.

use hypermesh_api::Resource;
use hypermesh_api::time::age;
use hypermesh_api::v1::{Certificate, JoinToken, Role, RoleBinding};

use super::{Columns, NONE, created, or_none};

impl Columns for Role {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["NAME", "RULES", "AGE"];
        if wide {
            h.push("VERBS/RESOURCES");
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let rules = self.spec.clone().unwrap_or_default().rules;
        let mut c = vec![
            self.meta().name.clone(),
            rules.len().to_string(),
            created(self),
        ];
        if wide {
            let text: Vec<String> = rules
                .iter()
                .map(|r| format!("{}:{}", r.verbs.join(","), r.resources.join(",")))
                .collect();
            c.push(or_none(text.join(" ")));
        }
        c
    }
}

impl Columns for RoleBinding {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "ROLE", "SUBJECTS", "NAMESPACES", "AGE"]
    }

    fn cells(&self, _wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let subjects: Vec<String> = spec
            .subjects
            .iter()
            .map(|s| format!("{}:{}", s.kind, s.name))
            .collect();
        let namespaces = if spec.namespaces.is_empty() {
            "*".to_string()
        } else {
            spec.namespaces.join(",")
        };
        vec![
            self.meta().name.clone(),
            spec.role,
            or_none(subjects.join(",")),
            namespaces,
            created(self),
        ]
    }
}

impl Columns for JoinToken {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "USES", "EXPIRES", "NODES", "AGE"]
    }

    fn cells(&self, _wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let uses = if spec.uses == 0 {
            format!("{}/unlimited", status.used)
        } else {
            format!("{}/{}", status.used, spec.uses)
        };
        let expires = spec.expires.map_or_else(
            || NONE.to_string(),
            |t| {
                let at = hypermesh_api::time::to_system_time(&t);
                match at.duration_since(std::time::SystemTime::now()) {
                    Ok(left) => format!(
                        "in {}",
                        hypermesh_api::time::format_duration_short(left.as_secs())
                    ),
                    Err(_) => format!("expired {} ago", age(Some(&t))),
                }
            },
        );
        vec![
            self.meta().name.clone(),
            uses,
            expires,
            or_none(status.nodes.join(",")),
            created(self),
        ]
    }
}

impl Columns for Certificate {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["SERIAL", "IDENTITY", "REVOKED", "EXPIRES", "AGE"];
        if wide {
            h.extend(["GROUPS", "NODE-ID"]);
        }
        h
    }

    fn cells(&self, wide: bool) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let expires = spec.not_after.map_or_else(
            || NONE.to_string(),
            |t| {
                let at = hypermesh_api::time::to_system_time(&t);
                match at.duration_since(std::time::SystemTime::now()) {
                    Ok(left) => format!(
                        "in {}",
                        hypermesh_api::time::format_duration_short(left.as_secs())
                    ),
                    Err(_) => "expired".to_string(),
                }
            },
        );
        let mut c = vec![
            self.meta().name.clone(),
            spec.identity,
            spec.revoked.to_string(),
            expires,
            created(self),
        ];
        if wide {
            c.push(or_none(spec.groups.join(",")));
            c.push(or_none(spec.node_id.chars().take(16).collect::<String>()));
        }
        c
    }
}
