//! The resources the simulator serves, and the discovery documents describing them
//! (reference `kube-api-semantics.md` §2 and §3).

use serde_json::{Value, json};

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; empty for core/v1.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Plural, as in the URL.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Field labels accepted by field selectors besides `metadata.name`/`metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Whether the API server tracks `metadata.generation` for this type (it does for
    /// Deployments; not for ConfigMaps, nor for Pods before 1.33).
    pub generation: bool,
}

impl ResourceDef {
    /// `apiVersion` of objects of this type.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_owned() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The list kind, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The URL prefix of the group/version: `/api/v1` or `/apis/{group}/{version}`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() { format!("/api/{}", self.version) } else { format!("/apis/{}/{}", self.group, self.version) }
    }

    /// Whether this is the core `Pod` type.
    pub fn is_pods(&self) -> bool {
        std::ptr::eq(self, &PODS)
    }

    /// Whether the type has a `/scale` subresource (autoscaling/v1 `Scale`).
    pub fn has_scale(&self) -> bool {
        std::ptr::eq(self, &DEPLOYMENTS) || std::ptr::eq(self, &REPLICASETS)
    }

    /// Whether this is a review: created and answered, never stored, listed or watched.
    pub fn is_review(&self) -> bool {
        std::ptr::eq(self, &SELF_SUBJECT_ACCESS_REVIEWS) || std::ptr::eq(self, &SELF_SUBJECT_RULES_REVIEWS)
    }

    /// Whether this is a `metrics.k8s.io` type: computed on read (`api::metrics`), never stored.
    pub fn is_metrics(&self) -> bool {
        std::ptr::eq(self, &NODE_METRICS) || std::ptr::eq(self, &POD_METRICS)
    }

    /// The verbs discovery lists.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.is_review() {
            &["create"]
        } else if self.is_metrics() {
            &["get", "list"]
        } else {
            VERBS
        }
    }

    /// Whether this is the `Namespace` type.
    pub fn is_namespaces(&self) -> bool {
        std::ptr::eq(self, &NAMESPACES)
    }
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// core/v1 namespaces.
pub static NAMESPACES: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "namespaces", singular: "namespace", kind: "Namespace",
    namespaced: false, short_names: &["ns"], field_labels: &["status.phase"], generation: false,
};
/// core/v1 pods.
pub static PODS: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "pods", singular: "pod", kind: "Pod",
    namespaced: true, short_names: &["po"], field_labels: &["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"], generation: false,
};
/// core/v1 services.
pub static SERVICES: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "services", singular: "service", kind: "Service",
    namespaced: true, short_names: &["svc"], field_labels: &[], generation: false,
};
/// core/v1 configmaps.
pub static CONFIGMAPS: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "configmaps", singular: "configmap", kind: "ConfigMap",
    namespaced: true, short_names: &["cm"], field_labels: &[], generation: false,
};
/// core/v1 secrets.
pub static SECRETS: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "secrets", singular: "secret", kind: "Secret",
    namespaced: true, short_names: &[], field_labels: &["type"], generation: false,
};
/// core/v1 events.
pub static EVENTS: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "events", singular: "event", kind: "Event",
    namespaced: true, short_names: &["ev"], field_labels: &[
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion",
        "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
    ], generation: false,
};
/// core/v1 nodes (cluster-scoped): the machines pods name in `spec.nodeName`.
pub static NODES: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "nodes", singular: "node", kind: "Node",
    namespaced: false, short_names: &["no"], field_labels: &["spec.unschedulable"], generation: false,
};
/// apps/v1 deployments.
pub static DEPLOYMENTS: ResourceDef = ResourceDef {
    group: "apps", version: "v1", plural: "deployments", singular: "deployment", kind: "Deployment",
    namespaced: true, short_names: &["deploy"], field_labels: &[], generation: true,
};

/// apps/v1 replicasets, which the deployment controller makes.
pub static REPLICASETS: ResourceDef = ResourceDef {
    group: "apps", version: "v1", plural: "replicasets", singular: "replicaset", kind: "ReplicaSet",
    namespaced: true, short_names: &["rs"], field_labels: &["status.replicas"], generation: true,
};
/// coordination.k8s.io/v1 leases: each node's heartbeat lease lives in `kube-node-lease`.
pub static LEASES: ResourceDef = ResourceDef {
    group: "coordination.k8s.io", version: "v1", plural: "leases", singular: "lease", kind: "Lease",
    namespaced: true, short_names: &[], field_labels: &[], generation: false,
};

/// authorization.k8s.io/v1 selfsubjectaccessreviews: "may I?", create-only.
pub static SELF_SUBJECT_ACCESS_REVIEWS: ResourceDef = ResourceDef {
    group: "authorization.k8s.io", version: "v1", plural: "selfsubjectaccessreviews", singular: "selfsubjectaccessreview", kind: "SelfSubjectAccessReview",
    namespaced: false, short_names: &[], field_labels: &[], generation: false,
};
/// authorization.k8s.io/v1 selfsubjectrulesreviews: "what may I do in this namespace?", create-only.
pub static SELF_SUBJECT_RULES_REVIEWS: ResourceDef = ResourceDef {
    group: "authorization.k8s.io", version: "v1", plural: "selfsubjectrulesreviews", singular: "selfsubjectrulesreview", kind: "SelfSubjectRulesReview",
    namespaced: false, short_names: &[], field_labels: &[], generation: false,
};

/// core/v1 serviceaccounts: the identity a Deployment's pods run as (`deploy/kubernetes`).
pub static SERVICEACCOUNTS: ResourceDef = ResourceDef {
    group: "", version: "v1", plural: "serviceaccounts", singular: "serviceaccount", kind: "ServiceAccount",
    namespaced: true, short_names: &["sa"], field_labels: &[], generation: false,
};

// RBAC objects are stored and served, not enforced: the simulator's authorization is its
// users' namespaces (`auth.rs`). They are here so manifests that grant a service account its
// rights apply (`kubectl apply --dry-run=server` of `deploy/kubernetes`).

/// rbac.authorization.k8s.io/v1 roles.
pub static ROLES: ResourceDef = ResourceDef {
    group: "rbac.authorization.k8s.io", version: "v1", plural: "roles", singular: "role", kind: "Role",
    namespaced: true, short_names: &[], field_labels: &[], generation: false,
};
/// rbac.authorization.k8s.io/v1 rolebindings.
pub static ROLEBINDINGS: ResourceDef = ResourceDef {
    group: "rbac.authorization.k8s.io", version: "v1", plural: "rolebindings", singular: "rolebinding", kind: "RoleBinding",
    namespaced: true, short_names: &[], field_labels: &[], generation: false,
};
/// rbac.authorization.k8s.io/v1 clusterroles (cluster-scoped).
pub static CLUSTERROLES: ResourceDef = ResourceDef {
    group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterroles", singular: "clusterrole", kind: "ClusterRole",
    namespaced: false, short_names: &[], field_labels: &[], generation: false,
};
/// rbac.authorization.k8s.io/v1 clusterrolebindings (cluster-scoped).
pub static CLUSTERROLEBINDINGS: ResourceDef = ResourceDef {
    group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterrolebindings", singular: "clusterrolebinding", kind: "ClusterRoleBinding",
    namespaced: false, short_names: &[], field_labels: &[], generation: false,
};
/// policy/v1 poddisruptionbudgets: stored, not acted on (the simulator evicts nothing).
pub static PODDISRUPTIONBUDGETS: ResourceDef = ResourceDef {
    group: "policy", version: "v1", plural: "poddisruptionbudgets", singular: "poddisruptionbudget", kind: "PodDisruptionBudget",
    namespaced: true, short_names: &["pdb"], field_labels: &[], generation: true,
};

/// metrics.k8s.io/v1beta1 nodes (`NodeMetrics`, cluster-scoped): `kubectl top nodes`.
pub static NODE_METRICS: ResourceDef = ResourceDef {
    group: "metrics.k8s.io", version: "v1beta1", plural: "nodes", singular: "", kind: "NodeMetrics",
    namespaced: false, short_names: &[], field_labels: &[], generation: false,
};
/// metrics.k8s.io/v1beta1 pods (`PodMetrics`): `kubectl top pods`.
pub static POD_METRICS: ResourceDef = ResourceDef {
    group: "metrics.k8s.io", version: "v1beta1", plural: "pods", singular: "", kind: "PodMetrics",
    namespaced: true, short_names: &[], field_labels: &[], generation: false,
};

/// Every served resource.
pub static ALL: [&ResourceDef; 20] = [
    &NAMESPACES, &NODES, &PODS, &SERVICES, &CONFIGMAPS, &SECRETS, &EVENTS, &SERVICEACCOUNTS, &DEPLOYMENTS, &REPLICASETS, &LEASES,
    &SELF_SUBJECT_ACCESS_REVIEWS, &SELF_SUBJECT_RULES_REVIEWS, &ROLES, &ROLEBINDINGS, &CLUSTERROLES, &CLUSTERROLEBINDINGS,
    &PODDISRUPTIONBUDGETS, &NODE_METRICS, &POD_METRICS,
];

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    ALL.iter().copied().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The groups other than core, with their versions.
fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
    for gv in ALL.iter().filter(|r| !r.group.is_empty()).map(|r| (r.group, r.version)) {
        if !groups.contains(&gv) {
            groups.push(gv);
        }
    }
    groups
}

/// `GET /version`.
pub fn version() -> Value {
    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-kube-sim", "gitCommit": "0000000000000000000000000000000000000000",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.4",
           "compiler": "gc", "platform": "linux/amd64"})
}

/// `GET /api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn api_group(group: &str) -> Option<Value> {
    let (g, v) = groups().into_iter().find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv}))
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`: the APIResourceList.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in ALL.iter().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                               "kind": r.kind, "verbs": r.verbs()});
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if matches!(r.plural, "pods" | "services" | "deployments" | "replicasets") {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        if r.has_scale() {
            resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": true, "group": "autoscaling",
                                  "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": true, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
        }
        if std::ptr::eq(*r, &NODES) {
            resources.push(json!({"name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node", "verbs": ["get", "patch", "update"]}));
        }
        if r.is_pods() {
            for (sub, kind, verbs) in [
                ("pods/exec", "PodExecOptions", json!(["create", "get"])),
                ("pods/attach", "PodAttachOptions", json!(["create", "get"])),
                ("pods/portforward", "PodPortForwardOptions", json!(["create", "get"])),
                ("pods/status", "Pod", json!(["get", "patch", "update"])),
            ] {
                resources.push(json!({"name": sub, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs}));
            }
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubectl maps a kind to its resource through discovery: each group listed once, and
    /// every type in its group's resource list.
    #[test]
    fn discovery_lists_each_group_once_and_every_type_in_it() {
        let list = api_group_list();
        let names: Vec<&str> = list["groups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "a group listed twice: {names:?}");
        for r in ALL {
            let resources = api_resource_list(r.group, r.version).unwrap();
            let kinds: Vec<&str> = resources["resources"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
            assert!(kinds.contains(&r.kind), "{} missing from {}: {kinds:?}", r.kind, r.api_version());
            assert!(r.group.is_empty() || names.contains(&r.group), "{} not in /apis", r.group);
        }
        assert!(find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").is_some_and(|r| !r.namespaced));
        assert!(find("policy", "v1", "poddisruptionbudgets").is_some_and(|r| r.namespaced));
    }
}
