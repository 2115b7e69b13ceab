//! Strategic merge patch (`application/strategic-merge-patch+json`), sans IO: a JSON merge patch
//! whose lists are merged element by element where the type's schema says so
//! (`x-kubernetes-patch-strategy: merge` with `x-kubernetes-patch-merge-key`: containers by
//! `name`, ports by `containerPort`, ...), with the directives kubectl sends:
//!
//! - `$patch: replace | delete | merge` on a map or as an element of a merged list;
//! - `$retainKeys: [...]`: the map keeps only these keys;
//! - `$setElementOrder/FIELD: [...]`: the order of the merged list `FIELD`;
//! - `$deleteFromPrimitiveList/FIELD: [...]`: values taken out of the list of scalars `FIELD`.
//!
//! `$setElementOrder` orders as the API server's `normalizeElementOrder` does: the elements the
//! list names in its order, the others (the server's, which the patch left alone) in their
//! original order, interleaved so that a server-only element stays before a listed one it
//! preceded in the original list.

use serde_json::{Map, Value};

/// A patch that cannot be applied; the API server answers these 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct PatchError(String);

fn error<T>(message: impl Into<String>) -> Result<T, PatchError> {
    Err(PatchError(message.into()))
}

/// A position in the schemas: the schema of the value being patched, if known. Without one,
/// lists are replaced as in a JSON merge patch.
#[derive(Clone, Copy)]
pub struct Schema<'a> {
    definitions: &'a Map<String, Value>,
    node: Option<&'a Value>,
}

/// What a field's schema says about patching its list.
#[derive(Default)]
struct ListMeta<'a> {
    merge: bool,
    key: Option<&'a str>,
}

impl<'a> Schema<'a> {
    /// The schema of definition `name` among `definitions` (OpenAPI v3 component schemas, their
    /// `$ref`s `#/components/schemas/NAME`).
    pub fn new(definitions: &'a Map<String, Value>, name: Option<&str>) -> Self {
        Schema { definitions, node: name.and_then(|n| definitions.get(n)) }
    }

    fn at(self, node: Option<&'a Value>) -> Self {
        Schema { node: node.map(|n| self.resolve(n)), ..self }
    }

    fn resolve(&self, node: &'a Value) -> &'a Value {
        resolve(self.definitions, node)
    }

    /// The raw schema of field `key` (with its patch extensions), and the schema of its value.
    fn field(self, key: &str) -> (Option<&'a Value>, Self) {
        let Some(node) = self.node else { return (None, self) };
        let property = node.get("properties").and_then(|p| p.get(key)).or_else(|| node.get("additionalProperties").filter(|a| a.is_object()));
        (property, self.at(property))
    }

    fn items(self) -> Self {
        self.at(self.node.and_then(|n| n.get("items")))
    }
}

/// `node`, or the schema among `definitions` its `$ref` names (followed through further
/// references).
pub fn resolve<'a>(definitions: &'a Map<String, Value>, mut node: &'a Value) -> &'a Value {
    // References nest at most a few deep; the bound only guards against a cycle.
    for _ in 0..8 {
        match node.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()).and_then(|n| definitions.get(n)) {
            Some(target) => node = target,
            None => break,
        }
    }
    node
}

impl<'a> ListMeta<'a> {
    fn of(property: Option<&'a Value>) -> Self {
        let Some(property) = property else { return ListMeta::default() };
        let strategy = property.get("x-kubernetes-patch-strategy").and_then(Value::as_str).unwrap_or_default();
        ListMeta { merge: strategy.split(',').any(|s| s == "merge"), key: property.get("x-kubernetes-patch-merge-key").and_then(Value::as_str) }
    }
}

/// `original` with the strategic merge `patch` applied, both objects of the type `schema`
/// describes.
pub fn apply(original: &Value, patch: &Value, schema: Schema<'_>) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else { return error("a strategic merge patch must be a JSON object") };
    let base = original.as_object().cloned().unwrap_or_default();
    Ok(Value::Object(merge_map(base, patch, schema)?.unwrap_or_default()))
}

fn directive(map: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "replace" | "delete" | "merge") => Ok(Some(s)),
        Some(other) => error(format!("Unknown patch type: {other}")),
    }
}

