//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, as kubectl
//! sends it for `get`, answered with a `meta.k8s.io` `Table` whose columns are the ones the API
//! server's printers define for each type (`pkg/printers/internalversion/printers.go`), so
//! `kubectl get` shows STATUS, READY, RESTARTS and the `-o wide` columns rather than NAME and
//! AGE alone (reference `kube-api-semantics.md` §4).
//!
//! Lists, single objects and watch events are all converted; a watch event's object becomes a
//! one-row Table, and bookmarks and errors stay as they are.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Query;
use crate::resources::ResourceDef;
use crate::status::ApiError;

/// What each row's `object` carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Include {
    None,
    Metadata,
    Object,
}

/// A request for a Table: its `apiVersion` and what rows carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableRequest {
    api_version: &'static str,
    include: Include,
}

/// The Table the client asked for, if the first representation it accepts that the simulator
/// serves is a Table; `None` for plain JSON.
pub(crate) fn requested(headers: &HeaderMap, query: &Query) -> Result<Option<TableRequest>, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let mut api_version = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).map(|(k, v)| (k.trim(), v.trim())).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match (media, param("as")) {
            ("application/json", Some("Table")) if param("g") == Some("meta.k8s.io") => match param("v") {
                Some("v1") => api_version = Some("meta.k8s.io/v1"),
                Some("v1beta1") => api_version = Some("meta.k8s.io/v1beta1"),
                // A version the server does not have: the client's next choice counts.
                _ => continue,
            },
            ("application/json" | "*/*" | "application/*" | "", None) => {}
            _ => continue,
        }
        break;
    }
    let Some(api_version) = api_version else {
        return Ok(None);
    };
    let include = match query.get("includeObject") {
        None | Some("" | "Metadata") => Include::Metadata,
        Some("Object") => Include::Object,
        Some("None") => Include::None,
        Some(other) => {
            return Err(ApiError::bad_request(format!("includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\"")));
        }
    };
    Ok(Some(TableRequest { api_version, include }))
}

impl TableRequest {
    /// A list as a Table: one row per item, the list's `metadata` (resourceVersion, continue)
    /// kept, since kubectl starts `get -w` from it.
    pub(crate) fn list(&self, resource: &ResourceDef, metadata: Value, items: &[Arc<Value>]) -> Value {
        let now = Utc::now();
        let rows: Vec<Value> = items.iter().map(|item| self.row(resource, item, now)).collect();
        self.table(resource, metadata, rows)
    }

    /// One object as a one-row Table (a get, or a watch event's object).
    pub(crate) fn object(&self, resource: &ResourceDef, object: &Value) -> Value {
        let rv = object.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
        self.table(resource, json!({"resourceVersion": rv}), vec![self.row(resource, object, Utc::now())])
    }

    fn table(&self, resource: &ResourceDef, metadata: Value, rows: Vec<Value>) -> Value {
        let definitions: Vec<Value> = columns(resource)
            .iter()
            .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
            .collect();
        json!({"kind": "Table", "apiVersion": self.api_version, "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
    }

    fn row(&self, resource: &ResourceDef, object: &Value, now: DateTime<Utc>) -> Value {
        let cells: Vec<Value> = columns(resource).iter().map(|c| (c.cell)(object, now)).collect();
        let mut row = json!({"cells": cells});
        match self.include {
            Include::None => {}
            Include::Object => row["object"] = object.clone(),
            Include::Metadata => {
                let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
                row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
            }
        }
        row
    }
}

/// One column: its definition and how a cell is computed from the object.
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
    cell: fn(&Value, DateTime<Utc>) -> Value,
}

const fn column(name: &'static str, kind: &'static str, priority: u8, description: &'static str, cell: fn(&Value, DateTime<Utc>) -> Value) -> Column {
    Column { name, kind, format: "", priority, description, cell }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace.",
    cell: |o, _| json!(text(o, "/metadata/name")),
};
const AGE: Column = column("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created.", |o, now| {
    json!(age(o.pointer("/metadata/creationTimestamp"), now))
});
const CONTAINERS: Column = column("Containers", "string", 1, "Names of each container in the template.", |o, _| {
    json!(template_containers(o, "name"))
});
const IMAGES: Column = column("Images", "string", 1, "Images referenced by each container in the template.", |o, _| {
    json!(template_containers(o, "image"))
});
const READY_OF_DESIRED: Column = column("Ready", "string", 0, "Number of the pod with ready state.", |o, _| {
    json!(format!("{}/{}", int(o, "/status/readyReplicas"), int(o, "/spec/replicas")))
});
const SELECTOR: Column = column("Selector", "string", 1, "The label selector of the pods.", |o, _| {
    json!(match_labels(o.pointer("/spec/selector/matchLabels")))
});

/// The columns for `resource`'s kind; kinds without a printer get Name and Age.
fn columns(resource: &ResourceDef) -> Vec<&'static Column> {
    let (head, tail): (&'static [Column], &'static [Column]) = match resource.kind {
        "Pod" => (&POD, &[]),
        "Deployment" => (&DEPLOYMENT, &WORKLOAD_TAIL),
        "ReplicaSet" => (&REPLICA_SET, &WORKLOAD_TAIL),
        "StatefulSet" => (&STATEFUL_SET, &WORKLOAD_TAIL[..3]),
        "Service" => (&SERVICE, &[]),
        "ConfigMap" => (&CONFIG_MAP, &[]),
        "Secret" => (&SECRET, &[]),
        "Namespace" => (&NAMESPACE, &[]),
        "Node" => (&NODE, &[]),
        "Event" => (&EVENT, &[]),
        "Lease" => (&LEASE, &[]),
        _ => (&NAME_AND_AGE, &[]),
    };
    head.iter().chain(tail).collect()
}

