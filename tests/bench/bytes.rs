//! `kubemux-bench-bytes`: bytes to the browser per MODIFIED pod event on a realistic status-churn
//! workload, for `cargo xtask bench bytes` (issue 13's "Fewer bytes"). Prints its table on stdout
//! as tab-separated lines (`columns`, `row`, `method`); progress goes to stderr.
//!
//! The workload: pods shaped like a StatefulSet's on a real cluster (owner references, probes,
//! resources, a projected service-account volume, five conditions, `managedFields` of the
//! controller manager and the kubelet, the last-applied annotation on some), 6–8 KB each; most
//! writes are the kubelet's status updates (readiness flips, restarts, probe times), the rest an
//! operator's annotation, and every write stamps its manager's `managedFields` time, as the API
//! server does.
//!
//! Measured: the raw watch (each line of a direct watch on kube-sim) and kubemux's frames (each
//! WebSocket message through the real proxy, plus its frame header) for whole objects, the default
//! projection, deltas, and both. Modelled from the whole-object frames the proxy sent, in order,
//! with `kubemux_protocol::delta` (what the measured rows should come to): the default projection,
//! a merge-patch delta against the version the subscriber holds, both, and a connection-long
//! deflate (permessage-deflate with context takeover, one sync flush per message), which
//! tungstenite cannot send, on top of whole-object frames and of both.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use flate2::{Compress, Compression, FlushCompress};
use futures::{AsyncBufReadExt, SinkExt, StreamExt};
use kube_sim::resources::{NAMESPACES, PODS};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, kubeconfig, sim_client};
use kubemux_protocol::delta::{LAST_APPLIED, Projection, merge_patch};
use kubemux_protocol::frames::{SUBPROTOCOL, SUBPROTOCOL_DEFLATE};
use kubemux_proxy::ProxySettings;
use kubemux_testkit::ws::{DeflatedMux, mux_connect_offering_deflate};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const NAMESPACE: &str = "bytes";
const POD_COUNT: usize = 200;
const CHANGES: usize = 5_000;
/// Of every 20 writes, this many are the kubelet's status updates; the rest an operator's
/// annotation.
const STATUS_SHARE: usize = 17;
/// Writes per millisecond tick: paced so that neither watch falls behind.
const PER_TICK: usize = 2;
const SEED: u64 = 13;
/// The label of the write after the workload, which ends the projecting watch's count.
const END_LABEL: &str = "bench-end";

