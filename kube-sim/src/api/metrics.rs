//! `metrics.k8s.io/v1beta1`, what the demo seed's metrics-server would serve: `NodeMetrics` and
//! `PodMetrics` (`kubectl top`). Nothing is stored; each read computes the usage of every
//! running pod's containers from the pod's uid, the container's name and the current 15-second
//! scrape window (metrics-server's default resolution), so numbers change plausibly between
//! windows and stay put within one. A node's usage is its pods' plus the system's overhead.

use std::f64::consts::TAU;

use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Query, json_response};
use crate::SimState;
use crate::auth::Identity;
use crate::resources::{NODE_METRICS, NODES, PODS, ResourceDef};
use crate::selectors::Selector;
use crate::status::ApiError;

/// metrics-server's scrape interval, the `window` of every sample.
const WINDOW_SECONDS: i64 = 15;

/// FNV-1a: a stable hash, so a container's usage depends only on what names it.
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A container's usage in window `slot` (seconds since the epoch, a multiple of the window):
/// CPU in nanocores, memory in bytes.
fn container_usage(pod_uid: &str, container: &str, slot: i64) -> (u64, u64) {
    let h = hash(&[pod_uid, container]);
    // A base of 2–60 millicores and 24–280 MiB, a five-minute swell of up to half the CPU
    // and a twentieth of the memory, phased per container.
    let cpu_base = 2_000_000 + (h % 58) * 1_000_000;
    let memory_base = (24 + (h >> 8) % 256) * 1024 * 1024;
    let phase = ((h >> 16) % 360) as f64 / 360.0;
    #[allow(clippy::cast_precision_loss)]
    let swell = (TAU * (slot as f64 / 300.0 + phase)).sin();
    let cpu = cpu_base as f64 * (1.0 + 0.5 * swell);
    let memory = memory_base as f64 * (1.0 + 0.05 * swell);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (cpu.max(0.0) as u64, memory.max(0.0) as u64)
}

fn slot_of(now: DateTime<Utc>) -> i64 {
    now.timestamp() - now.timestamp().rem_euclid(WINDOW_SECONDS)
}

