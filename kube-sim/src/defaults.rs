//! What the rest of a cluster would fill in on create: the API server's defaults, the
//! scheduler and kubelet for pods (node, IP, running status), the service controller for
//! cluster IPs. Pods are born in their settled state; deployments and replicasets get their
//! status from `controller`.

use serde_json::{Value, json};

use crate::resources::{DEPLOYMENTS, EVENTS, NAMESPACES, PODS, ResourceDef, SECRETS, SERVICES};
use crate::store::now_timestamp;

/// Fills in defaults for a new object of `resource`.
pub fn on_create(resource: &'static ResourceDef, object: &mut Value) {
    if std::ptr::eq(resource, &PODS) {
        pod(object);
    } else if std::ptr::eq(resource, &SERVICES) {
        let spec = ensure_object(object, "spec");
        spec.entry("type").or_insert(json!("ClusterIP"));
        spec.entry("clusterIP").or_insert_with(|| json!(format!("10.96.{}.{}", fastrand::u8(0..=255), fastrand::u8(1..=254))));
    } else if std::ptr::eq(resource, &DEPLOYMENTS) {
        // The API server's defaults; the status is the deployment controller's.
        let spec = ensure_object(object, "spec");
        spec.entry("replicas").or_insert(json!(1));
        spec.entry("revisionHistoryLimit").or_insert(json!(10));
        spec.entry("progressDeadlineSeconds").or_insert(json!(600));
        spec.entry("strategy").or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}));
    } else if std::ptr::eq(resource, &SECRETS) {
        if let Some(map) = object.as_object_mut()
            && map.get("type").and_then(Value::as_str).is_none_or(str::is_empty)
        {
            map.insert("type".to_owned(), json!("Opaque"));
        }
    } else if std::ptr::eq(resource, &NAMESPACES) {
        ensure_object(object, "spec").entry("finalizers").or_insert(json!(["kubernetes"]));
        ensure_object(object, "status").entry("phase").or_insert(json!("Active"));
    } else if std::ptr::eq(resource, &EVENTS) {
        let now = now_timestamp();
        let map = object.as_object_mut().expect("objects are JSON objects");
        map.entry("firstTimestamp").or_insert(json!(now));
        map.entry("lastTimestamp").or_insert(json!(now));
        map.entry("count").or_insert(json!(1));
        map.entry("type").or_insert(json!("Normal"));
    }
}

fn ensure_object<'a>(object: &'a mut Value, field: &str) -> &'a mut serde_json::Map<String, Value> {
    let map = object.as_object_mut().expect("objects are JSON objects");
    let entry = map.entry(field).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("just made it an object")
}

/// A scheduled, running pod: every container started and ready.
fn pod(object: &mut Value) {
    let spec = ensure_object(object, "spec");
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("nodeName").or_insert(json!("sim-node-1"));
    spec.entry("serviceAccountName").or_insert(json!("default"));
    spec.entry("schedulerName").or_insert(json!("default-scheduler"));
    spec.entry("containers").or_insert(json!([]));
    let node = spec.get("nodeName").and_then(Value::as_str).unwrap_or_default().to_owned();
    let containers: Vec<(String, String)> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["image"].as_str().unwrap_or("busybox:latest").to_owned(),
            )
        })
        .collect();
    if object.get("status").and_then(|s| s.get("phase")).is_some() {
        return;
    }
    let now = now_timestamp();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(name, image)| {
            json!({"name": name, "image": image, "imageID": format!("docker.io/library/{image}@sha256:{:016x}", fastrand::u64(..)),
                   "containerID": format!("containerd://{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
                   "ready": true, "started": true, "restartCount": 0,
                   "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let conditions: Vec<Value> = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|t| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now}))
        .collect();
    object["status"] = json!({
        "phase": "Running",
        "conditions": conditions,
        "hostIP": crate::seed::node_ip(&node),
        "podIP": format!("10.244.{}.{}", fastrand::u8(0..=255), fastrand::u8(1..=254)),
        "startTime": now,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
}