fn managed_field(manager: &str, subresource: Option<&str>, time: &str, fields: Value) -> Value {
    let mut entry = json!({"manager": manager, "operation": "Update", "apiVersion": "v1", "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields});
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    entry
}

/// A pod as a StatefulSet's controller and the kubelet leave it on a real cluster (a StatefulSet's:
/// the simulator's garbage collector would take a ReplicaSet's pod whose set it does not hold).
fn realistic_pod(index: usize) -> Value {
    let app = ["checkout", "payments", "catalog", "frontend", "search"][index % 5];
    let hash = format!("{:x}", 0x5f6d7c8b9au64 + (index as u64 % 7));
    let name = format!("{app}-{index}");
    let time = "2026-11-30T08:15:42Z";
    let controller_fields = json!({
        "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:controller-revision-hash": {}, "f:statefulset.kubernetes.io/pod-name": {}, "f:app.kubernetes.io/version": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"d2b1c0de-0000-4000-8000-00000000000a\"}": {}}},
        "f:spec": {"f:containers": {format!("k:{{\"name\":\"{app}\"}}"): {".": {}, "f:env": {".": {}, "k:{\"name\":\"LOG_LEVEL\"}": {".": {}, "f:name": {}, "f:value": {}}, "k:{\"name\":\"POD_IP\"}": {".": {}, "f:name": {}, "f:valueFrom": {".": {}, "f:fieldRef": {}}}},
            "f:image": {}, "f:imagePullPolicy": {}, "f:livenessProbe": {".": {}, "f:failureThreshold": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}}, "f:periodSeconds": {}, "f:successThreshold": {}, "f:timeoutSeconds": {}},
            "f:name": {}, "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}},
            "f:readinessProbe": {".": {}, "f:failureThreshold": {}, "f:httpGet": {".": {}, "f:path": {}, "f:port": {}, "f:scheme": {}}, "f:periodSeconds": {}, "f:successThreshold": {}, "f:timeoutSeconds": {}},
            "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
            "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}
    });
    let kubelet_fields = json!({"f:status": {"f:conditions": {"k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
        "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}, "k:{\"type\":\"PodReadyToStartContainers\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
        "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}},
        "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {".": {}, "k:{\"ip\":\"10.244.1.17\"}": {".": {}, "f:ip": {}}}, "f:startTime": {}}});
    let mut annotations = json!({"kubectl.kubernetes.io/restartedAt": "2026-11-29T17:02:11Z", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"});
    if index.is_multiple_of(3) {
        let applied = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": app}, "name": name, "namespace": NAMESPACE}, "spec": {"containers": [{"image": format!("registry.example.com/shop/{app}:1.14.2"), "name": app, "ports": [{"containerPort": 8080}]}]}});
        annotations[LAST_APPLIED] = json!(format!("{applied}\n"));
    }
    // Feature flags, more on some pods than others: sizes spread over 6–8 KB.
    let mut env = vec![json!({"name": "LOG_LEVEL", "value": "info"}), json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}})];
    env.extend((0..index % 16).map(|k| json!({"name": format!("FEATURE_FLAG_{k}"), "value": format!("rollout-cohort-{}-enabled", (index + k) % 9)})));
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": time});
    json!({
        "metadata": {
            "name": name, "generateName": format!("{app}-"), "namespace": NAMESPACE,
            "labels": {"app": app, "controller-revision-hash": format!("{app}-{hash}"), "statefulset.kubernetes.io/pod-name": name, "app.kubernetes.io/version": "1.14.2"},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": app, "uid": "d2b1c0de-0000-4000-8000-00000000000a", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [managed_field("kube-controller-manager", None, time, controller_fields), managed_field("kubelet", Some("status"), time, kubelet_fields)]
        },
        "spec": {
            "containers": [{
                "name": app, "image": format!("registry.example.com/shop/{app}:1.14.2"), "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": env,
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"
            }],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}, {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}], "defaultMode": 420}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "serviceAccount": "default",
            "nodeName": format!("sim-node-{}", 1 + index % 2), "securityContext": {}, "schedulerName": "default-scheduler", "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority", "priority": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}, {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running",
            "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
            "hostIP": "172.18.0.3", "hostIPs": [{"ip": "172.18.0.3"}], "podIP": format!("10.244.1.{}", 2 + index % 250), "podIPs": [{"ip": format!("10.244.1.{}", 2 + index % 250)}], "startTime": time,
            "containerStatuses": [{"name": app, "state": {"running": {"startedAt": time}}, "lastState": {}, "ready": true, "restartCount": 0,
                "image": format!("registry.example.com/shop/{app}:1.14.2"), "imageID": format!("registry.example.com/shop/{app}@sha256:{}", "3f9a".repeat(16)),
                "containerID": format!("containerd://{}", "9c1e".repeat(16)), "started": true}],
            "qosClass": "Burstable"
        }
    })
}

fn stamp(pod: &mut Value, manager: &str, time: &str) {
    if let Some(entries) = pod["metadata"]["managedFields"].as_array_mut() {
        for entry in entries.iter_mut().filter(|e| e["manager"] == manager) {
            entry["time"] = json!(time);
        }
    }
}