static NAME_AND_AGE: [Column; 2] = [NAME, AGE];

static POD: [Column; 9] = [
    NAME,
    column("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic.", |o, _| json!(pod_summary(o).ready)),
    column("Status", "string", 0, "The aggregate status of the containers in this pod.", |o, _| json!(pod_summary(o).status)),
    column("Restarts", "string", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", |o, now| {
        let summary = pod_summary(o);
        match summary.last_restart {
            Some(at) if summary.restarts > 0 => json!(format!("{} ({} ago)", summary.restarts, human_duration(now - at))),
            _ => json!(summary.restarts.to_string()),
        }
    }),
    AGE,
    column("IP", "string", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", |o, _| json!(or_none(o, "/status/podIP"))),
    column("Node", "string", 1, "NodeName is a request to schedule this pod onto a specific node.", |o, _| json!(or_none(o, "/spec/nodeName"))),
    column("Nominated Node", "string", 1, "nominatedNodeName is set only when this pod preempts other pods on the node.", |o, _| json!(or_none(o, "/status/nominatedNodeName"))),
    column("Readiness Gates", "string", 1, "If specified, all readiness gates will be evaluated for pod readiness.", |o, _| {
        let gates: Vec<&str> = items(o, "/spec/readinessGates").filter_map(|g| g.get("conditionType")?.as_str()).collect();
        if gates.is_empty() {
            return json!("<none>");
        }
        let met = gates
            .iter()
            .filter(|gate| items(o, "/status/conditions").any(|c| c.get("type").and_then(Value::as_str) == Some(gate) && c.get("status").and_then(Value::as_str) == Some("True")))
            .count();
        json!(format!("{met}/{}", gates.len()))
    }),
];

