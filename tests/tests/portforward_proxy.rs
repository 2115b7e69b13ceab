//! Port-forward through the proxy (`/clusters/{cluster}/…/pods/{pod}/portforward`), end to end
//! against kube-sim's echo listeners: kube-rs and a raw base64 socket over the legacy channel
//! protocol, kubectl over its SPDY WebSocket tunnel and over the `Upgrade: SPDY/3.1` fallback
//! (pod and service, 20 connections at once), the official Python client, and the refusals
//! (a bad `ports` list, no token, a foreign origin) answered before any upgrade.
//! The kubectl tests are ignored by a plain `cargo test`; `cargo xtask test` runs them.

use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, kubeconfig};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::auth::{AuthMode, AuthSettings};
use kubemux_protocol::channel::{self, ChannelProtocol, Decoded};
use kubemux_testkit::kubectl::{Kubectl, echo_through};
use kubemux_testkit::wait::within;
use kubemux_testkit::ws;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

/// The demo seed's `hello` pods listen (echo) on this port.
const ECHO_PORT: u16 = 8000;

fn settings() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }
}

async fn demo_sim() -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.expect("the simulator starts")
}

/// A pod of the demo deployment `app` in `namespace`: the seed generates their names.
fn pod_of_app(sim: &Sim, namespace: &str, app: &str) -> String {
    let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, Some(namespace));
    pods.iter()
        .find(|p| p["metadata"]["labels"]["app"] == app)
        .and_then(|p| p["metadata"]["name"].as_str())
        .unwrap_or_else(|| panic!("the demo seed has an {app} pod in {namespace}"))
        .to_owned()
}

/// A sim and a proxy in front of it as cluster `sim`.
async fn stack(settings: ProxySettings) -> (Sim, ProxyProcess) {
    let sim = demo_sim().await;
    let proxy = ProxyProcess::start(settings, kubeconfig(&[("sim", &sim.url(), None)]));
    (sim, proxy)
}

fn through_proxy(proxy: &ProxyProcess) -> kube::Client {
    let mut config = kube::Config::new(format!("{}/clusters/sim", proxy.http_url()).parse().unwrap());
    config.default_retry = false;
    kube::Client::try_from(config).expect("a client")
}

fn payload(seed: u32, len: u32) -> Vec<u8> {
    (0..len).map(|i| ((seed * 7 + i) % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_portforward_echoes_through_the_proxy() {
    let (sim, proxy) = stack(settings()).await;
    let pod = pod_of_app(&sim, "default", "hello");
    let pods: Api<Pod> = Api::namespaced(through_proxy(&proxy), "default");
    let mut forwarder = within("port-forward to start", pods.portforward(&pod, &[ECHO_PORT])).await.expect("port-forward through the proxy");
    let mut stream = forwarder.take_stream(ECHO_PORT).expect("a stream for the port");
    for data in [b"ping through the proxy\n".to_vec(), payload(1, 200_000)] {
        stream.write_all(&data).await.expect("write to the forwarded port");
        let mut back = vec![0; data.len()];
        within("the echo", stream.read_exact(&mut back)).await.expect("read from the forwarded port");
        assert_eq!(back, data);
    }
    drop(stream);
    within("the forwarder to finish", forwarder.join()).await.expect("a clean end");
    // A pod that does not exist: the cluster's 404 reaches kube-rs as its Status.
    match pods.portforward("no-such-pod", &[ECHO_PORT]).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404, "{status:?}"),
        Err(other) => panic!("expected the cluster's 404 Status, got {other:?}"),
        Ok(_) => panic!("a port-forward to a missing pod was upgraded"),
    }
    proxy.stop();
    sim.shutdown().await;
}

/// `v4.base64.channel.k8s.io` end to end: the proxy asks the cluster for the same protocol, so
/// the port prefixes arrive as the kubelet writes them (`0QB8=`, `1QB8=` for port 8000), and
/// data goes both ways as base64 text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_channel_protocol_keeps_prefixes_and_framing() {
    let (sim, proxy) = stack(settings()).await;
    let pod = pod_of_app(&sim, "default", "hello");
    let path = format!("/clusters/sim/api/v1/namespaces/default/pods/{pod}/portforward?ports={ECHO_PORT}");
    let (mut socket, chosen) = ws::connect(proxy.addr(), &path, "v4.base64.channel.k8s.io", &[]).await.expect("the upgrade");
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let mut prefixes = vec![next_text(&mut socket, "the port prefixes").await, next_text(&mut socket, "the port prefixes").await];
    prefixes.sort();
    assert_eq!(prefixes, ["0QB8=", "1QB8="]);
    let data = b"base64 both ways";
    let channel::WsPayload::Text(frame) = channel::encode(ChannelProtocol::V4Base64, 0, data) else { panic!("a text frame") };
    socket.send(Message::Text(frame.into())).await.expect("send data");
    let mut echoed = Vec::new();
    while echoed.len() < data.len() {
        match channel::decode(ChannelProtocol::V4Base64, next_text(&mut socket, "the echo").await.as_bytes()) {
            Ok(Decoded::Data { channel: 0, payload }) => echoed.extend(payload),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(echoed, data);
    proxy.stop();
    sim.shutdown().await;
}

/// The next text message (pings skipped); anything else fails the test.
async fn next_text(socket: &mut ws::Ws, what: &str) -> String {
    loop {
        match within(what, socket.next()).await.expect("the socket is open").expect("a clean socket") {
            Message::Text(text) => return text.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{what}: expected a base64 text frame, got {other:?}"),
        }
    }
}

/// A missing, empty, zero, out-of-range or non-numeric port is a 400 Status before any upgrade,
/// as Kubernetes answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ports_are_refused_before_the_upgrade() {
    let (sim, proxy) = stack(settings()).await;
    let pod = pod_of_app(&sim, "default", "hello");
    for (query, words) in [("", "is required"), ("?ports=", "cannot be empty"), ("?ports=0", "must be > 0"), ("?ports=70000", "between 1 and 65535"), ("?ports=80,http", "\"http\"")] {
        let path = format!("/clusters/sim/api/v1/namespaces/default/pods/{pod}/portforward{query}");
        let refused = ws::connect(proxy.addr(), &path, "v4.channel.k8s.io", &[]).await.err().unwrap_or_else(|| panic!("{query:?} was upgraded"));
        assert_eq!(refused.status, 400, "{query:?}: {}", refused.body);
        let status: serde_json::Value = serde_json::from_str(&refused.body).expect("a Status body");
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("BadRequest")), "{status}");
        assert!(status["message"].as_str().unwrap_or_default().contains(words), "{query:?}: {status}");
    }
    proxy.stop();
    sim.shutdown().await;
}