/// One write of the workload, as the kubelet or an operator makes it.
fn change(pod: &mut Value, beat: usize, rng: &mut fastrand::Rng) {
    let time = format!("2026-11-30T{:02}:{:02}:{:02}Z", 9 + beat / 3600, (beat / 60) % 60, beat % 60);
    if beat % 20 < STATUS_SHARE {
        let status = &mut pod["status"];
        match rng.u8(0..3) {
            // Readiness flips: Ready and ContainersReady with their transition times.
            0 => {
                let ready = status["containerStatuses"][0]["ready"].as_bool() != Some(true);
                status["containerStatuses"][0]["ready"] = json!(ready);
                for condition in status["conditions"].as_array_mut().into_iter().flatten().filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady") {
                    condition["status"] = json!(if ready { "True" } else { "False" });
                    condition["lastTransitionTime"] = json!(time);
                }
            }
            // A restart: the last state, a new start time and the count.
            1 => {
                let container = &mut status["containerStatuses"][0];
                let count = container["restartCount"].as_u64().unwrap_or(0) + 1;
                container["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": container["state"]["running"]["startedAt"].clone(), "finishedAt": time}});
                container["state"] = json!({"running": {"startedAt": time}});
                container["restartCount"] = json!(count);
            }
            // A probe's time.
            _ => {
                status["conditions"][2]["lastProbeTime"] = json!(time);
            }
        }
        stamp(pod, "kubelet", &time);
    } else {
        pod["metadata"]["annotations"]["shop.example.com/last-reconciled"] = json!(time);
        stamp(pod, "kube-controller-manager", &time);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn watch_frame(path: &str, projection: bool, deltas: bool) -> Message {
    let mut watch = json!({"op": "watch", "id": "bytes", "cluster": "sim", "path": path});
    if projection {
        watch["projection"] = json!("default");
    }
    if deltas {
        watch["deltas"] = json!(true);
    }
    Message::Text(watch.to_string().into())
}

async fn proxy_watch(mux_url: &str, path: &str, projection: bool, deltas: bool) -> anyhow::Result<Ws> {
    let mut request = mux_url.into_client_request()?;
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(watch_frame(path, projection, deltas)).await?;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message?
            && text.as_str().starts_with(r#"{"op":"synced""#)
        {
            return Ok(ws);
        }
    }
    bail!("the proxy closed before synced")
}

/// A watch on a `kubemux.v1+deflate` connection, as the npm package opens it, once synced.
async fn deflated_watch(mux_url: &str, path: &str, projection: bool, deltas: bool) -> anyhow::Result<DeflatedMux> {
    let (ws, selected) = mux_connect_offering_deflate(mux_url).await;
    anyhow::ensure!(selected == SUBPROTOCOL_DEFLATE, "the proxy selected {selected:?}");
    let mut mux = DeflatedMux::new(ws);
    mux.ws.send(watch_frame(path, projection, deltas)).await?;
    mux.until(&["synced"]).await;
    Ok(mux)
}

/// Counts every message a compressed connection gets, with its WebSocket header, up to the one
/// whose frames include the one carrying `END_LABEL` (counted whole: it also carries writes'
/// frames), and the frames before that one.
async fn count_deflated_until_end(mut mux: DeflatedMux) -> Sent {
    let mut sent = Sent::default();
    let before = mux.inflater.wire_bytes;
    loop {
        let frame = mux.next().await;
        if frame.to_string().contains(END_LABEL) {
            break;
        }
        match frame["op"].as_str() {
            Some("patch") => sent.patches += 1,
            Some("event") => sent.events += 1,
            _ => sent.bookmarks += 1,
        }
    }
    sent.bytes = mux.inflater.wire_bytes - before;
    sent.messages = mux.inflater.messages;
    sent
}

/// A WebSocket frame's header from server to client (unmasked) for a payload of `len` bytes.
fn ws_header(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// A connection-long deflate stream: permessage-deflate with context takeover, each message
/// ended with a sync flush whose trailing `00 00 ff ff` the extension leaves off.
struct Deflate {
    stream: Compress,
    bytes: usize,
    out: Vec<u8>,
    /// Time spent compressing: the sender's cost.
    busy: Duration,
}

impl Deflate {
    fn new() -> Deflate {
        Deflate { stream: Compress::new(Compression::default(), false), bytes: 0, out: Vec::with_capacity(64 * 1024), busy: Duration::ZERO }
    }

    fn message(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let start = std::time::Instant::now();
        self.out.clear();
        self.out.reserve(payload.len() + 64);
        let before = self.stream.total_out();
        let mut input = payload;
        loop {
            let consumed = self.stream.total_in();
            self.stream.compress_vec(input, &mut self.out, FlushCompress::Sync)?;
            input = &input[(self.stream.total_in() - consumed) as usize..];
            if input.is_empty() && self.out.len() < self.out.capacity() {
                break;
            }
            self.out.reserve(64 * 1024);
        }
        let len = (self.stream.total_out() - before) as usize - 4;
        self.bytes += len + ws_header(len);
        self.busy += start.elapsed();
        Ok(())
    }
}

/// The frames the extension would send, modelled from today's frames.
#[derive(Default)]
struct Model {
    /// Today's frames: payload and header.
    today: usize,
    projected: usize,
    delta: usize,
    both: usize,
    /// Events whose projected object changed only in its resourceVersion: not sent, the resume
    /// point carried by a bookmark at most once a second.
    suppressed: usize,
    /// Deltas the sender would have answered with the whole object (a `null` it cannot patch,
    /// or a patch no smaller).
    full_instead: usize,
}

fn frame_len(frame: &Value) -> usize {
    let len = frame.to_string().len();
    len + ws_header(len)
}

/// The delta frame for a change from `base` to `object`, or `None` when the whole object is to
/// be sent (no exact patch, or one no smaller).
fn delta_frame(base: &Value, object: &Value, key: &str) -> Option<Value> {
    let mut patch = merge_patch(base, object).ok()??;
    // The frame carries the versions; the patch need not say the new one again.
    if let Some(metadata) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        if metadata.is_empty() {
            patch.as_object_mut()?.remove("metadata");
        }
    }
    let frame = json!({"op": "delta", "id": "bytes", "key": key, "base": base["metadata"]["resourceVersion"], "rv": object["metadata"]["resourceVersion"], "patch": patch});
    (frame.to_string().len() < object.to_string().len()).then_some(frame)
}

/// Whether `a` and `b` differ in more than `metadata.resourceVersion`.
fn changed_beyond_version(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(metadata) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        v
    };
    strip(a) != strip(b)
}

