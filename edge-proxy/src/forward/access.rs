//! What a forward may do, asked once, the same way everywhere: the worker's preflight, a
//! reload and `POST /config/check` (for each new or changed forward), and `/forwards/{name}/…`
//! for a request carrying its own token.
//!
//! A forward needs, in its namespace, `get`, `list` and `watch` on pods (its resolver watches
//! them), `create` on `pods/portforward` (every tunnel), and `get`, `list` and `watch` on its
//! target's kind when that is a service, a deployment or a statefulset. Each is one
//! SelfSubjectAccessReview; they run at once, all bounded by the forward's `preflightTimeout`.
//! A cluster that does not answer in time is [`Verdict::Unanswered`], never a denial: a reload
//! is not held up by a slow API server, and the worker asks again.

use std::time::Duration;

use serde_json::{Value, json};

use super::spec::{ForwardSpec, Target};
use crate::clusters::Clusters;
use crate::identity::Identity;

/// One permission: `verb` on `group`/`resource`(/`subresource`) in the forward's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// `get`, `list`, `watch`, `create`.
    pub verb: &'static str,
    /// The API group (`""` for the core group).
    pub group: &'static str,
    /// The resource, plural.
    pub resource: &'static str,
    /// The subresource, or `""`.
    pub subresource: &'static str,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        let sub = if self.subresource.is_empty() { String::new() } else { format!("/{}", self.subresource) };
        write!(f, "{} {}{group}{sub}", self.verb, self.resource)
    }
}

const fn permission(verb: &'static str, group: &'static str, resource: &'static str, subresource: &'static str) -> Permission {
    Permission { verb, group, resource, subresource }
}

/// Creating a tunnel: what every port-forward needs.
pub const PORT_FORWARD: Permission = permission("create", "", "pods", "portforward");

/// Every permission `spec` needs.
pub fn needed(spec: &ForwardSpec) -> Vec<Permission> {
    let mut needed: Vec<Permission> = ["get", "list", "watch"].into_iter().map(|verb| permission(verb, "", "pods", "")).collect();
    needed.push(PORT_FORWARD);
    let owner = match spec.target {
        Target::Service(_) => Some(("", "services")),
        Target::Deployment(_) => Some(("apps", "deployments")),
        Target::StatefulSet(_) => Some(("apps", "statefulsets")),
        Target::Pod(_) | Target::Selector(_) => None,
    };
    if let Some((group, resource)) = owner {
        needed.extend(["get", "list", "watch"].into_iter().map(|verb| permission(verb, group, resource, "")));
    }
    needed
}

/// The answer to a forward's reviews.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every review allowed.
    Allowed,
    /// At least one denied: the message names the cluster, namespace and each permission
    /// denied, with the cluster's reason when it gave one.
    Denied(String),
    /// The cluster did not answer them all (in time, or at all): why.
    Unanswered(String),
}

/// Asks `client` for each of `permissions` in `namespace` at once, within `timeout`.
pub async fn review(client: &kube::Client, cluster: &str, namespace: &str, permissions: &[Permission], timeout: Duration) -> Verdict {
    let asks = futures::future::join_all(permissions.iter().map(|p| ask(client, namespace, *p)));
    let answers = match tokio::time::timeout(timeout, asks).await {
        Ok(answers) => answers,
        Err(_) => return Verdict::Unanswered(format!("cluster {cluster} did not answer the access reviews within {:.1} s (preflightTimeout)", timeout.as_secs_f64())),
    };
    let mut denied = Vec::new();
    for (permission, answer) in permissions.iter().zip(answers) {
        match answer {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => denied.push(format!("{permission}{reason}")),
            Err(why) => return Verdict::Unanswered(format!("cluster {cluster}: {why}")),
        }
    }
    if denied.is_empty() { Verdict::Allowed } else { Verdict::Denied(format!("the credentials for cluster {cluster} may not, in namespace {namespace}: {}", denied.join(", "))) }
}

/// [`review`] of everything `spec` needs, as the proxy's own credentials.
pub async fn review_forward(client: &kube::Client, spec: &ForwardSpec) -> Verdict {
    review(client, &spec.cluster, &spec.namespace, &needed(spec), spec.preflight_timeout).await
}

/// What a reload learnt of the forwards it would start.
#[derive(Debug, Default)]
pub struct Reviews {
    /// One error per forward denied, naming its entry.
    pub denied: Vec<String>,
    /// Forwards allowed.
    pub allowed: Vec<String>,
    /// Forwards the cluster did not answer for: applied unchecked.
    pub unanswered: Vec<String>,
}

/// [`review_forward`] of each of `forwards` (all at once) on its cluster in `clusters`; a
/// forward whose cluster is not there is left to the check that says so.
pub async fn review_all(forwards: &[&ForwardSpec], clusters: &Clusters) -> Reviews {
    let verdicts = futures::future::join_all(forwards.iter().map(|spec| async move {
        let cluster = clusters.get(&spec.cluster)?;
        let verdict = match cluster.client(&Identity::Proxy) {
            Ok(client) => review_forward(&client, spec).await,
            Err(error) => Verdict::Unanswered(format!("no client for cluster {}: {error}", spec.cluster)),
        };
        Some((*spec, verdict))
    }))
    .await;
    let mut reviews = Reviews::default();
    for (spec, verdict) in verdicts.into_iter().flatten() {
        match verdict {
            Verdict::Allowed => reviews.allowed.push(spec.name.clone()),
            Verdict::Denied(why) => reviews.denied.push(format!("{}: forbidden: {why}", spec.origin)),
            Verdict::Unanswered(why) => {
                tracing::warn!(forward = %spec.name, %why, "a reload applies a forward its cluster did not answer the access reviews for");
                reviews.unanswered.push(spec.name.clone());
            }
        }
    }
    reviews
}

/// One SelfSubjectAccessReview: `Ok(Ok(()))` allowed, `Ok(Err(" (reason)"))` denied (the
/// reason, if the cluster gave one), `Err` no answer.
async fn ask(client: &kube::Client, namespace: &str, permission: Permission) -> Result<Result<(), String>, String> {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "namespace": namespace,
            "verb": permission.verb,
            "group": permission.group,
            "resource": permission.resource,
            "subresource": permission.subresource,
        }}
    });
    let request = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(review.to_string().into_bytes())
        .map_err(|e| e.to_string())?;
    let answer = client.request::<Value>(request).await.map_err(|error| format!("the access review failed: {error}"))?;
    match answer.pointer("/status/allowed") {
        Some(Value::Bool(true)) => Ok(Ok(())),
        Some(Value::Bool(false)) => Ok(Err(answer.pointer("/status/reason").and_then(Value::as_str).filter(|r| !r.is_empty()).map(|r| format!(" ({r})")).unwrap_or_default())),
        _ => Err("the access review had no answer".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::spec::PortRef;

    #[test]
    fn a_forward_needs_its_pods_its_tunnel_and_its_targets_kind() {
        let spec = |target| ForwardSpec::new("f", "c", "ns", target, PortRef::Number(80), 0);
        let shown = |spec: &ForwardSpec| needed(spec).iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(&spec(Target::Pod("p".into()))), ["get pods", "list pods", "watch pods", "create pods/portforward"]);
        let deployment = shown(&spec(Target::Deployment("d".into())));
        assert_eq!(deployment[4..], ["get deployments.apps", "list deployments.apps", "watch deployments.apps"]);
        assert_eq!(shown(&spec(Target::Service("s".into())))[6], "watch services");
    }
}