fn timestamp(slot: i64) -> String {
    DateTime::<Utc>::from_timestamp(slot, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn usage(cpu: u64, memory: u64) -> Value {
    json!({"cpu": format!("{cpu}n"), "memory": format!("{}Ki", memory / 1024)})
}

/// The usage of `pod`'s containers, if it is running (metrics-server has none for the rest).
fn pod_usage(pod: &Value, slot: i64) -> Option<Vec<(String, u64, u64)>> {
    if pod["status"]["phase"] != "Running" || pod["metadata"]["deletionTimestamp"].is_string() {
        return None;
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let containers = pod["spec"]["containers"].as_array()?;
    Some(
        containers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .map(|name| {
                let (cpu, memory) = container_usage(uid, name, slot);
                (name.to_owned(), cpu, memory)
            })
            .collect(),
    )
}

/// The `PodMetrics` of `pod` in window `slot`.
pub fn pod_metrics(pod: &Value, slot: i64) -> Option<Value> {
    let containers: Vec<Value> = pod_usage(pod, slot)?.into_iter().map(|(name, cpu, memory)| json!({"name": name, "usage": usage(cpu, memory)})).collect();
    let meta = &pod["metadata"];
    Some(json!({
        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": meta["labels"], "creationTimestamp": timestamp(slot)},
        "timestamp": timestamp(slot), "window": format!("{WINDOW_SECONDS}s"), "containers": containers,
    }))
}

/// What a node runs besides pods: the kubelet, the container runtime, the system.
const NODE_OVERHEAD: (u64, u64) = (180_000_000, 900 * 1024 * 1024);

/// The `NodeMetrics` of `node` in window `slot`, its pods among `pods`.
pub fn node_metrics(node: &Value, pods: &[std::sync::Arc<Value>], slot: i64) -> Value {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let (mut cpu, mut memory) = NODE_OVERHEAD;
    for (_, c, m) in pods.iter().filter(|p| p["spec"]["nodeName"] == name).filter_map(|p| pod_usage(p, slot)).flatten() {
        cpu += c;
        memory += m;
    }
    json!({
        "kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "labels": node["metadata"]["labels"], "creationTimestamp": timestamp(slot)},
        "timestamp": timestamp(slot), "window": format!("{WINDOW_SECONDS}s"), "usage": usage(cpu, memory),
    })
}

/// `GET` a metrics collection (`name` `None`) or one object; every other verb is 405.
pub(super) fn serve(state: &SimState, identity: &Identity, resource: &'static ResourceDef, namespace: Option<&str>, name: Option<&str>, method: &Method, query: &Query) -> Result<Response, ApiError> {
    if method != Method::GET || query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {method}")));
    }
    identity.authorize(if name.is_some() { "get" } else { "list" }, resource, namespace)?;
    let slot = slot_of(Utc::now());
    let (_, pods) = state.store.list(&PODS, if std::ptr::eq(resource, &NODE_METRICS) { None } else { namespace });
    let items: Vec<Value> = if std::ptr::eq(resource, &NODE_METRICS) {
        state.store.list(&NODES, None).1.iter().map(|node| node_metrics(node, &pods, slot)).collect()
    } else {
        pods.iter().filter_map(|pod| pod_metrics(pod, slot)).collect()
    };
    if let Some(name) = name {
        let item = items.into_iter().find(|i| i["metadata"]["name"] == name).ok_or_else(|| ApiError::not_found(resource.plural, name))?;
        return Ok(json_response(200, &item));
    }
    let selector = Selector::parse(query.get("labelSelector"), query.get("fieldSelector"), resource)?;
    let items: Vec<Value> = items.into_iter().filter(|i| selector.matches(i)).collect();
    Ok(json_response(200, &json!({"kind": resource.list_kind(), "apiVersion": resource.api_version(), "metadata": {}, "items": items})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn running(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "demo", "uid": format!("uid-{name}"), "labels": {"app": "x"}},
               "spec": {"nodeName": node, "containers": [{"name": "main"}, {"name": "side"}]}, "status": {"phase": "Running"}})
    }

    fn nanocores(v: &Value) -> u64 {
        v.as_str().and_then(|s| s.strip_suffix('n')).and_then(|s| s.parse().ok()).unwrap()
    }

    #[test]
    fn pod_usage_is_deterministic_within_a_window_and_changes_across_windows() {
        let pod = running("a", "n1");
        let slot = 1_800_000_000 - 1_800_000_000 % WINDOW_SECONDS;
        let first = pod_metrics(&pod, slot).unwrap();
        assert_eq!(first, pod_metrics(&pod, slot).unwrap());
        assert_eq!(first["containers"].as_array().unwrap().len(), 2);
        let cpu = nanocores(&first["containers"][0]["usage"]["cpu"]);
        assert!((1_000_000..=90_000_000).contains(&cpu), "{cpu}n");
        let later = pod_metrics(&pod, slot + 60).unwrap();
        assert_ne!(first["containers"][0]["usage"], later["containers"][0]["usage"]);
        let mut pending = pod.clone();
        pending["status"]["phase"] = json!("Pending");
        assert!(pod_metrics(&pending, slot).is_none());
    }

    #[test]
    fn a_node_uses_its_pods_and_its_overhead() {
        let pods = vec![Arc::new(running("a", "n1")), Arc::new(running("b", "n1")), Arc::new(running("c", "n2"))];
        let node = json!({"metadata": {"name": "n1"}});
        let slot = 1_800_000_000;
        let sum: u64 = pods[..2].iter().flat_map(|p| pod_metrics(p, slot).unwrap()["containers"].as_array().unwrap().clone()).map(|c| nanocores(&c["usage"]["cpu"])).sum();
        assert_eq!(nanocores(&node_metrics(&node, &pods, slot)["usage"]["cpu"]), sum + NODE_OVERHEAD.0);
    }
}