fn model(initial: &[Value], frames: &[String]) -> anyhow::Result<(Model, Deflate, Deflate)> {
    let key_of = |o: &Value| format!("{}/{}", o["metadata"]["namespace"].as_str().unwrap_or(""), o["metadata"]["name"].as_str().unwrap_or(""));
    let project = |o: &Value| {
        let mut o = o.clone();
        Projection::default().apply(&mut o);
        o
    };
    let mut held: std::collections::HashMap<String, (Value, Value)> = initial.iter().map(|o| (key_of(o), (o.clone(), project(o)))).collect();
    let mut m = Model::default();
    let (mut plain, mut compressed) = (Deflate::new(), Deflate::new());
    for text in frames {
        m.today += text.len() + ws_header(text.len());
        plain.message(text.as_bytes())?;
        let frame: Value = serde_json::from_str(text)?;
        let object = &frame["object"];
        let key = key_of(object);
        let (base, base_projected) = held.get(&key).cloned().context("a MODIFIED for a pod the subscriber does not hold")?;
        let projected = project(object);
        let mut projected_frame = frame.clone();
        projected_frame["object"] = projected.clone();
        m.projected += frame_len(&projected_frame);
        m.delta += delta_frame(&base, object, &key).map_or(text.len() + ws_header(text.len()), |f| frame_len(&f));
        if !changed_beyond_version(&base_projected, &projected) {
            m.suppressed += 1;
        } else {
            let sent = match delta_frame(&base_projected, &projected, &key) {
                Some(delta) => delta,
                None => {
                    m.full_instead += 1;
                    projected_frame
                }
            };
            m.both += frame_len(&sent);
            compressed.message(sent.to_string().as_bytes())?;
        }
        held.insert(key, (object.clone(), projected));
    }
    Ok((m, plain, compressed))
}

/// What a watch was sent for the writes.
#[derive(Debug, Default)]
struct Sent {
    bytes: usize,
    /// WebSocket messages, on a compressed connection.
    messages: usize,
    events: usize,
    patches: usize,
    bookmarks: usize,
}

