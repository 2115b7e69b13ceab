//! The objects a simulator starts with.

use serde_json::{Value, json};

use crate::Seed;
use crate::resources::{CONFIGMAPS, DEPLOYMENTS, LEASES, NAMESPACES, NODES, PODS, SECRETS, SERVICES};
use crate::store::now_timestamp;
use crate::status::ApiError;
use crate::store::Store;

/// Label that marks objects the churn task may change.
pub const CHURN_LABEL: &str = "kube-sim/churn";

/// Creates the seed's objects.
pub fn seed(store: &Store, seed: Seed) -> Result<(), ApiError> {
    let namespaces: &[&str] = match seed {
        Seed::Empty => &["default"],
        Seed::Demo => &["default", "kube-system", "kube-node-lease", "demo"],
    };
    for ns in namespaces {
        store.create(&NAMESPACES, "", json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}))?;
    }
    if seed == Seed::Empty {
        return Ok(());
    }
    for number in 1..=NODE_COUNT {
        let node = store.create(&NODES, "", node(number))?;
        store.create(&LEASES, "kube-node-lease", node_lease(&node))?;
    }
    // (namespace, app, replicas, node, containers as (name, image, ports))
    type Container = (&'static str, &'static str, &'static [u16]);
    let workloads: [(&str, &str, i64, &[Container]); 5] = [
        ("demo", "web", 3, &[("nginx", "nginx:1.27", &[80]), ("log-shipper", "fluent-bit:3.1", &[])]),
        ("demo", "api", 2, &[("api", "ghcr.io/kubemux/demo-api:1.4", &[8080, 9090])]),
        ("default", "hello", 1, &[("hello", "busybox:1.36", &[8000])]),
        ("kube-system", "coredns", 2, &[("coredns", "registry.k8s.io/coredns/coredns:v1.11.3", &[53, 9153])]),
        ("kube-system", "metrics-server", 1, &[("metrics-server", "registry.k8s.io/metrics-server/metrics-server:v0.7.2", &[10250])]),
    ];
    for (ns, app, replicas, containers) in &workloads {
        let containers: Vec<Value> = containers
            .iter()
            .map(|(name, image, ports)| {
                let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p, "protocol": "TCP"})).collect();
                json!({"name": name, "image": image, "ports": ports, "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}})
            })
            .collect();
        let labels = json!({"app": app, CHURN_LABEL: "true"});
        let template = json!({"metadata": {"labels": labels}, "spec": {"containers": containers}});
        store.create(&DEPLOYMENTS, ns, json!({
            "metadata": {"name": app, "labels": {"app": app}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}, "template": template}
        }))?;
        let ports: Vec<Value> = template["spec"]["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| json!({"port": p["containerPort"], "targetPort": p["containerPort"], "protocol": "TCP", "name": format!("p{}", p["containerPort"])}))
            .collect();
        if !ports.is_empty() {
            store.create(&SERVICES, ns, json!({"metadata": {"name": app, "labels": {"app": app}}, "spec": {"selector": {"app": app}, "ports": ports}}))?;
        }
        store.create(&CONFIGMAPS, ns, json!({"metadata": {"name": format!("{app}-config"), "labels": {"app": app}}, "data": {"LOG_LEVEL": "info", "replicas": replicas.to_string()}}))?;
    }
    // A stateful pod with a stable name, and a toolbox nobody churns: a stable target for exec.
    store.create(&PODS, "demo", json!({
        "metadata": {"name": "redis-0", "labels": {"app": "redis", CHURN_LABEL: "true"}},
        "spec": {"containers": [{"name": "redis", "image": "redis:7.4", "ports": [{"containerPort": 6379, "protocol": "TCP"}]}]}
    }))?;
    store.create(&PODS, "default", json!({
        "metadata": {"name": "toolbox", "labels": {"app": "toolbox"}},
        "spec": {"containers": [{"name": "shell", "image": "busybox:1.36", "stdin": true, "tty": true}]}
    }))?;
    store.create(&SECRETS, "demo", json!({
        "metadata": {"name": "api-credentials", "labels": {"app": "api"}},
        "type": "Opaque",
        "data": {"username": "ZGVtbw==", "password": "bm90LWEtcmVhbC1zZWNyZXQ="}
    }))?;
    // The deployments' ReplicaSets and pods, as the controllers make them.
    crate::controller::settle(store);
    for ns in namespaces {
        store.create(&CONFIGMAPS, ns, json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nkube-sim has no TLS\n-----END CERTIFICATE-----\n"}}))?;
    }
    Ok(())
}

