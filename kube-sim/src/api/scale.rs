//! `…/{deployments,replicasets}/{name}/scale`: the autoscaling/v1 `Scale` view of a workload's
//! replica count, which `kubectl scale` and autoscalers read and write.

use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Query, json_response, objects, read_bytes, read_json};
use crate::SimState;
use crate::auth::Identity;
use crate::resources::ResourceDef;
use crate::status::ApiError;

/// The Scale of a workload: its identity, desired and observed replicas and its selector.
fn scale_of(workload: &Value) -> Value {
    let meta = &workload["metadata"];
    let mut selector: Vec<String> = workload
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    selector.sort();
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                        "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
           "spec": {"replicas": workload.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
           "status": {"replicas": workload.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0), "selector": selector.join(",")}})
}

/// A Scale's `spec.replicas`, which must be a non-negative integer.
fn replicas_of(scale: &Value, name: &str) -> Result<i64, ApiError> {
    match scale.pointer("/spec/replicas").and_then(Value::as_i64) {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(ApiError::invalid("Scale", name, &[("spec.replicas", "FieldValueInvalid", format!("Invalid value: {}: must be greater than or equal to 0", scale.pointer("/spec/replicas").unwrap_or(&Value::Null)))])),
    }
}

/// Serves GET, PUT and PATCH of the scale subresource.
pub(super) async fn serve(state: &SimState, identity: &Identity, resource: &'static ResourceDef, namespace: &str, name: &str, query: &Query, request: Request) -> Result<Response, ApiError> {
    let ns = Some(namespace);
    let current = || state.store.get(resource, namespace, name).ok_or_else(|| ApiError::not_found(resource.plural, name));
    let method = request.method().clone();
    let wanted = match method {
        Method::GET => {
            identity.authorize("get", resource, ns)?;
            return Ok(json_response(200, &scale_of(&*current()?)));
        }
        Method::PUT => {
            identity.authorize("update", resource, ns)?;
            let body = read_json(request, "Scale").await?;
            if let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                && !rv.is_empty()
                && Some(rv) != current()?.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            {
                return Err(ApiError::conflict(resource.plural, name));
            }
            replicas_of(&body, name)?
        }
        Method::PATCH => {
            identity.authorize("patch", resource, ns)?;
            let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body = read_bytes(request).await?;
            let patched = objects::apply_patch(&scale_of(&*current()?), "io.k8s.api.autoscaling.v1.Scale", &content_type, &body, "Scale", name)?;
            replicas_of(&patched, name)?
        }
        _ => return Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {method}"))),
    };
    let write = objects::dry_run(query, if method == Method::PUT { "UpdateOptions" } else { "PatchOptions" })?;
    let updated = state.store.modify_with(resource, namespace, name, write, |workload| {
        workload["spec"]["replicas"] = json!(wanted);
        Ok(())
    })?;
    Ok(json_response(200, &scale_of(&updated)))
}