/// Counts every frame `ws` gets, with its WebSocket header, up to the one carrying `END_LABEL`
/// (not counted); `None` if the socket ends first.
async fn count_until_end(mut ws: Ws) -> Option<Sent> {
    let mut sent = Sent::default();
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            let text = text.as_str();
            if text.contains(END_LABEL) {
                return Some(sent);
            }
            sent.bytes += text.len() + ws_header(text.len());
            match text.get(..14) {
                Some(r#"{"op":"patch","#) => sent.patches += 1,
                Some(r#"{"op":"event","#) => sent.events += 1,
                _ => sent.bookmarks += 1,
            }
        }
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, history: 100_000, ..SimConfig::default() }).await?;
    let store = &sim.state().store;
    store.create(&NAMESPACES, "", json!({"metadata": {"name": NAMESPACE}})).context("the namespace")?;
    let mut rng = fastrand::Rng::with_seed(SEED);
    let mut names = Vec::with_capacity(POD_COUNT);
    let mut sizes = Vec::with_capacity(POD_COUNT);
    for index in 0..POD_COUNT {
        let pod = store.create(&PODS, NAMESPACE, realistic_pod(index)).context("a bench pod")?;
        sizes.push(pod.to_string().len());
        names.push(pod["metadata"]["name"].as_str().unwrap_or_default().to_owned());
    }
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse()?, ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let initial: Vec<Value> = store.list(&PODS, Some(NAMESPACE)).1.iter().map(|o| (**o).clone()).collect();
    let request = http::Request::get(format!("{path}?watch=true&resourceVersion={}", store.current_rv())).body(Vec::new())?;
    let mut lines = api.request_stream(request).await?.lines();
    let mut ws = proxy_watch(&proxy.mux_url(), &path, false, false).await?;
    let slim = proxy_watch(&proxy.mux_url(), &path, true, false).await?;
    let delta = proxy_watch(&proxy.mux_url(), &path, false, true).await?;
    let slim_delta = proxy_watch(&proxy.mux_url(), &path, true, true).await?;
    let deflated_whole = deflated_watch(&proxy.mux_url(), &path, false, false).await?;
    let deflated_slim_delta = deflated_watch(&proxy.mux_url(), &path, true, true).await?;

    eprintln!("bench-bytes: {CHANGES} writes over {POD_COUNT} pods...");
    let direct = tokio::spawn(async move {
        let (mut bytes, mut seen) = (0usize, 0usize);
        while seen < CHANGES {
            let Some(Ok(line)) = lines.next().await else { break };
            if line.starts_with(r#"{"type":"MODIFIED""#) {
                bytes += line.len() + 1;
                seen += 1;
            }
        }
        (bytes, seen)
    });
    let proxied = tokio::spawn(async move {
        let mut frames = Vec::with_capacity(CHANGES);
        while frames.len() < CHANGES {
            let Some(Ok(message)) = ws.next().await else { break };
            if let Message::Text(text) = message
                && text.as_str().contains(r#""type":"MODIFIED""#)
            {
                frames.push(text.as_str().to_owned());
            }
        }
        frames
    });
    // The projecting and delta watches: every frame each is sent for the writes (events,
    // patches, and the bookmarks that carry hidden changes' versions), up to the frame of one
    // last write that changes a label (always shown), which is not counted.
    let projected = tokio::spawn(count_until_end(slim));
    let delta = tokio::spawn(count_until_end(delta));
    let slim_delta = tokio::spawn(count_until_end(slim_delta));
    let deflated_whole = tokio::spawn(count_deflated_until_end(deflated_whole));
    let deflated_slim_delta = tokio::spawn(count_deflated_until_end(deflated_slim_delta));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for beat in 0..CHANGES {
        if beat % PER_TICK == 0 {
            tick.tick().await;
        }
        let name = &names[rng.usize(0..POD_COUNT)];
        let mut writer = fastrand::Rng::with_seed(SEED ^ beat as u64);
        store
            .modify(&PODS, NAMESPACE, name, |pod| {
                change(pod, beat, &mut writer);
                Ok(())
            })
            .context("a workload write")?;
    }
    store
        .modify(&PODS, NAMESPACE, &names[0], |pod| {
            pod["metadata"]["labels"][END_LABEL] = json!("1");
            Ok(())
        })
        .context("the last write")?;
    let (raw, direct_seen) = tokio::time::timeout(Duration::from_secs(60), direct).await.context("the direct watch fell behind")??;
    let projected = tokio::time::timeout(Duration::from_secs(60), projected).await.context("the projecting watch fell behind")??.context("the projecting watch ended early")?;
    let delta = tokio::time::timeout(Duration::from_secs(60), delta).await.context("the delta watch fell behind")??.context("the delta watch ended early")?;
    let slim_delta = tokio::time::timeout(Duration::from_secs(60), slim_delta).await.context("the projecting delta watch fell behind")??.context("the projecting delta watch ended early")?;
    let deflated_whole = tokio::time::timeout(Duration::from_secs(60), deflated_whole).await.context("the compressed watch fell behind")??;
    let deflated_slim_delta = tokio::time::timeout(Duration::from_secs(60), deflated_slim_delta).await.context("the compressed projecting delta watch fell behind")??;
    let frames = tokio::time::timeout(Duration::from_secs(60), proxied).await.context("the proxied watch fell behind")??;
    if direct_seen != CHANGES || frames.len() != CHANGES {
        bail!("events lost: {direct_seen} direct and {} proxied of {CHANGES}", frames.len());
    }
    drop(proxy);
    let (m, deflated, deflated_both) = model(&initial, &frames)?;
    let micros = |d: &Deflate| d.busy.as_secs_f64() * 1e6 / CHANGES as f64;
    let per = |bytes: usize| bytes as f64 / CHANGES as f64;
    let raw_per = per(raw);
    let ratio = |bytes: usize| per(bytes) / raw_per;
    let goal = |bytes: usize| if ratio(bytes) <= 0.1 { "met".to_owned() } else { "not met".to_owned() };
    let row = |measure: &str, bytes: usize, how: &str| vec![measure.to_owned(), format!("{:.0}", per(bytes)), format!("{:.3}×", ratio(bytes)), goal(bytes), how.to_owned()];
    let rows = [
        vec!["raw watch line (direct on kube-sim)".to_owned(), format!("{raw_per:.0}"), "1.000×".to_owned(), String::new(), "measured".to_owned()],
        row("kubemux today (whole object)", m.today, "measured"),
        row("with the default projection", m.projected, "modelled"),
        row("with the default projection, as the proxy sends it", projected.bytes, "measured (`\"projection\":\"default\"`: hidden changes not sent, their bookmarks counted)"),
        row("with merge-patch deltas", m.delta, "modelled"),
        row("with merge-patch deltas, as the proxy sends them", delta.bytes, &format!("measured (`\"deltas\":true`: {} patches, {} whole events)", delta.patches, delta.events)),
        row("with projection and deltas", m.both, "modelled"),
        row(
            "with projection and deltas, as the proxy sends them",
            slim_delta.bytes,
            &format!("measured (both: {} patches, {} whole events, {} bookmarks)", slim_delta.patches, slim_delta.events, slim_delta.bookmarks),
        ),
        row("today's frames, deflated (permessage-deflate)", deflated.bytes, &format!("modelled; {:.1} µs of deflate per event", micros(&deflated))),
        row("projection and deltas, deflated", deflated_both.bytes, &format!("modelled; {:.1} µs of deflate per event", micros(&deflated_both))),
        row("whole objects on `kubemux.v1+deflate`, as the proxy sends them", deflated_whole.bytes, &format!("measured ({} events in {} messages)", deflated_whole.events, deflated_whole.messages)),
        row(
            "projection and deltas on `kubemux.v1+deflate`, as the proxy sends them",
            deflated_slim_delta.bytes,
            &format!(
                "measured ({} patches, {} whole events, {} bookmarks, in {} messages)",
                deflated_slim_delta.patches, deflated_slim_delta.events, deflated_slim_delta.bookmarks, deflated_slim_delta.messages
            ),
        ),
    ];
    sizes.sort_unstable();
    println!("columns\tbytes per MODIFIED pod event\tbytes\tof the raw watch\tgoal ≤ 0.1×\thow");
    for row in rows {
        println!("row\t{}", row.join("\t"));
    }
    let mut method = String::new();
    write!(
        method,
        "One run of `kubemux-bench-bytes` (release build), on loopback: {POD_COUNT} pods shaped like a StatefulSet's on a real cluster, {} to {} bytes each \
         (managedFields of the controller manager and the kubelet; the last-applied annotation on a third), then {CHANGES} writes, {STATUS_SHARE} in 20 \
         the kubelet's status updates (readiness flips, restarts, probe times) and the rest an operator's annotation, each stamping its manager's \
         managedFields time. Measured: each MODIFIED line of a direct watch on kube-sim, and each frame through kubemux-proxy with its WebSocket header, for a watch \
         without a projection, one with `\"projection\":\"default\"`, one with `\"deltas\":true` and one with both (whatever each is sent for the writes: \
         events, patches, and the bookmarks of hidden changes), and the first and last of these on a `kubemux.v1+deflate` connection (the compressed \
         messages with their WebSocket headers, up to and including the one that carries the last write's frame; zlib level {}). \
         Modelled from the proxy's whole-object frames in order with `kubemux_protocol::delta` (what the measured rows should come to): \
         the default projection (no managedFields, no last-applied annotation); a merge-patch delta (RFC 7386) against the version the subscriber holds, \
         sent whole when no smaller; both, where an event whose projected object changed only in its resourceVersion is not sent ({} of {CHANGES} here, \
         their resume point carried by a bookmark at most once a second, not counted) and {} went whole; and a connection-long deflate, as \
         permessage-deflate with context takeover would send it (zlib level 6, one sync flush per message), with the time it took on this machine.",
        sizes.first().copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0),
        kubemux_proxy::mux::DEFLATE_LEVEL,
        m.suppressed,
        m.full_instead
    )?;
    println!("method\t{method}");
    sim.shutdown().await;
    Ok(())
}
