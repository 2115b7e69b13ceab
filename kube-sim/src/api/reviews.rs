//! `SelfSubjectAccessReview` and `SelfSubjectRulesReview` (authorization.k8s.io/v1): what
//! `kubectl auth can-i` asks. Created, answered from the caller's identity (`auth`), never
//! stored. Every authenticated user may ask, as the API server's `system:basic-user` allows.

use serde_json::{Value, json};

use crate::auth::{Identity, Rule};
use crate::resources::{ResourceDef, SELF_SUBJECT_ACCESS_REVIEWS};
use crate::status::ApiError;

/// Answers a review `body` of type `resource`: the request as sent, with its `status`.
pub(super) fn answer(identity: &Identity, resource: &'static ResourceDef, mut body: Value) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    let status = if std::ptr::eq(resource, &SELF_SUBJECT_ACCESS_REVIEWS) { access(identity, &body)? } else { rules(identity, &body) };
    body["kind"] = json!(resource.kind);
    body["apiVersion"] = json!(resource.api_version());
    if !body.get("metadata").is_some_and(Value::is_object) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["status"] = status;
    Ok(body)
}

fn access(identity: &Identity, review: &Value) -> Result<Value, ApiError> {
    let spec = review.get("spec");
    let text = |attributes: &Value, field: &str| attributes.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let allowed = match (spec.and_then(|s| s.get("resourceAttributes")), spec.and_then(|s| s.get("nonResourceAttributes"))) {
        (Some(attributes), None) => {
            let namespace = text(attributes, "namespace");
            // For namespaces themselves, the namespace in question is the one named.
            let scope = match (text(attributes, "resource").as_str(), text(attributes, "name")) {
                ("namespaces", name) if !name.is_empty() => name,
                _ => namespace,
            };
            identity.allows_resource(Some(scope.as_str()).filter(|s| !s.is_empty()))
        }
        (None, Some(attributes)) => identity.allows_path(&text(attributes, "verb"), &text(attributes, "path")),
        _ => {
            return Err(ApiError::invalid("SelfSubjectAccessReview", "", &[("spec.resourceAttributes", "FieldValueRequired", "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".to_owned())]));
        }
    };
    let reason = if allowed { format!("kube-sim: {} may use this namespace", identity.name()) } else { String::new() };
    Ok(json!({"allowed": allowed, "reason": reason}))
}

fn rules(identity: &Identity, review: &Value) -> Value {
    let namespace = review.pointer("/spec/namespace").and_then(Value::as_str).unwrap_or_default();
    let (resource_rules, path_rules) = identity.rules(namespace);
    let resource_rules: Vec<Value> = resource_rules.iter().map(|Rule { verbs, groups, resources }| json!({"verbs": verbs, "apiGroups": groups, "resources": resources})).collect();
    let path_rules: Vec<Value> = path_rules.iter().map(|rule| json!({"verbs": rule.verbs, "nonResourceURLs": rule.resources})).collect();
    json!({"resourceRules": resource_rules, "nonResourceRules": path_rules, "incomplete": false})
}
