//! The objects a simulator starts with.

use serde_json::{Value, json};

use crate::Seed;
use crate::resources::{CONFIGMAPS, DEPLOYMENTS, NAMESPACES, PODS, SECRETS, SERVICES};
use crate::status::ApiError;
use crate::store::Store;

/// Label that marks objects the churn task may change.
pub const CHURN_LABEL: &str = "kube-sim/churn";

/// Creates the seed's objects.
pub fn seed(store: &Store, seed: Seed) -> Result<(), ApiError> {
    let namespaces: &[&str] = match seed {
        Seed::Empty => &["default"],
        Seed::Demo => &["default", "kube-system", "demo"],
    };
    for ns in namespaces {
        store.create(&NAMESPACES, "", json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}))?;
    }
    if seed == Seed::Empty {
        return Ok(());
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
    for (i, (ns, app, replicas, containers)) in workloads.iter().enumerate() {
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
        let hash = format!("{:x}", 0x5f6d7c8b9u64 + i as u64 * 0x1111);
        for r in 0..*replicas {
            let mut spec = template["spec"].clone();
            spec["nodeName"] = json!(format!("sim-node-{}", 1 + (i as i64 + r) % 2));
            store.create(&PODS, ns, json!({
                "metadata": {"generateName": format!("{app}-{hash}-"), "labels": labels},
                "spec": spec
            }))?;
        }
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
    for ns in namespaces {
        store.create(&CONFIGMAPS, ns, json!({"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nkube-sim has no TLS\n-----END CERTIFICATE-----\n"}}))?;
    }
    Ok(())
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
        assert_eq!(namespaces.len(), 3);
        assert!(pods.iter().all(|p| p["status"]["phase"] == "Running"));
        assert!(!store.list(&SERVICES, None).1.is_empty() && !store.list(&CONFIGMAPS, None).1.is_empty());
        let empty = Store::new(1, 1000);
        seed(&empty, Seed::Empty).unwrap();
        assert_eq!(empty.list(&NAMESPACES, None).1.len(), 1);
    }
}
