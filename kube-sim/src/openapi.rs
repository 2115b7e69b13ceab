//! The Kubernetes v1.32 schemas of the served types (`openapi/definitions.json`, extracted from
//! the published definitions by `openapi/extract.py`), loaded once. They give strategic merge
//! patches their merge keys and strategies (`strategic`), `fieldValidation` its unknown fields,
//! and `/openapi/v3` its documents (`kubectl explain`, kubectl's validation probe): one per
//! group/version, its served types' paths and the schemas they reference, built and serialized
//! at start.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::resources::{ALL, ResourceDef};

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

/// The definitions `roots` reference, directly or through others, with the roots.
fn closure(roots: impl IntoIterator<Item = String>) -> Map<String, Value> {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => map.iter().for_each(|(k, v)| match (k.as_str(), v.as_str()) {
                ("$ref", Some(r)) => out.extend(r.rsplit('/').next().map(str::to_owned)),
                _ => refs(v, out),
            }),
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut todo: Vec<String> = roots.into_iter().collect();
    let mut kept = Map::new();
    while let Some(name) = todo.pop() {
        if kept.contains_key(&name) {
            continue;
        }
        if let Some(schema) = DEFINITIONS.get(&name) {
            refs(schema, &mut todo);
            kept.insert(name, schema.clone());
        }
    }
    kept
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

/// The operations of one served type: list/create/deletecollection on the collection, and
/// get/replace/patch/delete on an object (a review only creates).
fn paths_of(r: &ResourceDef, definition: &str, paths: &mut Map<String, Value>) {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": true});
    let write_params = json!([query("dryRun"), query("fieldManager"), query("fieldValidation")]);
    let op = |action: &str, id: &str, body: Option<Value>, response: &str, params: &Value| {
        let mut op = json!({"operationId": format!("{id}{}", r.kind), "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                            "parameters": params, "responses": {"200": {"description": "OK", "content": json_content(schema_ref(response))},
                                                                  "401": {"description": "Unauthorized"}}});
        if let Some(body) = body {
            op["requestBody"] = json!({"content": body, "required": true});
        }
        op
    };
    let base = r.group_version_path();
    let (collection, item) = match r.namespaced {
        true => (format!("{base}/namespaces/{{namespace}}/{}", r.plural), format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)),
        false => (format!("{base}/{}", r.plural), format!("{base}/{}/{{name}}", r.plural)),
    };
    let body = json_content(schema_ref(definition));
    let status = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
    if r.is_review() {
        paths.insert(collection, json!({"post": op("create", "create", Some(body), definition, &write_params)}));
        return;
    }
    let list = format!("{definition}List");
    let list_params = json!([query("labelSelector"), query("fieldSelector"), query("limit"), query("continue"), query("resourceVersion"), query("watch")]);
    paths.insert(
        collection,
        json!({
            "get": op("list", "list", None, &list, &list_params),
            "post": op("post", "create", Some(body.clone()), definition, &write_params),
            "delete": op("deletecollection", "deleteCollection", None, status, &json!([query("labelSelector"), query("fieldSelector"), query("dryRun")])),
        }),
    );
    let patch = json!({
        "application/json-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
        "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
        "application/strategic-merge-patch+json": {"schema": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"}},
    });
    paths.insert(
        item,
        json!({
            "get": op("get", "read", None, definition, &json!([])),
            "put": op("put", "replace", Some(body), definition, &write_params),
            "patch": op("patch", "patch", Some(patch), definition, &write_params),
            "delete": op("delete", "delete", None, status, &json!([query("dryRun")])),
        }),
    );
}

/// The document of one group/version (`api/v1`, `apis/apps/v1`), if it serves a type with a
/// schema.
fn document(group: &str, version: &str) -> Option<Value> {
    let served: Vec<(&ResourceDef, &str)> = ALL.iter().filter(|r| r.group == group && r.version == version).filter_map(|r| Some((*r, definition_of(r)?))).collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut roots: Vec<String> = ["Status", "DeleteOptions", "WatchEvent"].iter().map(|k| format!("io.k8s.apimachinery.pkg.apis.meta.v1.{k}")).collect();
    for (r, definition) in &served {
        paths_of(r, definition, &mut paths);
        roots.push((*definition).to_owned());
        roots.push(format!("{definition}List"));
        if r.has_scale() {
            roots.push("io.k8s.api.autoscaling.v1.Scale".to_owned());
        }
    }
    let mut schemas = closure(roots);
    // What the patch operations take: any JSON.
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_owned(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths, "components": {"schemas": schemas}}))
}

