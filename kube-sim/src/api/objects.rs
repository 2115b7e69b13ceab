//! Writes beyond plain create/update/delete: patches, the status subresource, deletecollection,
//! and pod logs.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Query, json_response};
use crate::SimState;
use crate::resources::{PODS, ResourceDef};
use crate::selectors::Selector;
use crate::status::ApiError;
use crate::store::Write;

/// The `dryRun` parameter of a write whose options are of kind `options` (`CreateOptions`, ...):
/// every value must be `All`, as the API server's `ValidateDryRun` requires (422 otherwise).
pub(super) fn dry_run(query: &Query, options: &str) -> Result<Write, ApiError> {
    dry_run_values(query.all("dryRun").iter().map(String::as_str), options)
}

/// A delete's `dryRun`, from the query or, as kubectl and client-go send it, from the
/// `DeleteOptions` body.
pub(super) fn delete_dry_run(query: &Query, body: &[u8]) -> Result<Write, ApiError> {
    let options: Value = match body.iter().all(u8::is_ascii_whitespace) {
        true => Value::Null,
        false => serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?,
    };
    let from_body = options.get("dryRun").and_then(Value::as_array).into_iter().flatten().map(|v| v.as_str().unwrap_or_default());
    dry_run_values(query.all("dryRun").iter().map(String::as_str).chain(from_body), "DeleteOptions")
}

fn dry_run_values<'a>(values: impl Iterator<Item = &'a str>, options: &str) -> Result<Write, ApiError> {
    let values: Vec<&str> = values.collect();
    if values.is_empty() {
        return Ok(Write::Commit);
    }
    if let Some(bad) = values.iter().find(|v| **v != "All") {
        return Err(ApiError::invalid(options, "", &[("dryRun", "FieldValueNotSupported", format!("Unsupported value: {bad:?}: supported values: \"All\""))]));
    }
    Ok(Write::DryRun)
}

/// RFC 7386 JSON merge patch. Strategic merge patches from kubectl are applied the same way
/// after their `$patch`/`$setElementOrder` directives are dropped: for the objects kubectl
/// edits (maps of scalars, whole lists) the result is the same.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("just made it an object");
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Drops strategic-merge directives (`$patch`, `$setElementOrder/...`, `$retainKeys`, ...) at
/// every depth.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// A PATCH body, decoded by its content type.
enum PatchBody {
    Merge(Value),
    Json(json_patch::Patch),
}

impl PatchBody {
    /// Decodes `body` as `content_type` says: merge, strategic merge (its directives dropped)
    /// or JSON patch; any other type is 415.
    fn parse(content_type: &str, body: &[u8]) -> Result<PatchBody, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let bad_json = |e: serde_json::Error| ApiError::bad_request(format!("error decoding patch: {e}"));
        Ok(match media {
            "application/merge-patch+json" => PatchBody::Merge(serde_json::from_slice(body).map_err(bad_json)?),
            "application/strategic-merge-patch+json" => {
                let mut value: Value = serde_json::from_slice(body).map_err(bad_json)?;
                strip_directives(&mut value);
                PatchBody::Merge(value)
            }
            "application/json-patch+json" => PatchBody::Json(serde_json::from_slice(body).map_err(bad_json)?),
            other => return Err(ApiError::unsupported_media_type(other)),
        })
    }

    /// `target` with the patch applied; it must stay an object.
    fn apply(&self, target: &Value, kind: &str, name: &str) -> Result<Value, ApiError> {
        let mut patched = target.clone();
        match self {
            PatchBody::Merge(p) => merge_patch(&mut patched, p),
            PatchBody::Json(p) => json_patch::patch(&mut patched, p).map_err(|e| ApiError::invalid(kind, name, &[("patch", "FieldValueInvalid", e.to_string())]))?,
        }
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch must leave an object"));
        }
        Ok(patched)
    }
}

/// Applies a PATCH body of `content_type` to `target` (what `/scale` patches: a view of an
/// object rather than the object).
pub(super) fn apply_patch(target: &Value, content_type: &str, body: &[u8], kind: &str, name: &str) -> Result<Value, ApiError> {
    PatchBody::parse(content_type, body)?.apply(target, kind, name)
}

/// `PATCH` an object (or its status).
#[allow(clippy::too_many_arguments)]
pub(super) fn patch(
    state: &SimState,
    resource: &'static ResourceDef,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
    status_only: bool,
    write: Write,
) -> Result<Arc<Value>, ApiError> {
    let patch = PatchBody::parse(content_type, body)?;
    state.store.modify_with(resource, namespace, name, write, |object| {
        let patched = patch.apply(object, resource.kind, name)?;
        *object = if status_only { set_status(object.clone(), patched.get("status").cloned()) } else { patched };
        Ok(())
    })
}

fn set_status(mut object: Value, status: Option<Value>) -> Value {
    match status {
        Some(status) => object["status"] = status,
        None => {
            object.as_object_mut().map(|m| m.remove("status"));
        }
    }
    object
}

/// `PUT .../status`: only the status of the body is taken.
pub(super) fn update_status(state: &SimState, resource: &'static ResourceDef, namespace: &str, name: &str, body: Value, write: Write) -> Result<Arc<Value>, ApiError> {
    state.store.modify_with(resource, namespace, name, write, |object| {
        if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != object.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::conflict(resource.plural, name));
        }
        *object = set_status(object.clone(), body.get("status").cloned());
        Ok(())
    })
}

/// `DELETE <collection>`: deletes every object matching the selectors, returns the list.
pub(super) fn delete_collection(state: &SimState, resource: &'static ResourceDef, namespace: Option<&str>, query: &Query, body: &[u8]) -> Result<Response, ApiError> {
    let write = delete_dry_run(query, body)?;
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), resource)?;
    let (_, items) = state.store.list(resource, namespace);
    let mut deleted = Vec::new();
    for item in items.iter().filter(|o| selector.matches(o)) {
        let ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = item["metadata"]["name"].as_str().unwrap_or_default();
        // Already gone (deleted concurrently) is fine for a collection delete.
        if let Ok(last) = state.store.delete_with(resource, ns, name, write) {
            deleted.push(last);
        }
    }
    let body = json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(),
                      "metadata": {"resourceVersion": state.store.current_rv().to_string()}, "items": deleted});
    Ok(json_response(200, &body))
}

/// `GET .../pods/{name}/log`: a few plausible lines per container (the simulator runs no
/// container main process that writes logs).
pub(super) fn logs(state: &SimState, namespace: &str, name: &str, query: &Query) -> Result<Response, ApiError> {
    let pod = state.store.get(&PODS, namespace, name).ok_or_else(|| ApiError::not_found("pods", name))?;
    let containers: Vec<&str> = pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let container = match query.get("container") {
        Some(c) if containers.contains(&c) => c,
        Some(c) => return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => containers[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let started = pod.pointer("/status/startTime").and_then(Value::as_str).unwrap_or_default();
    let text = format!("{started} kube-sim: container {container} of pod {namespace}/{name} started\n{started} kube-sim: ready\n");
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "list": [3], "$patch": "merge"}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "list": [3]}));
    }

    #[test]
    fn strategic_directives_are_dropped() {
        let mut patch = json!({"metadata": {"$setElementOrder/labels": [], "labels": {"x": "1"}}, "$retainKeys": []});
        strip_directives(&mut patch);
        assert_eq!(patch, json!({"metadata": {"labels": {"x": "1"}}}));
    }
}