/// Merges `patch` into `original`; `None` when the patch deletes the map (`$patch: delete`).
fn merge_map(mut original: Map<String, Value>, patch: &Map<String, Value>, schema: Schema<'_>) -> Result<Option<Map<String, Value>>, PatchError> {
    match directive(patch)? {
        Some("delete") => return Ok(None),
        Some("replace") => original.clear(),
        _ => {}
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let Some(retain) = retain.as_array() else { return error("$retainKeys must be a list of field names") };
        original.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    // The lists to be ordered, as they were before the patch: the order of the elements the
    // patch leaves alone.
    let mut before = Vec::new();
    for (key, order) in patch {
        let Some(field) = key.strip_prefix("$setElementOrder/") else { continue };
        let Some(order) = order.as_array() else { return error(format!("{key} must be a list")) };
        let meta = ListMeta::of(schema.field(field).0);
        check_order(patch.get(field), order, meta.key)?;
        let server = match original.get(field) {
            Some(Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        before.push((field, order, meta.key, server));
    }
    for (key, values) in patch {
        let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") else { continue };
        let Some(values) = values.as_array() else { return error(format!("{key} must be a list")) };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|v| !values.contains(v));
        }
    }
    for (key, value) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
        let (property, sub) = schema.field(key);
        let previous = original.remove(key);
        let merged = match value {
            Value::Null => None,
            Value::Object(p) => {
                let base = match previous {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                merge_map(base, p, sub)?.map(Value::Object)
            }
            Value::Array(p) => {
                let meta = ListMeta::of(property);
                let base = match previous {
                    Some(Value::Array(a)) if meta.merge => a,
                    _ => Vec::new(),
                };
                Some(Value::Array(merge_list(base, p, &meta, sub.items())?))
            }
            scalar => Some(scalar.clone()),
        };
        if let Some(merged) = merged {
            original.insert(key.clone(), merged);
        }
    }
    for (field, order, key, server) in before {
        if let Some(Value::Array(list)) = original.get_mut(field) {
            *list = set_element_order(std::mem::take(list), order, &server, key);
        }
    }
    Ok(Some(original))
}

/// Merges the elements of `patch` into `original` (by `meta.key` for maps, by value for
/// scalars), or replaces the list when its strategy is not `merge`.
fn merge_list(mut original: Vec<Value>, patch: &[Value], meta: &ListMeta<'_>, items: Schema<'_>) -> Result<Vec<Value>, PatchError> {
    let replace = patch.iter().any(|e| e.as_object().is_some_and(|m| m.len() == 1 && m.get("$patch").and_then(Value::as_str) == Some("replace")));
    if !meta.merge || replace {
        original.clear();
    }
    for element in patch {
        let Value::Object(element) = element else {
            if !meta.merge || !original.contains(element) {
                original.push(element.clone());
            }
            continue;
        };
        let directive = directive(element)?;
        if replace && element.len() == 1 && directive == Some("replace") {
            continue;
        }
        let Some(key) = meta.key.filter(|_| meta.merge) else {
            original.extend(merge_map(Map::new(), element, items)?.map(Value::Object));
            continue;
        };
        let Some(wanted) = element.get(key) else { return error(format!("map: {} does not contain declared merge key: {key}", Value::Object(element.clone()))) };
        let position = original.iter().position(|e| e.get(key) == Some(wanted));
        match (directive, position) {
            (Some("delete"), _) => original.retain(|e| e.get(key) != Some(wanted)),
            (_, Some(i)) => {
                let base = original[i].as_object().cloned().unwrap_or_default();
                match merge_map(base, element, items)? {
                    Some(merged) => original[i] = Value::Object(merged),
                    None => drop(original.remove(i)),
                }
            }
            (_, None) => original.extend(merge_map(Map::new(), element, items)?.map(Value::Object)),
        }
    }
    Ok(original)
}

/// What identifies a list element: its merge key's value, or the element itself in a list of
/// scalars.
fn identity<'v>(element: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(key) => element.get(key),
        None => Some(element),
    }
}

/// Where `element` is in `list`, by identity.
fn position_in(list: &[Value], element: &Value, key: Option<&str>) -> Option<usize> {
    let id = identity(element, key)?;
    list.iter().position(|e| identity(e, key) == Some(id))
}

/// The API server's check that the patch's elements come in the `$setElementOrder` list's order
/// (deletions and directives aside): the patch list must be a subsequence of it.
fn check_order(patch_list: Option<&Value>, order: &[Value], key: Option<&str>) -> Result<(), PatchError> {
    let Some(Value::Array(patch_list)) = patch_list.filter(|_| !order.is_empty()) else { return Ok(()) };
    let mut ordered = order.iter();
    for element in patch_list {
        if element.as_object().is_some_and(|m| m.contains_key("$patch")) {
            continue;
        }
        let id = identity(element, key);
        if id.is_none() || !ordered.any(|o| identity(o, key) == id) {
            return error(format!("The order in patch list: {} doesn't match $setElementOrder list: {}", Value::Array(patch_list.clone()), Value::Array(order.to_vec())));
        }
    }
    Ok(())
}