/// Token mode: no token is a 401 and a foreign origin a 403, both before any upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_refuses_before_the_upgrade() {
    let token_mode = ProxySettings { auth: AuthSettings { mode: AuthMode::Token, allow_anonymous_remote: false }, ..settings() };
    let (sim, proxy) = stack(token_mode).await;
    let pod = pod_of_app(&sim, "default", "hello");
    let path = format!("/clusters/sim/api/v1/namespaces/default/pods/{pod}/portforward?ports={ECHO_PORT}");
    for protocol in ["v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"] {
        let refused = ws::connect(proxy.addr(), &path, protocol, &[]).await.err().expect("no upgrade without a token");
        assert_eq!(refused.status, 401, "{protocol}: {}", refused.body);
        let foreign = [("origin", "https://evil.example"), ("authorization", "Bearer t")];
        let refused = ws::connect(proxy.addr(), &path, protocol, &foreign).await.err().expect("no upgrade from a foreign origin");
        assert_eq!(refused.status, 403, "{protocol}: {}", refused.body);
    }
    let spdy = raw_request(proxy.addr(), &format!("POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n", proxy.addr())).await;
    assert!(spdy.starts_with("HTTP/1.1 401"), "{spdy}");
    proxy.stop();
    sim.shutdown().await;
}

/// Writes a raw HTTP/1.1 request and reads the answer's head.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write the request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = within("the answer", tcp.read(&mut buf)).await.expect("read the answer");
        assert!(n > 0, "the connection closed before the answer: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

// ---- kubectl ----

async fn kubectl_forwards(websockets: bool) {
    let (sim, proxy) = stack(settings()).await;
    let kubectl = Kubectl::for_server(&format!("{}/clusters/sim", proxy.http_url()));
    let pod = pod_of_app(&sim, "default", "hello");
    for target in [format!("pod/{pod}"), "svc/hello".to_owned()] {
        let (mut child, local) = kubectl.port_forward(&target, ECHO_PORT, websockets).await;
        assert_eq!(echo_through(local, b"hello through the proxy\n").await, b"hello through the proxy\n", "{target}");
        let big = payload(0, 1_000_000);
        assert_eq!(echo_through(local, &big).await, big, "{target}: a megabyte both ways");
        let connections = (0..20u32).map(|i| async move {
            let data = payload(i, 50_000);
            (echo_through(local, &data).await == data, i)
        });
        for (same, i) in futures::future::join_all(connections).await {
            assert!(same, "{target}: connection {i} of 20 got other bytes back");
        }
        child.start_kill().expect("stop kubectl");
        let _ = child.wait().await;
    }
    let metrics = kubemux_e2e::http_get(&format!("{}/metrics", proxy.http_url())).await;
    let transport = if websockets { "tunnel" } else { "spdy" };
    assert!(metrics.contains(&format!("kubemux_portforward_connections_total{{transport=\"{transport}\"}}")), "{metrics}");
    proxy.stop();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_port_forward_over_the_websocket_tunnel() {
    kubectl_forwards(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_port_forward_over_the_spdy_upgrade() {
    kubectl_forwards(false).await;
}
