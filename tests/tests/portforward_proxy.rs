//! Port-forward through the proxy (`/clusters/{cluster}/…/pods/{pod}/portforward`), end to end
//! against kube-sim's echo listeners: kube-rs and a raw base64 socket over the legacy channel
//! protocol, kubectl over its SPDY WebSocket tunnel and over the `Upgrade: SPDY/3.1` fallback
//! (pod and service, 20 connections at once), the official Python client, and the refusals
//! (a bad `ports` list, no token, a foreign origin) answered before any upgrade.
//! The kubectl tests are ignored by a plain `cargo test`; `cargo xtask test` runs them.

use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_sim::{Seed, Sim, SimConfig, User};
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

async fn demo_sim_with(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await.expect("the simulator starts")
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
    through_proxy_as(proxy, None)
}

fn through_proxy_as(proxy: &ProxyProcess, token: Option<&str>) -> kube::Client {
    let mut config = kube::Config::new(format!("{}/clusters/sim", proxy.http_url()).parse().unwrap());
    config.default_retry = false;
    config.auth_info.token = token.map(|t| t.to_owned().into());
    kube::Client::try_from(config).expect("a client")
}

/// The client's own token is the identity upstream: a user of namespace `demo` forwards to a
/// pod there, and the cluster's 403 for `default` reaches it as the cluster's Status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_token_is_the_identity_upstream() {
    let sim = demo_sim_with(vec![User::parse("alice:alice-token:demo").unwrap()]).await;
    let token_mode = ProxySettings { auth: AuthSettings { mode: AuthMode::Token, allow_anonymous_remote: false }, ..settings() };
    let proxy = ProxyProcess::start(token_mode, kubeconfig(&[("sim", &sim.url(), None)]));
    let alice = through_proxy_as(&proxy, Some("alice-token"));
    let api_pod = pod_of_app(&sim, "demo", "api");
    let mut forwarder = within("port-forward to start", Api::<Pod>::namespaced(alice.clone(), "demo").portforward(&api_pod, &[8080])).await.expect("alice may forward in demo");
    let mut stream = forwarder.take_stream(8080).expect("a stream for port 8080");
    stream.write_all(b"as alice").await.expect("write");
    let mut back = [0u8; 8];
    within("the echo", stream.read_exact(&mut back)).await.expect("read");
    assert_eq!(&back, b"as alice");
    drop(stream);
    within("the forwarder to finish", forwarder.join()).await.expect("a clean end");
    let hello = pod_of_app(&sim, "default", "hello");
    match Api::<Pod>::namespaced(alice, "default").portforward(&hello, &[ECHO_PORT]).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"), "{status:?}"),
        Err(other) => panic!("expected the cluster's 403 Status, got {other:?}"),
        Ok(_) => panic!("alice forwarded to a pod outside her namespace"),
    }
    proxy.stop();
    sim.shutdown().await;
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

/// A port nothing accepts: the kubelet's text reaches the client on the port's error channel as
/// the cluster framed it, after the port prefixes, and the socket then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_channel_passes_through() {
    let (sim, proxy) = stack(settings()).await;
    let pod = pod_of_app(&sim, "default", "hello");
    let direct = kubemux_e2e::sim_client(&sim).await;
    kubemux_e2e::hook(&direct, "POST", &format!("/_sim/portforward/refuse?port={ECHO_PORT}&namespace=default&pod={pod}")).await;
    let path = format!("/clusters/sim/api/v1/namespaces/default/pods/{pod}/portforward?ports={ECHO_PORT}");
    let (mut socket, _) = ws::connect(proxy.addr(), &path, "v4.channel.k8s.io", &[]).await.expect("the upgrade");
    let mut frames = Vec::new();
    let close = loop {
        match within("the error and the close", socket.next()).await {
            Some(Ok(Message::Binary(data))) => frames.push(data.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => break frame,
            other => panic!("expected binary frames and a close, got {other:?}"),
        }
    };
    let prefix = ECHO_PORT.to_le_bytes();
    assert!(frames.contains(&vec![0, prefix[0], prefix[1]]) && frames.contains(&vec![1, prefix[0], prefix[1]]), "{frames:?}");
    let error: Vec<u8> = frames.iter().filter(|f| f.first() == Some(&1) && f.len() > 3).flat_map(|f| f[1..].to_vec()).collect();
    let error = String::from_utf8_lossy(&error);
    assert!(error.starts_with(&format!("error forwarding port {ECHO_PORT} to pod {pod}")) && error.contains("connection refused"), "{error}");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000), "the cluster's close is passed on");
    proxy.stop();
    sim.shutdown().await;
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
    // No upgrade at all goes to the cluster, which says what is missing.
    let plain = kubemux_testkit::http::get(&format!("{}/clusters/sim/api/v1/namespaces/default/pods/{pod}/portforward?ports={ECHO_PORT}", proxy.http_url())).await;
    assert_eq!(plain.status.as_u16(), 400, "{}", plain.body);
    assert!(plain.body.contains("Upgrade request required"), "{}", plain.body);
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
        let refused = ws::connect(proxy.addr(), &path, protocol, &[]).await.err().unwrap_or_else(|| panic!("{protocol}: upgraded without a token"));
        assert_eq!(refused.status, 401, "{protocol}: {}", refused.body);
        let foreign = [("origin", "https://evil.example"), ("authorization", "Bearer t")];
        let refused = ws::connect(proxy.addr(), &path, protocol, &foreign).await.err().unwrap_or_else(|| panic!("{protocol}: upgraded from a foreign origin"));
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
    let direct = kubemux_e2e::sim_client(&sim).await;
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
        // The cluster saw kubectl's own transport: the proxy relays, it does not translate.
        let listed = kubemux_e2e::hook(&direct, "GET", "/_sim/portforward").await;
        let sim_transport = if websockets { "websocket" } else { "spdy" };
        assert_eq!(listed["connections"][0]["transport"].as_str(), Some(sim_transport), "{target}: {listed}");
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