/// `merged` (the list after the patch) in the order of `$setElementOrder` `order`: the elements
/// it names sorted by it, the others sorted by their place in `server` (the list before the
/// patch), and the two sequences merged, a server-only element going first where both are in
/// `server` and it came first there.
fn set_element_order(merged: Vec<Value>, order: &[Value], server: &[Value], key: Option<&str>) -> Vec<Value> {
    let (mut listed, mut server_only): (Vec<Value>, Vec<Value>) = merged.into_iter().partition(|e| position_in(order, e, key).is_some());
    listed.sort_by_key(|e| position_in(order, e, key));
    // Stable, and those not in `server` (none, for a patch that passed `check_order`) last.
    server_only.sort_by_key(|e| position_in(server, e, key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(listed.len() + server_only.len());
    let (mut listed, mut server_only) = (listed.into_iter().peekable(), server_only.into_iter().peekable());
    loop {
        let server_first = match (server_only.peek(), listed.peek()) {
            (Some(s), Some(l)) => matches!((position_in(server, s, key), position_in(server, l, key)), (Some(si), Some(li)) if si < li),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if server_first { server_only.next() } else { listed.next() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_patch(original: Value, patch: Value) -> Result<Value, PatchError> {
        apply(&original, &patch, Schema::new(crate::openapi::definitions(), Some("io.k8s.api.core.v1.Pod")))
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "spec": {"containers": containers}})
    }

    #[test]
    fn containers_merge_by_name_and_keep_their_ports() {
        let original = pod(json!([{"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "busybox"}]));
        let patched = pod_patch(original, json!({"spec": {"$setElementOrder/containers": [{"name": "web"}, {"name": "side"}], "containers": [{"name": "web", "image": "nginx:2"}]}})).unwrap();
        assert_eq!(patched["spec"]["containers"], json!([{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "busybox"}]));
    }

    #[test]
    fn new_elements_append_and_set_element_order_orders() {
        let original = pod(json!([{"name": "a"}, {"name": "b"}]));
        let patched = pod_patch(original.clone(), json!({"spec": {"containers": [{"name": "c"}]}})).unwrap();
        assert_eq!(patched["spec"]["containers"], json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
        let order = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}], "containers": [{"name": "c"}]}});
        assert_eq!(pod_patch(original, order).unwrap()["spec"]["containers"], json!([{"name": "c"}, {"name": "b"}, {"name": "a"}]));
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect()
    }

    fn ordered(server: &[&str], patch: Value) -> Vec<String> {
        let containers: Vec<Value> = server.iter().map(|n| json!({"name": n, "image": "v1"})).collect();
        let patched = pod_patch(pod(json!(containers)), json!({"spec": patch})).unwrap();
        names(&patched["spec"]["containers"]).into_iter().map(str::to_owned).collect()
    }

    fn by_name(names: &[&str]) -> Value {
        names.iter().map(|n| json!({"name": n})).collect()
    }

    #[test]
    fn set_element_order_interleaves_the_untouched_elements_where_they_were() {
        // `b` and `c` came before `d` on the server: they stay before it, `d` before `a` as asked.
        let patch = json!({"$setElementOrder/containers": by_name(&["d", "a"]), "containers": [{"name": "d", "image": "v2"}, {"name": "a", "image": "v2"}]});
        assert_eq!(ordered(&["a", "b", "c", "d"], patch), ["b", "c", "d", "a"]);
        // `b` sat between `a` and `c`; the order keeps `a` first and `b` before `c`.
        assert_eq!(ordered(&["a", "b", "c"], json!({"$setElementOrder/containers": by_name(&["a", "c"])})), ["a", "b", "c"]);
        // Reordered without a change: `c`, after both on the server, stays last.
        assert_eq!(ordered(&["a", "b", "c"], json!({"$setElementOrder/containers": by_name(&["b", "a"])})), ["b", "a", "c"]);
    }

    #[test]
    fn set_element_order_places_new_elements_by_the_order_alone() {
        // `x` is new: nothing on the server to compare it with, so it goes where the order puts it,
        // and `b` waits until a listed element that came after it on the server (`c`).
        let patch = json!({"$setElementOrder/containers": by_name(&["a", "x", "c"]), "containers": [{"name": "x", "image": "v1"}]});
        assert_eq!(ordered(&["a", "b", "c"], patch), ["a", "x", "b", "c"]);
        let patch = json!({"$setElementOrder/containers": by_name(&["x", "a"]), "containers": [{"name": "x", "image": "v1"}]});
        assert_eq!(ordered(&["a", "b"], patch), ["x", "a", "b"]);
        // A deleted element is gone, whatever the order says.
        let patch = json!({"$setElementOrder/containers": by_name(&["c", "a"]), "containers": [{"name": "b", "$patch": "delete"}]});
        assert_eq!(ordered(&["a", "b", "c"], patch), ["c", "a"]);
    }

    #[test]
    fn set_element_order_of_a_primitive_list() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c", "d"]}});
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["d", "e", "a"], "finalizers": ["e"]}});
        // `b` and `c` came before `d`; `e` is new and follows `d`, as the order says.
        assert_eq!(pod_patch(original, patch).unwrap()["metadata"]["finalizers"], json!(["b", "c", "d", "e", "a"]));
    }

    #[test]
    fn a_patch_list_out_of_its_set_element_order_is_an_error() {
        let patch = json!({"$setElementOrder/containers": by_name(&["a", "b"]), "containers": [{"name": "b", "image": "v2"}, {"name": "a", "image": "v2"}]});
        let err = pod_patch(pod(by_name(&["a", "b"])), json!({"spec": patch})).unwrap_err();
        assert!(err.0.contains("doesn't match $setElementOrder list"), "{err}");
    }

    #[test]
    fn ports_merge_by_container_port_and_env_by_name() {
        let original = pod(json!([{"name": "web", "ports": [{"containerPort": 80, "name": "http"}], "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]));
        let patch = json!({"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}], "env": [{"name": "B", "value": "3"}]}]}});
        let c = &pod_patch(original, patch).unwrap()["spec"]["containers"][0];
        assert_eq!(c["ports"], json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}]));
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]));
    }

    #[test]
    fn patch_delete_and_replace_directives() {
        let original = pod(json!([{"name": "a", "image": "x"}, {"name": "b"}]));
        let deleted = pod_patch(original.clone(), json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}})).unwrap();
        assert_eq!(deleted["spec"]["containers"], json!([{"name": "b"}]));
        let replaced = pod_patch(original.clone(), json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}})).unwrap();
        assert_eq!(replaced["spec"]["containers"], json!([{"name": "z"}]));
        let labels = pod_patch(original.clone(), json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}})).unwrap();
        assert_eq!(labels["metadata"]["labels"], json!({"c": "3"}));
        let gone = pod_patch(original.clone(), json!({"metadata": {"labels": {"$patch": "delete"}}})).unwrap();
        assert_eq!(gone["metadata"], json!({"name": "p"}));
        assert!(pod_patch(original, json!({"$patch": "bogus"})).unwrap_err().0.contains("Unknown patch type"));
    }

    #[test]
    fn null_deletes_and_missing_merge_key_is_an_error() {
        let original = pod(json!([{"name": "a", "image": "x"}]));
        let patched = pod_patch(original.clone(), json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "a", "image": null}]}})).unwrap();
        assert_eq!(patched["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(patched["spec"]["containers"], json!([{"name": "a"}]));
        let err = pod_patch(original, json!({"spec": {"containers": [{"image": "y"}]}})).unwrap_err();
        assert!(err.0.contains("does not contain declared merge key: name"), "{err}");
    }

    #[test]
    fn retain_keys_drops_the_other_volume_source() {
        let original = json!({"spec": {"containers": [], "volumes": [{"name": "v", "emptyDir": {}}]}});
        let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}}]}});
        assert_eq!(pod_patch(original, patch).unwrap()["spec"]["volumes"], json!([{"name": "v", "configMap": {"name": "cm"}}]));
    }

    #[test]
    fn primitive_lists_merge_and_delete_from_primitive_list() {
        let finalizers = json!({"metadata": {"finalizers": ["a", "b"]}});
        // `finalizers` is merged: new values join, `$deleteFromPrimitiveList` takes some out.
        let patched = pod_patch(finalizers.clone(), json!({"metadata": {"finalizers": ["c", "a"], "$deleteFromPrimitiveList/finalizers": ["b"]}})).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "c"]));
        // `args` has no merge strategy: replaced.
        let original = pod(json!([{"name": "a", "args": ["1", "2"]}]));
        let patched = pod_patch(original, json!({"spec": {"containers": [{"name": "a", "args": ["3"]}]}})).unwrap();
        assert_eq!(patched["spec"]["containers"][0]["args"], json!(["3"]));
    }

    #[test]
    fn without_a_schema_lists_are_replaced() {
        let patched = apply(&json!({"l": [{"name": "a"}], "x": 1}), &json!({"l": [{"name": "b"}]}), Schema::new(&Map::new(), None)).unwrap();
        assert_eq!(patched, json!({"l": [{"name": "b"}], "x": 1}));
    }
}