/// How many nodes the demo seed has: `sim-node-1` … `sim-node-N`.
pub const NODE_COUNT: u8 = 2;

/// The name of node `number`.
pub fn node_name(number: u8) -> String {
    format!("sim-node-{number}")
}

/// The address of a node, by name: `10.0.0.N` for `sim-node-N` (what pods on it carry as
/// `status.hostIP`), `10.0.0.1` for any other name.
pub fn node_ip(name: &str) -> String {
    let number = name.strip_prefix("sim-node-").and_then(|n| n.parse::<u8>().ok()).unwrap_or(1);
    format!("10.0.0.{number}")
}

/// A Ready node as a kubelet registers it: capacity, allocatable, addresses, nodeInfo and the
/// four conditions `kubectl describe node` shows.
fn node(number: u8) -> Value {
    let name = node_name(number);
    let now = now_timestamp();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let capacity = json!({"cpu": "4", "memory": "16375828Ki", "pods": "110", "ephemeral-storage": "102626232Ki", "hugepages-2Mi": "0"});
    let allocatable = json!({"cpu": "3800m", "memory": "15868Mi", "pods": "110", "ephemeral-storage": "94580335255", "hugepages-2Mi": "0"});
    json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": format!("10.244.{number}.0/24"), "podCIDRs": [format!("10.244.{number}.0/24")]},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": node_ip(&name)}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", u128::from(number)),
                "systemUUID": format!("00000000-0000-0000-0000-{:012x}", number),
                "bootID": format!("00000000-0000-0000-0000-b00{:09x}", number),
                "kernelVersion": "6.8.0-kube-sim",
                "osImage": "kube-sim (simulated)",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "v1.32.0",
                "operatingSystem": "linux",
                "architecture": "amd64"
            }
        }
    })
}

/// The heartbeat lease a kubelet keeps for its node (`kubectl describe node` shows its holder
/// and renew time), owned by the node.
fn node_lease(node: &Value) -> Value {
    let name = node["metadata"]["name"].clone();
    let renewed = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({
        "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renewed}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_seed_has_what_the_demo_needs() {
        let store = Store::new(1, 1000);
        seed(&store, Seed::Demo).unwrap();
        let (_, pods) = store.list(&PODS, None);
        assert!(pods.len() >= 6);
        let namespaces: std::collections::BTreeSet<_> = pods.iter().map(|p| p["metadata"]["namespace"].as_str().unwrap().to_owned()).collect();
        assert_eq!(namespaces.len(), 3, "pods in default, kube-system and demo");
        assert!(pods.iter().all(|p| p["status"]["phase"] == "Running"));
        assert!(!store.list(&SERVICES, None).1.is_empty() && !store.list(&CONFIGMAPS, None).1.is_empty());
        // Every node a pod names is served.
        let nodes: Vec<String> = store.list(&NODES, None).1.iter().map(|n| n["metadata"]["name"].as_str().unwrap().to_owned()).collect();
        assert_eq!(nodes, ["sim-node-1", "sim-node-2"]);
        assert!(pods.iter().all(|p| nodes.iter().any(|n| p["spec"]["nodeName"] == n.as_str())));
        let empty = Store::new(1, 1000);
        seed(&empty, Seed::Empty).unwrap();
        assert_eq!(empty.list(&NAMESPACES, None).1.len(), 1);
    }
}
