//! Upstream watches that cannot go on (DESIGN.md invariants 1 and 6): a watch the proxy cannot
//! send upstream, a resume point the proxy cannot catch up from, and a task that panics. Each
//! ends or resets its own subscription with a frame that says why; the other subscriptions on
//! the connection keep receiving, and nothing is left running.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::{ProxyProcess, http_get, kubeconfig, list, sim_client};
use kubemux_protocol::frames::{SUBPROTOCOL, ServerMessage, WatchQuery};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::metrics::TaskKind;
use kubemux_proxy::mux::MuxSettings;
use kubemux_proxy::registry::{InjectedPanic, RegistrySettings};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// Settings whose client messages fit a 40 KB selector.
fn settings() -> ProxySettings {
    let mux = MuxSettings { max_message_bytes: 256 * 1024, ..MuxSettings::default() };
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), mux, ..ProxySettings::default() }
}

async fn empty_sim() -> Sim {
    Sim::start(SimConfig { seed: Seed::Empty, ..SimConfig::default() }).await.unwrap()
}

fn labels(selector: &str) -> Option<WatchQuery> {
    Some(WatchQuery { label_selector: Some(selector.to_owned()), field_selector: None })
}

/// Settings with the test hook that makes `task` panic on watches with `label_selector`.
fn panicking(task: TaskKind, label_selector: &str) -> ProxySettings {
    let inject_panic = Some(InjectedPanic { task, label_selector: label_selector.to_owned() });
    ProxySettings { registry: RegistrySettings { inject_panic, ..RegistrySettings::default() }, ..settings() }
}

async fn create_configmap(api: &kube::Client, name: &str) {
    let body = json!({"metadata": {"name": name, "labels": {"doomed": "yes"}}});
    let request = http::Request::post(CONFIGMAPS).header("content-type", "application/json").body(body.to_string().into_bytes()).unwrap();
    api.request::<serde_json::Value>(request).await.unwrap();
}

/// One sample of the proxy's `/metrics`, by its full name with labels.
async fn metric(proxy: &ProxyProcess, sample: &str) -> Option<f64> {
    let text = http_get(&format!("{}/metrics", proxy.http_url())).await;
    text.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A legal selector of 40,000 bytes: URL-encoded ('=' and ',' take three bytes each) it is
/// twice that, past what a URI may hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_too_long_for_a_uri_ends_only_its_own_watch() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(1));
    client.watch("maps", "sim", CONFIGMAPS, None).await.unwrap();
    client.watch("long", "sim", CONFIGMAPS, labels(&vec!["a=b"; 10_000].join(","))).await.unwrap();

    let view = client.wait_for(Duration::from_secs(10), "an error for the long selector", |v| v.synced.contains_key("maps") && !v.errors_of("long").is_empty()).await.unwrap();
    let (_, fatal, status) = view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("long")).unwrap();
    assert!(*fatal, "the watch cannot be sent as it is, so it ends: {status:?}");
    assert_eq!(status.code, 414, "{status:?}");
    assert!(status.message.contains("65534"), "the message names the limit: {}", status.message);
    assert_eq!(view.errors_of("long").len(), 1, "one error: {:?}", view.errors);
    assert!(!view.synced.contains_key("long"));
    assert_eq!(metric(&proxy, "kubemux_upstream_watches").await, Some(1.0), "only the healthy watch runs");

    create_configmap(&api, "after").await;
    let view = client.wait_for(Duration::from_secs(10), "the new object on the healthy watch", |v| v.caches.get("maps").is_some_and(|c| c.len() == 1)).await.unwrap();
    assert_eq!(view.opens(), 1, "the connection never dropped");
}