static DEPLOYMENT: [Column; 4] = [
    NAME,
    READY_OF_DESIRED,
    column("Up-to-date", "integer", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", |o, _| json!(int(o, "/status/updatedReplicas"))),
    column("Available", "integer", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", |o, _| json!(int(o, "/status/availableReplicas"))),
];

static REPLICA_SET: [Column; 4] = [
    NAME,
    column("Desired", "integer", 0, "Replicas is the number of desired replicas.", |o, _| json!(int(o, "/spec/replicas"))),
    column("Current", "integer", 0, "Replicas is the most recently observed number of replicas.", |o, _| json!(int(o, "/status/replicas"))),
    column("Ready", "integer", 0, "The number of ready replicas for this replica set.", |o, _| json!(int(o, "/status/readyReplicas"))),
];

static STATEFUL_SET: [Column; 2] = [NAME, READY_OF_DESIRED];

/// What every workload's columns end with (StatefulSets stop before Selector).
static WORKLOAD_TAIL: [Column; 4] = [AGE, CONTAINERS, IMAGES, SELECTOR];

static SERVICE: [Column; 7] = [
    NAME,
    column("Type", "string", 0, "type determines how the Service is exposed.", |o, _| json!(text(o, "/spec/type"))),
    column("Cluster-IP", "string", 0, "clusterIP is the IP address of the service.", |o, _| json!(or_none(o, "/spec/clusterIP"))),
    column("External-IP", "string", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", |o, _| json!(service_external_ip(o))),
    column("Port(s)", "string", 0, "The list of ports that are exposed by this service.", |o, _| {
        let ports: Vec<String> = items(o, "/spec/ports")
            .map(|p| {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                match p.get("nodePort").and_then(Value::as_i64) {
                    Some(node_port) if node_port != 0 => format!("{port}:{node_port}/{protocol}"),
                    _ => format!("{port}/{protocol}"),
                }
            })
            .collect();
        json!(if ports.is_empty() { "<none>".to_owned() } else { ports.join(",") })
    }),
    AGE,
    column("Selector", "string", 1, "Route service traffic to pods with label keys and values matching this selector.", |o, _| json!(match_labels(o.pointer("/spec/selector")))),
];

static CONFIG_MAP: [Column; 3] = [
    NAME,
    column("Data", "integer", 0, "Data contains the configuration data.", |o, _| json!(entries(o, "/data") + entries(o, "/binaryData"))),
    AGE,
];

static SECRET: [Column; 4] = [
    NAME,
    column("Type", "string", 0, "Used to facilitate programmatic handling of secret data.", |o, _| json!(text(o, "/type"))),
    column("Data", "integer", 0, "Data contains the secret data.", |o, _| json!(entries(o, "/data"))),
    AGE,
];

static NAMESPACE: [Column; 3] = [
    NAME,
    column("Status", "string", 0, "The status of the namespace", |o, _| json!(text(o, "/status/phase"))),
    AGE,
];

static NODE: [Column; 10] = [
    NAME,
    column("Status", "string", 0, "The status of the node", |o, _| json!(node_status(o))),
    column("Roles", "string", 0, "The roles of the node", |o, _| {
        let mut roles: Vec<&str> = o
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .filter(|r| !r.is_empty())
            .collect();
        roles.sort_unstable();
        json!(if roles.is_empty() { "<none>".to_owned() } else { roles.join(",") })
    }),
    AGE,
    column("Version", "string", 0, "Kubelet Version reported by the node.", |o, _| json!(text(o, "/status/nodeInfo/kubeletVersion"))),
    column("Internal-IP", "string", 1, "List of internal IPs in the node.", |o, _| json!(node_address(o, "InternalIP"))),
    column("External-IP", "string", 1, "List of external IPs in the node.", |o, _| json!(node_address(o, "ExternalIP"))),
    column("OS-Image", "string", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", |o, _| json!(text(o, "/status/nodeInfo/osImage"))),
    column("Kernel-Version", "string", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", |o, _| json!(text(o, "/status/nodeInfo/kernelVersion"))),
    column("Container-Runtime", "string", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", |o, _| json!(text(o, "/status/nodeInfo/containerRuntimeVersion"))),
];

static EVENT: [Column; 10] = [
    column("Last Seen", "string", 0, "The time at which the most recent occurrence of this event was recorded.", |o, now| {
        let last = o.pointer("/lastTimestamp").filter(|v| v.is_string()).or_else(|| o.pointer("/eventTime"));
        json!(age(last, now))
    }),
    column("Type", "string", 0, "Type of this event (Normal, Warning), new types could be added in the future.", |o, _| json!(text(o, "/type"))),
    column("Reason", "string", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", |o, _| json!(text(o, "/reason"))),
    column("Object", "string", 0, "The object that this event is about.", |o, _| {
        json!(format!("{}/{}", text(o, "/involvedObject/kind").to_lowercase(), text(o, "/involvedObject/name")))
    }),
    column("Subobject", "string", 1, "The field of the object this event is about.", |o, _| json!(text(o, "/involvedObject/fieldPath"))),
    column("Source", "string", 1, "The component reporting this event.", |o, _| {
        let component = text(o, "/source/component");
        let host = text(o, "/source/host");
        json!(if host.is_empty() { component.to_owned() } else { format!("{component}, {host}") })
    }),
    column("Message", "string", 0, "A human-readable description of the status of this operation.", |o, _| json!(text(o, "/message"))),
    column("First Seen", "string", 1, "The time at which the event was first recorded.", |o, now| json!(age(o.pointer("/firstTimestamp"), now))),
    column("Count", "string", 1, "The number of times this event has occurred.", |o, _| json!(int(o, "/count"))),
    Column { priority: 1, ..NAME },
];

static LEASE: [Column; 3] = [
    NAME,
    column("Holder", "string", 0, "holderIdentity contains the identity of the holder of a current lease.", |o, _| json!(text(o, "/spec/holderIdentity"))),
    AGE,
];

/// The string at `pointer`, or `""`.
fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// The string at `pointer`, or `<none>` when it is missing or empty, as the printers show it.
fn or_none(object: &Value, pointer: &str) -> String {
    match text(object, pointer) {
        "" => "<none>".to_owned(),
        value => value.to_owned(),
    }
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn items<'a>(object: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    object.pointer(pointer).and_then(Value::as_array).into_iter().flatten()
}

fn entries(object: &Value, pointer: &str) -> usize {
    object.pointer(pointer).and_then(Value::as_object).map_or(0, serde_json::Map::len)
}

/// `field` of each container of a workload's pod template, comma-joined.
fn template_containers(object: &Value, field: &str) -> String {
    items(object, "/spec/template/spec/containers").filter_map(|c| c.get(field)?.as_str()).collect::<Vec<_>>().join(",")
}

/// `k=v,…` sorted by key, or `<none>`.
fn match_labels(labels: Option<&Value>) -> String {
    let mut pairs: Vec<String> = labels.and_then(Value::as_object).into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs.sort();
    pairs.join(",")
}

fn service_external_ip(service: &Value) -> String {
    let external: Vec<&str> = items(service, "/spec/externalIPs").filter_map(Value::as_str).collect();
    match text(service, "/spec/type") {
        "LoadBalancer" => {
            let mut ips: Vec<&str> = items(service, "/status/loadBalancer/ingress")
                .filter_map(|i| i.get("ip").or_else(|| i.get("hostname")).and_then(Value::as_str))
                .collect();
            ips.extend(external);
            if ips.is_empty() { "<pending>".to_owned() } else { ips.join(",") }
        }
        "ExternalName" => text(service, "/spec/externalName").to_owned(),
        _ if external.is_empty() => "<none>".to_owned(),
        _ => external.join(","),
    }
}

fn node_status(node: &Value) -> String {
    let ready = items(node, "/status/conditions").find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    let mut status = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready".to_owned(),
        Some("False") => "NotReady".to_owned(),
        _ => "Unknown".to_owned(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_address(node: &Value, kind: &str) -> String {
    let addresses: Vec<&str> = items(node, "/status/addresses")
        .filter(|a| a.get("type").and_then(Value::as_str) == Some(kind))
        .filter_map(|a| a.get("address")?.as_str())
        .collect();
    if addresses.is_empty() { "<none>".to_owned() } else { addresses.join(",") }
}

/// What the pod columns show, worked out as the API server's pod printer does.
struct PodSummary {
    ready: String,
    status: String,
    restarts: i64,
    last_restart: Option<DateTime<Utc>>,
}

fn pod_summary(pod: &Value) -> PodSummary {
    let statuses: Vec<&Value> = items(pod, "/status/containerStatuses").collect();
    let total = items(pod, "/spec/containers").count();
    let mut reason = match text(pod, "/status/reason") {
        "" => text(pod, "/status/phase").to_owned(),
        reason => reason.to_owned(),
    };
    let (mut ready, mut restarts, mut last_restart, mut running) = (0, 0, None, false);
    // The printer walks containers last to first, so the first container's state wins.
    for status in statuses.iter().rev() {
        restarts += status.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        if let Some(finished) = status.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str).and_then(parse_time) {
            last_restart = last_restart.max(Some(finished));
        }
        let waiting = text(status, "/state/waiting/reason");
        let terminated = status.pointer("/state/terminated");
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if let Some(terminated) = terminated {
            reason = match terminated.get("reason").and_then(Value::as_str) {
                Some(r) if !r.is_empty() => r.to_owned(),
                _ => match terminated.get("signal").and_then(Value::as_i64) {
                    Some(signal) if signal != 0 => format!("Signal:{signal}"),
                    _ => format!("ExitCode:{}", terminated.get("exitCode").and_then(Value::as_i64).unwrap_or(0)),
                },
            };
        } else if status.get("ready").and_then(Value::as_bool) == Some(true) && status.pointer("/state/running").is_some() {
            running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && running {
        let pod_ready = items(pod, "/status/conditions").any(|c| c.get("type").and_then(Value::as_str) == Some("Ready") && c.get("status").and_then(Value::as_str) == Some("True"));
        reason = if pod_ready { "Running" } else { "NotReady" }.to_owned();
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        reason = if text(pod, "/status/reason") == "NodeLost" { "Unknown" } else { "Terminating" }.to_owned();
    }
    PodSummary { ready: format!("{ready}/{total}"), status: reason, restarts, last_restart }
}

fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

/// How long ago `timestamp` was, as kubectl prints ages; `<unknown>` without one.
fn age(timestamp: Option<&Value>, now: DateTime<Utc>) -> String {
    match timestamp.and_then(Value::as_str).and_then(parse_time) {
        Some(at) => human_duration(now - at),
        None => "<unknown>".to_owned(),
    }
}

/// apimachinery's `duration.HumanDuration`: seconds up to two minutes, then coarser units with
/// at most two of them.
fn human_duration(elapsed: chrono::TimeDelta) -> String {
    let seconds = elapsed.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let two = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 { format!("{big}{big_unit}") } else { format!("{big}{big_unit}{small}{small_unit}") }
    };
    match () {
        () if minutes < 10 => two(minutes, "m", seconds % 60, "s"),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 => two(hours, "h", minutes % 60, "m"),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 24 * 8 => two(days, "d", hours % 24, "h"),
        () if days < 365 * 2 => format!("{days}d"),
        () if days < 365 * 8 => two(days / 365, "y", days % 365, "d"),
        () => format!("{}y", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CONFIGMAPS, PODS};

    fn accept(value: &str, query: &str) -> Result<Option<TableRequest>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        requested(&headers, &Query::parse(Some(query)))
    }

    #[test]
    fn negotiates_like_the_api_server() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(accept(kubectl, "").unwrap(), Some(TableRequest { api_version: "meta.k8s.io/v1", include: Include::Metadata }));
        assert_eq!(accept("application/json;as=Table;v=v2;g=meta.k8s.io, application/json;as=Table;v=v1beta1;g=meta.k8s.io", "includeObject=Object").unwrap(),
                   Some(TableRequest { api_version: "meta.k8s.io/v1beta1", include: Include::Object }));
        assert_eq!(accept("application/json, application/json;as=Table;v=v1;g=meta.k8s.io", "").unwrap(), None, "the first choice wins");
        assert_eq!(accept("application/json", "").unwrap(), None);
        assert_eq!(accept(kubectl, "includeObject=All").unwrap_err().code, 400);
    }

    #[test]
    fn durations_read_as_kubectl_prints_them() {
        let d = |s: i64| human_duration(chrono::TimeDelta::seconds(s));
        assert_eq!([d(-5), d(0), d(119), d(120), d(125), d(600), d(3 * 3600 + 60), d(10 * 3600), d(49 * 3600), d(9 * 86400), d(800 * 86400)],
                   ["<invalid>", "0s", "119s", "2m", "2m5s", "10m", "3h1m", "10h", "2d1h", "9d", "2y70d"]);
    }

    #[test]
    fn pod_rows_show_readiness_status_and_restarts() {
        let table = TableRequest { api_version: "meta.k8s.io/v1", include: Include::Metadata };
        let pod = json!({"metadata": {"name": "web-1", "namespace": "demo", "resourceVersion": "7"},
            "spec": {"nodeName": "sim-node-1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.9", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2000-01-01T00:00:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let got = table.object(&PODS, &pod);
        assert_eq!(got["metadata"]["resourceVersion"], "7");
        let cells = got["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[..3], [json!("web-1"), json!("1/2"), json!("CrashLoopBackOff")]);
        assert!(cells[3].as_str().unwrap().starts_with("2 ("), "{}", cells[3]);
        assert_eq!(cells[5..], [json!("10.244.0.9"), json!("sim-node-1"), json!("<none>"), json!("<none>")]);
        assert_eq!(got["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(got["rows"][0]["object"]["metadata"]["namespace"], "demo");
        let names: Vec<&str> = got["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]);
        let map = TableRequest { include: Include::None, ..table }.object(&CONFIGMAPS, &json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}));
        assert_eq!(map["rows"][0], json!({"cells": ["c", 2, "<unknown>"]}));
    }
}
