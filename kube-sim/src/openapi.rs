//! The Kubernetes v1.32 schemas of the served types (`openapi/definitions.json`, extracted from
//! the published definitions by `openapi/extract.py`), loaded once. They give strategic merge
//! patches their merge keys and strategies (`strategic`).

use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::resources::ResourceDef;

/// The component schemas, by definition name (`io.k8s.api.core.v1.Pod`).
static DEFINITIONS: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../openapi/definitions.json")).unwrap_or_else(|e| {
        tracing::error!("the embedded OpenAPI definitions do not parse: {e}");
        Map::new()
    })
});

/// Every component schema.
pub fn definitions() -> &'static Map<String, Value> {
    &DEFINITIONS
}

/// The definition name of a kind: the schema whose `x-kubernetes-group-version-kind` names it.
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    DEFINITIONS.iter().find(|(_, schema)| gvks(schema).any(|(g, v, k)| g == group && v == version && k == kind)).map(|(name, _)| name.as_str())
}

/// The definition name of a served type.
pub fn definition_of(resource: &ResourceDef) -> Option<&'static str> {
    definition_name(resource.group, resource.version, resource.kind)
}

/// The group/version/kinds a schema declares.
pub fn gvks(schema: &Value) -> impl Iterator<Item = (&str, &str, &str)> {
    schema["x-kubernetes-group-version-kind"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|gvk| (gvk["group"].as_str().unwrap_or_default(), gvk["version"].as_str().unwrap_or_default(), gvk["kind"].as_str().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::ALL;

    #[test]
    fn every_served_type_has_a_schema() {
        for r in ALL.iter().filter(|r| !r.is_metrics()) {
            assert!(definition_of(r).is_some(), "no schema for {}", r.kind);
        }
        assert_eq!(definition_name("autoscaling", "v1", "Scale"), Some("io.k8s.api.autoscaling.v1.Scale"));
    }

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => map.iter().for_each(|(k, v)| if k == "$ref" { out.extend(v.as_str()) } else { refs(v, out) }),
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        definitions().values().for_each(|schema| refs(schema, &mut all));
        assert!(all.len() > 100);
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(definitions().contains_key(name), "{r} dangles");
        }
    }
}