/// Frames of one subscription on a raw socket, up to the first for which `last` holds.
async fn frames_until(socket: &mut Socket, id: &str, last: impl Fn(&ServerMessage) -> bool) -> Vec<ServerMessage> {
    let mut frames = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            let frame = ServerMessage::decode(text.as_str()).unwrap();
            let ours = match &frame {
                ServerMessage::Event { id: i, .. }
                | ServerMessage::Reset { id: i }
                | ServerMessage::Synced { id: i, .. }
                | ServerMessage::Bookmark { id: i, .. }
                | ServerMessage::Inventory { id: i, .. }
                | ServerMessage::Patch { id: i, .. } => i == id,
                ServerMessage::Error { id: i, .. } => i.as_deref() == Some(id),
                ServerMessage::Pong { .. } | ServerMessage::Stats { .. } => false,
            };
            if ours {
                let done = last(&frame);
                frames.push(frame);
                if done {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no last frame for {id}; frames so far {frames:?}"));
    frames
}

fn is_synced(frame: &ServerMessage) -> bool {
    matches!(frame, ServerMessage::Synced { .. })
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_socket(proxy: &ProxyProcess) -> Socket {
    let mut request = proxy.mux_url().into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// `resourceVersion: "0"` means "any" to Kubernetes, not a version to resume from: a watch from
/// it replays current objects in name order, not version order. The client gets `reset` and a
/// snapshot, and its objects are the simulator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_version_zero_gets_a_reset_and_a_snapshot() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    // Created in reverse name order, so name order is not version order.
    for name in ["c", "b", "a"] {
        create_configmap(&api, name).await;
    }
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let mut socket = raw_socket(&proxy).await;
    let watch = json!({"op": "watch", "id": "zero", "cluster": "sim", "path": CONFIGMAPS, "resourceVersion": "0"});
    socket.send(Message::Text(watch.to_string().into())).await.unwrap();

    let frames = frames_until(&mut socket, "zero", is_synced).await;
    assert!(matches!(frames.first(), Some(ServerMessage::Reset { .. })), "reset comes first: {frames:?}");
    let names: Vec<&str> = frames.iter().filter_map(|f| if let ServerMessage::Event { object, .. } = f { object["metadata"]["name"].as_str() } else { None }).collect();
    let mut truth: Vec<String> = list(&api, CONFIGMAPS).await.into_keys().map(|(_, name)| name).collect();
    truth.sort();
    assert_eq!(names, truth, "the snapshot is the simulator's objects, each once: {frames:?}");
}

/// A panic in an upstream task ends the subscriptions it served with a 500, and nothing else:
/// the other subscription on the connection keeps receiving, the panic is counted and the
/// dead task is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_upstream_task_ends_only_its_own_subscriptions() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(panicking(TaskKind::Upstream, "doomed=yes"), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(3));
    client.watch("maps", "sim", CONFIGMAPS, None).await.unwrap();
    client.watch("doomed", "sim", CONFIGMAPS, labels("doomed=yes")).await.unwrap();
    client.wait_for(Duration::from_secs(10), "both synced", |v| v.synced.contains_key("maps") && v.synced.contains_key("doomed")).await.unwrap();

    // The first watch line the doomed upstream reads sets off its panic.
    create_configmap(&api, "first").await;
    let view = client
        .wait_for(Duration::from_secs(10), "the doomed watch's error and the healthy watch's event", |v| !v.errors_of("doomed").is_empty() && v.caches.get("maps").is_some_and(|c| c.len() == 1))
        .await
        .unwrap();
    let (_, fatal, status) = view.errors.iter().find(|(id, _, _)| id.as_deref() == Some("doomed")).unwrap();
    assert!(*fatal && status.code == 500 && status.message.contains("internal error in the upstream watch"), "{status:?}");
    assert_eq!(view.errors.len(), 1, "no other error: {:?}", view.errors);
    assert_eq!(metric(&proxy, "kubemux_task_panics_total{task=\"upstream\"}").await, Some(1.0));
    assert_eq!(metric(&proxy, "kubemux_upstream_watches").await, Some(1.0), "the dead task is gone");

    create_configmap(&api, "second").await;
    let view = client.wait_for(Duration::from_secs(10), "the healthy watch still receiving", |v| v.caches.get("maps").is_some_and(|c| c.len() == 2)).await.unwrap();
    assert_eq!(view.opens(), 1, "the connection never dropped");
}

/// A panic in a resuming subscriber's catch-up ends that subscription with a 500; the other
/// subscription on the connection keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_catch_up_ends_only_its_own_subscription() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    create_configmap(&api, "a").await;
    let held = list(&api, CONFIGMAPS).await.into_values().next().unwrap()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    create_configmap(&api, "b").await;
    let proxy = ProxyProcess::start(panicking(TaskKind::CatchUp, "doomed=yes"), kubeconfig(&[("sim", &sim.url(), None)]));
    let mut socket = raw_socket(&proxy).await;
    let send = |frame: serde_json::Value| Message::Text(frame.to_string().into());
    socket.send(send(json!({"op": "watch", "id": "maps", "cluster": "sim", "path": CONFIGMAPS}))).await.unwrap();
    frames_until(&mut socket, "maps", is_synced).await;

    // A client that held version `held` before the proxy started: the proxy's ring does not
    // reach it, so it catches up, and the catch-up panics.
    let resume = json!({"op": "watch", "id": "resumed", "cluster": "sim", "path": CONFIGMAPS, "query": {"labelSelector": "doomed=yes"}, "resourceVersion": held});
    socket.send(send(resume)).await.unwrap();
    let frames = frames_until(&mut socket, "resumed", |f| matches!(f, ServerMessage::Error { .. })).await;
    let Some(ServerMessage::Error { fatal, status, .. }) = frames.last() else { unreachable!() };
    assert!(*fatal && status.code == 500 && status.message.contains("internal error in the catch-up watch"), "{status:?}");
    assert_eq!(metric(&proxy, "kubemux_task_panics_total{task=\"catch_up\"}").await, Some(1.0));

    create_configmap(&api, "c").await;
    frames_until(&mut socket, "maps", |f| matches!(f, ServerMessage::Event { object, .. } if object["metadata"]["name"] == "c")).await;
}

/// Timers configured as "practically never" (`--upstream-idle-timeout`, `--linger`) are taken at
/// their word: the watch serves, and a watch left alone lingers for the next subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_too_long_for_a_clock_mean_never() {
    let sim = empty_sim().await;
    let api = sim_client(&sim).await;
    let never = Duration::from_secs(u64::MAX);
    let registry = RegistrySettings { idle_timeout: never, linger: never, ..RegistrySettings::default() };
    let proxy = ProxyProcess::start(ProxySettings { registry, ..settings() }, kubeconfig(&[("sim", &sim.url(), None)]));
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(4));
    client.watch("first", "sim", CONFIGMAPS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "the snapshot", |v| v.synced.contains_key("first")).await.unwrap();
    create_configmap(&api, "live").await;
    client.wait_for(Duration::from_secs(10), "a live event", |v| v.caches.get("first").is_some_and(|c| c.len() == 1) || !v.errors.is_empty()).await.unwrap();

    // Left alone, the watch lingers; the next subscriber is served from it.
    client.unwatch("first");
    client.watch("second", "sim", CONFIGMAPS, None).await.unwrap();
    let view = client.wait_for(Duration::from_secs(10), "the second subscriber served", |v| v.synced.contains_key("second") || !v.errors.is_empty()).await.unwrap();
    assert!(view.errors.is_empty(), "{:?}", view.errors);
    assert_eq!(view.caches.get("second").map(|c| c.len()), Some(1));
    assert_eq!(metric(&proxy, "kubemux_task_panics_total{task=\"upstream\"}").await, None, "no task panicked");
}
