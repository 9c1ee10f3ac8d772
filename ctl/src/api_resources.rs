//! `hmctl api-resources`: the kinds of the API, their short names and scope.

use hypermesh_api::resource::KIND_INFOS;

use crate::table::Table;

/// The table `hmctl api-resources` prints.
pub fn table() -> Table {
    let mut table = Table::new(["NAME", "SHORTNAMES", "NAMESPACED", "KIND"]);
    for info in KIND_INFOS {
        table.push(vec![
            info.plural.to_string(),
            info.short_names.join(","),
            info.namespaced.to_string(),
            info.kind.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_kind() {
        let text = table().render();
        assert!(text.starts_with("NAME "), "{text}");
        let workloads: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("workloads "))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(workloads, ["workloads", "wl", "true", "Workload"], "{text}");
        assert_eq!(text.lines().count(), KIND_INFOS.len() + 1);
    }
}