/// The served documents, by path under `/openapi/v3/`, serialized, each with its hash.
static DOCUMENTS: LazyLock<BTreeMap<String, (String, bytes::Bytes)>> = LazyLock::new(|| {
    let mut gvs: Vec<(&str, &str)> = Vec::new();
    for gv in ALL.iter().map(|r| (r.group, r.version)) {
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    gvs.into_iter()
        .filter_map(|(g, v)| {
            let doc = document(g, v)?;
            let key = if g.is_empty() { format!("api/{v}") } else { format!("apis/{g}/{v}") };
            let bytes = bytes::Bytes::from(doc.to_string());
            Some((key, (format!("{:016X}", fnv(&bytes)), bytes)))
        })
        .collect()
});

/// FNV-1a of `bytes`: the documents' hash, which changes when they do.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Builds the documents now rather than on the first request.
pub fn load() {
    LazyLock::force(&DOCUMENTS);
}

/// `GET /openapi/v3`: the index of group/version documents.
pub fn index() -> Value {
    let paths: Map<String, Value> = DOCUMENTS.iter().map(|(key, (hash, _))| (key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}))).collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/g/v}`: the serialized document.
pub fn group_version(path: &str) -> Option<bytes::Bytes> {
    DOCUMENTS.get(path).map(|(_, bytes)| bytes.clone())
}

/// The fields of `object` that the schema `definition` does not declare, as paths
/// (`spec.template.spec.containers[0].imagePullPolcy`): what `fieldValidation` reports.
pub fn unknown_fields(object: &Value, definition: &str) -> Vec<String> {
    fn walk(value: &Value, schema: Option<&Value>, path: &str, out: &mut Vec<String>) {
        let Some(schema) = schema.map(resolve) else { return };
        if schema.get("x-kubernetes-preserve-unknown-fields").is_some_and(|v| v == true) {
            return;
        }
        match value {
            Value::Object(map) => {
                let properties = schema.get("properties").and_then(Value::as_object);
                let additional = schema.get("additionalProperties").filter(|a| a.is_object());
                if properties.is_none() && additional.is_none() {
                    return;
                }
                for (key, v) in map {
                    let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    match properties.and_then(|p| p.get(key)).or(additional) {
                        Some(field) => walk(v, Some(field), &child, out),
                        None => out.push(child),
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, schema.get("items"), &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    fn resolve(node: &Value) -> &Value {
        crate::strategic::resolve(&DEFINITIONS, node)
    }
    let mut out = Vec::new();
    walk(object, DEFINITIONS.get(definition), "", &mut out);
    out
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
    fn documents_carry_each_types_schema_and_its_patch_probe() {
        load();
        let index = index();
        assert!(index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap().starts_with("/openapi/v3/api/v1?hash="));
        assert!(index["paths"].get("apis/metrics.k8s.io/v1beta1").is_none(), "no schemas to serve");
        let apps: Value = serde_json::from_slice(&group_version("apis/apps/v1").unwrap()).unwrap();
        let schemas = &apps["components"]["schemas"];
        assert_eq!(schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert!(schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"].is_object());
        assert!(schemas.get("io.k8s.api.core.v1.Node").is_none(), "only what apps/v1 references");
        let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    }

    #[test]
    fn unknown_fields_are_found_at_any_depth() {
        let deployment = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"any": "x"}, "bogus": 1},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolcy": "Always", "resources": {"limits": {"cpu": "1"}}}]}}}});
        assert_eq!(unknown_fields(&deployment, "io.k8s.api.apps.v1.Deployment"), ["metadata.bogus", "spec.template.spec.containers[0].imagePullPolcy"]);
        let cm = serde_json::json!({"metadata": {"name": "c"}, "data": {"k": "v"}});
        assert!(unknown_fields(&cm, "io.k8s.api.core.v1.ConfigMap").is_empty());
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