// ---- the official Python client ----

/// The Python client's `portforward()` (`kubernetes.stream`: `v4.channel.k8s.io` over
/// websocket-client, which also sends an `Origin` of the proxy's own host) to the echo port:
/// bytes both ways, and no error on the port's error channel.
const PYTHON_PORT_FORWARD: &str = r#"
import sys
from kubernetes import client
from kubernetes.stream import portforward

host, pod, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
configuration = client.Configuration()
configuration.host = host
api = client.CoreV1Api(client.ApiClient(configuration))
forward = portforward(api.connect_get_namespaced_pod_portforward, pod, "default", ports=str(port))
sock = forward.socket(port)
sock.settimeout(20)
sent = bytes(i % 251 for i in range(100000))
sock.sendall(sent)
back = b""
while len(back) < len(sent):
    chunk = sock.recv(65536)
    if not chunk:
        break
    back += chunk
assert back == sent, "the echo differs: %d bytes back of %d" % (len(back), len(sent))
error = forward.error(port)
assert error is None, "error channel: %r" % error
sock.close()
forward.close()
print("echoed", len(back))
"#;

/// A virtualenv with the `kubernetes` package under `~/.cache/kubemux/python-kubernetes`,
/// made (from PyPI) the first time. `None` when python3 or its venv module is missing: the
/// caller skips, loudly, or fails under `CI`.
async fn python_with_kubernetes() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME")?;
    let venv = std::path::Path::new(&home).join(".cache/kubemux/python-kubernetes");
    let python = venv.join("bin/python");
    let has_package = |python: std::path::PathBuf| async move {
        tokio::process::Command::new(&python).args(["-c", "import kubernetes"]).output().await.map(|o| o.status.success()).unwrap_or(false)
    };
    if has_package(python.clone()).await {
        return Some(python);
    }
    let made = tokio::process::Command::new("python3").args(["-m", "venv"]).arg(&venv).output().await;
    if !made.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let install = tokio::process::Command::new(venv.join("bin/pip")).args(["install", "--quiet", "kubernetes"]).output();
    let installed = kubemux_testkit::wait::within_for(std::time::Duration::from_secs(300), "pip install kubernetes", install).await.expect("pip runs");
    assert!(installed.status.success(), "pip install kubernetes failed: {}", String::from_utf8_lossy(&installed.stderr));
    Some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_portforward_echoes_through_the_proxy() {
    let Some(python) = python_with_kubernetes().await else {
        assert!(std::env::var_os("CI").is_none(), "python3 with the venv module is required under CI for the Python client test");
        eprintln!("SKIPPED python_client_portforward_echoes_through_the_proxy: python3 or its venv module is missing");
        return;
    };
    let (sim, proxy) = stack(settings()).await;
    let pod = pod_of_app(&sim, "default", "hello");
    let host = format!("{}/clusters/sim", proxy.http_url());
    let run = tokio::process::Command::new(python).args(["-c", PYTHON_PORT_FORWARD, &host, &pod, &ECHO_PORT.to_string()]).kill_on_drop(true).output();
    // Importing the package alone takes seconds on a busy machine.
    let output = kubemux_testkit::wait::within_for(std::time::Duration::from_secs(60), "the Python client's port-forward", run).await.expect("python runs");
    assert!(output.status.success(), "the Python client failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "echoed 100000");
    proxy.stop();
    sim.shutdown().await;
}
