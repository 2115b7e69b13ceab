//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`, what kubectl's typed clients
//! send), encoded here with k8s-pb as kubectl's Go encodes them: whatever they hold is stored and
//! read back as JSON, whole; what the simulator cannot read is refused and nothing is stored.

mod common;

use axum::http::Method;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use kube_sim::Seed;
use prost::Message;
use serde_json::json;

use common::Http;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The body kubectl sends: the `k8s\0` magic, then a `runtime.Unknown` around the message.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown { type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }), raw: Some(raw), ..Default::default() };
    [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat()
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn quantities(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity { string: s(v) })).collect()
}

/// A Deployment with far more than `kubectl create deployment` sets, with the empty strings,
/// `false`s and empty messages Go writes for every field it holds by value.
fn deployment() -> apps::Deployment {
    let env = vec![
        core::EnvVar { name: s("MODE"), value: s("fast"), ..Default::default() },
        core::EnvVar {
            name: s("POD"),
            value: s(""),
            value_from: Some(core::EnvVarSource { field_ref: Some(core::ObjectFieldSelector { field_path: s("metadata.name"), api_version: s("") }), ..Default::default() }),
            ..Default::default()
        },
    ];
    let http_get = core::HttpGetAction { path: s("/healthz"), port: Some(IntOrString { r#type: Some(0), int_val: Some(8080), str_val: s("") }), host: s(""), scheme: s(""), ..Default::default() };
    let container = core::Container {
        name: s("web"),
        image: s("nginx:1.27"),
        command: vec!["nginx".into()],
        args: vec!["-g".into(), "daemon off;".into()],
        working_dir: s(""),
        ports: vec![core::ContainerPort { name: s("http"), container_port: Some(8080), protocol: s("TCP"), host_port: Some(0), host_ip: s("") }],
        env,
        resources: Some(core::ResourceRequirements { limits: quantities(&[("cpu", "500m"), ("memory", "128Mi")]), requests: quantities(&[("cpu", "250m")]), ..Default::default() }),
        volume_mounts: vec![core::VolumeMount { name: s("cache"), mount_path: s("/cache"), read_only: Some(false), sub_path: s(""), ..Default::default() }],
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler { http_get: Some(http_get), ..Default::default() }),
            initial_delay_seconds: Some(3),
            period_seconds: Some(10),
            timeout_seconds: Some(0),
            ..Default::default()
        }),
        liveness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler { exec: Some(core::ExecAction { command: vec!["cat".into(), "/tmp/ok".into()] }), ..Default::default() }),
            ..Default::default()
        }),
        security_context: Some(core::SecurityContext { run_as_user: Some(1000), run_as_non_root: Some(false), ..Default::default() }),
        stdin: Some(false),
        tty: Some(false),
        ..Default::default()
    };
    let volume = core::Volume { name: s("cache"), volume_source: Some(core::VolumeSource { empty_dir: Some(Default::default()), ..Default::default() }) };
    let labels = [("app".to_owned(), "web".to_owned())];
    let template = core::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta { labels: labels.clone().into(), ..Default::default() }),
        spec: Some(core::PodSpec { containers: vec![container], volumes: vec![volume], termination_grace_period_seconds: Some(0), host_network: Some(false), ..Default::default() }),
    };
    let strategy = apps::DeploymentStrategy {
        r#type: s("RollingUpdate"),
        rolling_update: Some(apps::RollingUpdateDeployment {
            max_surge: Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: s("50%") }),
            max_unavailable: Some(IntOrString { r#type: Some(0), int_val: Some(0), str_val: s("") }),
        }),
    };
    let spec = apps::DeploymentSpec {
        replicas: Some(0),
        selector: Some(meta::LabelSelector { match_labels: labels.clone().into(), ..Default::default() }),
        template: Some(template),
        strategy: Some(strategy),
        min_ready_seconds: Some(5),
        paused: Some(false),
        ..Default::default()
    };
    let annotations = [("note".to_owned(), String::new())];
    apps::Deployment {
        metadata: Some(meta::ObjectMeta { name: s("web"), namespace: s(""), labels: labels.into(), annotations: annotations.into(), ..Default::default() }),
        spec: Some(spec),
        status: Some(Default::default()),
    }
}

#[tokio::test]
async fn a_deployment_sent_as_protobuf_reads_back_whole_as_json() {
    let sim = common::start(Seed::Empty).await;
    let http = Http::new(&sim);
    let body = envelope("apps/v1", "Deployment", deployment().encode_to_vec());
    let created = http.send(Method::POST, "/apis/apps/v1/namespaces/default/deployments", Some(PROTOBUF), body).await.ok();
    assert_eq!(created["metadata"]["name"], "web");

    let read = http.get("/apis/apps/v1/namespaces/default/deployments/web").await.ok();
    // Zero where Go holds a pointer is a value (`replicas: 0`, `emptyDir: {}`, `runAsNonRoot:
    // false`, `maxUnavailable: 0`); zero where it holds a value is unset, and left out.
    let container = json!({
        "name": "web", "image": "nginx:1.27", "command": ["nginx"], "args": ["-g", "daemon off;"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": "MODE", "value": "fast"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "initialDelaySeconds": 3, "periodSeconds": 10},
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/ok"]}},
        "securityContext": {"runAsUser": 1000, "runAsNonRoot": false},
    });
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container], "volumes": [{"name": "cache", "emptyDir": {}}], "terminationGracePeriodSeconds": 0}});
    assert_eq!(read["spec"]["template"], template, "{read}");
    assert_eq!(read["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}));
    assert_eq!((&read["spec"]["replicas"], &read["spec"]["minReadySeconds"], read["spec"].get("paused")), (&json!(0), &json!(5), None));
    assert_eq!(read["metadata"]["annotations"]["note"], "", "a map keeps its empty values");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_field_the_simulator_cannot_read_is_415_and_nothing_is_stored() {
    let sim = common::start(Seed::Empty).await;
    let http = Http::new(&sim);
    // Field 200 inside the metadata: prost would skip it; the simulator refuses the body.
    let mut metadata = meta::ObjectMeta { name: s("settings"), ..Default::default() }.encode_to_vec();
    metadata.extend([0xc0, 0x0c, 0x01]);
    let raw = [vec![0x0a, u8::try_from(metadata.len()).unwrap()], metadata, core::ConfigMap { data: [("mode".to_owned(), "fast".to_owned())].into(), ..Default::default() }.encode_to_vec()].concat();
    let refused = http.send(Method::POST, "/api/v1/namespaces/default/configmaps", Some(PROTOBUF), envelope("v1", "ConfigMap", raw)).await;
    let status = refused.status(415, "UnsupportedMediaType");
    assert!(status["message"].as_str().unwrap().contains("ConfigMap: the protobuf body cannot be read whole (field 200 of ObjectMeta"), "{status}");
    http.get("/api/v1/namespaces/default/configmaps/settings").await.status(404, "NotFound");

    // The same without it is stored.
    let configmap = core::ConfigMap { metadata: Some(meta::ObjectMeta { name: s("settings"), ..Default::default() }), data: [("mode".to_owned(), "fast".to_owned())].into(), ..Default::default() };
    http.send(Method::POST, "/api/v1/namespaces/default/configmaps", Some(PROTOBUF), envelope("v1", "ConfigMap", configmap.encode_to_vec())).await.ok();
    assert_eq!(http.get("/api/v1/namespaces/default/configmaps/settings").await.ok()["data"], json!({"mode": "fast"}));
    sim.shutdown().await;
}
