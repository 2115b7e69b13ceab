//! A forward opened in the browser: `/forwards/{name}/…` reverse-proxies HTTP and WebSockets to
//! the forward's target over a tunnel, with the proxy's admission rules; and the optional
//! probe (off by default). The pod's app is a real HTTP server in the test, which kube-sim's
//! pod reaches through its port redirect annotation (`kube-sim/port-80: HOST:PORT`), so the
//! test sees every request and every connection the app gets.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message as AppMessage, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt as _;
use futures::{SinkExt as _, StreamExt as _};
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::kubeconfig;
use kubemux_proxy::config::FileSource;
use kubemux_proxy::forward::worker::{ForwardStatus, Reason, State};
use kubemux_proxy::{Proxy, ProxySettings};
use kubemux_testkit::http::{self, StatusCode};
use kubemux_testkit::sim::{hook, sim_client};
use kubemux_testkit::wait::{changed_until, within};
use kubemux_testkit::ws;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The pod's app: what it was asked and how many connections it accepted.
struct App {
    addr: std::net::SocketAddr,
    connections: watch::Receiver<u64>,
    requests: Arc<Mutex<Vec<Value>>>,
}

/// Starts the app: `/healthz` answers `ok`, `POST /echo` streams the body back, `/ws` echoes
/// WebSocket messages, anything else answers what it received (method, URI, headers) as JSON.
async fn app() -> App {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let describe = move |method: Method, uri: Uri, headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let headers: serde_json::Map<String, Value> = headers.iter().map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?")))).collect();
            let request = json!({"method": method.as_str(), "uri": uri.to_string(), "headers": headers});
            seen.lock().unwrap().push(request.clone());
            axum::Json(request)
        }
    };
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/echo", post(|body: Body| async move { body }))
        .route(
            "/ws",
            get(|upgrade: WebSocketUpgrade| async move {
                upgrade.on_upgrade(|mut socket| async move {
                    while let Some(Ok(message)) = socket.recv().await {
                        if matches!(message, AppMessage::Text(_) | AppMessage::Binary(_)) && socket.send(message).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        )
        .fallback(any(describe));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (count, connections) = watch::channel(0u64);
    let listener = listener.tap_io(move |_| count.send_modify(|n| *n += 1));
    tokio::spawn(async move { axum::serve(listener, routes).await });
    App { addr, connections, requests }
}

/// A folder of its own with the simulator's kubeconfig (`token`: as which user) and a config
/// file: the simulator as cluster `sim`, `extra` top-level keys, and `forwards`.
fn config(name: &str, sim: &Sim, token: Option<&str>, extra: &str, forwards: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubemux-forwards-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kubeconfig(&[("sim", &sim.url(), token)]);
    std::fs::write(dir.join("sim.kubeconfig"), serde_json::to_string(&kubeconfig).unwrap()).unwrap();
    std::fs::write(dir.join("proxy.yaml"), format!("clusters:\n  - name: sim\n    kubeconfig: sim.kubeconfig\n{extra}forwards:\n{forwards}")).unwrap();
    dir
}

/// A forward entry to port 80 of `target` in namespace `demo`.
fn forward(name: &str, target: &str, extra: &str) -> String {
    format!("  - name: {name}\n    cluster: sim\n    namespace: demo\n    target: {target}\n    port: 80\n    localPort: 0\n    reconnectInitial: 0.2\n    reconnectMax: 1\n{extra}")
}

async fn start(dir: PathBuf) -> Proxy {
    let base = ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() };
    let source = FileSource { file: dir.join("proxy.yaml"), base, pinned: Box::new(|s| s) };
    Proxy::start_live(Box::new(source)).await.expect("the proxy starts")
}

async fn sim(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 0.0, users, ..SimConfig::default() }).await.unwrap()
}

/// Creates pod `name` in `demo`, whose ports go to the given addresses (`port → address`), as
/// the admin of a simulator with users.
async fn pod(sim: &Sim, name: &str, ports: &[(u16, std::net::SocketAddr)]) {
    let annotations: serde_json::Map<String, Value> = ports.iter().map(|(port, addr)| (format!("kube-sim/port-{port}"), json!(addr.to_string()))).collect();
    let container_ports: Vec<Value> = ports.iter().map(|(port, _)| json!({"containerPort": port})).collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations}, "spec": {"containers": [{"name": "app", "image": "app", "ports": container_ports}]}});
    let request =
        ::http::Request::post("/api/v1/namespaces/demo/pods").header("content-type", "application/json").header("authorization", "Bearer admin-token").body(pod.to_string().into_bytes()).unwrap();
    sim_client(sim).await.request_text(request).await.unwrap();
}

async fn status_until(proxy: &Proxy, name: &str, what: &str, wanted: impl FnMut(&ForwardStatus) -> bool) -> ForwardStatus {
    let mut status = proxy.app().forwards.status(name).unwrap_or_else(|| panic!("no forward {name}"));
    changed_until(&mut status, Duration::from_secs(15), what, wanted).await
}

fn url(proxy: &Proxy, path: &str) -> String {
    format!("http://{}{path}", proxy.addr())
}

fn json_body(response: &http::Response) -> Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.as_wire_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_websockets_reach_the_pods_app_through_the_forward() {
    let sim = sim(vec![]).await;
    let app = app().await;
    pod(&sim, "web-app", &[(80, app.addr)]).await;
    let proxy = start(config("http", &sim, None, "", &forward("web", "pod/web-app", ""))).await;
    status_until(&proxy, "web", "forward web Active", |s| s.state == State::Active).await;

    // A GET: the prefix is stripped, the query kept, the proxy's credentials and cookies
    // withheld, Host names the target, and the app learns where the request came from.
    let response =
        http::request(Method::GET, &url(&proxy, "/forwards/web/api/items?limit=2"), &[("authorization", "Bearer proxy-secret"), ("cookie", "proxy=1"), ("accept", "application/json")]).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.as_wire_text());
    let seen = json_body(&response);
    assert_eq!((seen["method"].as_str(), seen["uri"].as_str()), (Some("GET"), Some("/api/items?limit=2")), "{seen}");
    let headers = &seen["headers"];
    assert_eq!(headers["host"], "localhost", "{seen}");
    assert_eq!(headers["accept"], "application/json", "{seen}");
    assert_eq!(headers["x-forwarded-prefix"], "/forwards/web", "{seen}");
    assert_eq!(headers["x-forwarded-host"], proxy.addr().to_string(), "{seen}");
    assert!(headers.get("authorization").is_none() && headers.get("cookie").is_none(), "credentials reached the pod: {seen}");
    // `/forwards/web` alone is the app's `/`.
    assert_eq!(json_body(&http::get(&url(&proxy, "/forwards/web")).await)["uri"], "/");

    // A POST whose body (1 MiB) goes to the app and comes back.
    let body: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let response = http::send(Method::POST, &url(&proxy, "/forwards/web/echo"), &[("content-type", "application/octet-stream")], body.clone()).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.as_bytes(), String::from_utf8_lossy(&body).as_bytes(), "the echoed body differs");

    // A WebSocket through the forward echoes, text and binary.
    let (mut socket, _) = ws::connect(proxy.addr(), "/forwards/web/ws", "", &[]).await.expect("the upgrade is relayed");
    for message in [Message::Text("hello pod".into()), Message::Binary(vec![0u8, 1, 2, 255].into())] {
        within("the send", socket.send(message.clone())).await.unwrap();
        let back = within("the pod's echo", socket.next()).await.expect("a message").unwrap();
        assert_eq!(back, message);
    }
    within("the close", socket.close(None)).await.unwrap();

    // Every request went through the forward's tunnels, counted with its bytes.
    let listed = proxy.app().forwards.to_json();
    assert!(listed[0]["bytesOut"].as_u64() > Some(1024 * 1024), "{listed}");
    assert_eq!(app.requests.lock().unwrap().len(), 2, "the app saw each described request once");

    // An unknown forward is a 404 Status; a disallowed Origin is refused, on a plain request
    // and on an upgrade, before anything reaches the app.
    let unknown = http::get(&url(&proxy, "/forwards/nope/")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!((json_body(&unknown)["kind"].as_str(), json_body(&unknown)["message"].as_str()), (Some("Status"), Some("forward \"nope\" not found")));
    let before = *app.connections.borrow();
    let evil = http::request(Method::GET, &url(&proxy, "/forwards/web/"), &[("origin", "https://evil.example")]).await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    let refused = ws::connect(proxy.addr(), "/forwards/web/ws", "", &[("origin", "https://evil.example")]).await.expect_err("a disallowed origin is refused");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(*app.connections.borrow(), before, "a refused request reached the app");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_with_no_ready_pod_answers_503_with_its_reason() {
    let sim = sim(vec![]).await;
    let proxy = start(config("unready", &sim, None, "", &forward("later", "app=later", ""))).await;
    status_until(&proxy, "later", "no Ready pod", |s| s.reason == Some(Reason::NoReadyPod)).await;
    let response = within("an answer without waiting for a pod", http::get(&url(&proxy, "/forwards/later/"))).await;
    assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE, "{}", response.as_wire_text());
    let status = json_body(&response);
    let message = status["message"].as_str().unwrap_or_default();
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert!(message.contains("no pod of the target is Ready") && message.contains("Reconnecting (no Ready pod)"), "{message}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_token_mode_a_request_needs_a_token_that_may_port_forward() {
    let users = ["admin:admin-token:*", "viewer:viewer-token:default"].map(|u| User::parse(u).unwrap()).to_vec();
    let sim = sim(users).await;
    let app = app().await;
    pod(&sim, "web-app", &[(80, app.addr)]).await;
    let proxy = start(config("token", &sim, Some("admin-token"), "auth:\n  mode: token\n", &forward("web", "pod/web-app", ""))).await;
    status_until(&proxy, "web", "forward web Active", |s| s.state == State::Active).await;
    let path = url(&proxy, "/forwards/web/hello");
    let anonymous = http::get(&path).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{}", anonymous.as_wire_text());
    // The viewer may use namespace default only: not a pod in demo, even through the proxy.
    let viewer = http::request(Method::GET, &path, &[("authorization", "Bearer viewer-token")]).await;
    assert_eq!(viewer.status, StatusCode::FORBIDDEN, "{}", viewer.as_wire_text());
    assert!(json_body(&viewer)["message"].as_str().is_some_and(|m| m.contains("pods/portforward")), "{}", viewer.body);
    assert!(app.requests.lock().unwrap().is_empty(), "a refused request reached the app");
    let admin = http::request(Method::GET, &path, &[("authorization", "Bearer admin-token")]).await;
    assert_eq!(admin.status, StatusCode::OK, "{}", admin.as_wire_text());
    assert!(json_body(&admin)["headers"].get("authorization").is_none(), "the token reached the pod");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_of_a_refusing_port_degrades_the_forward_until_it_answers() {
    let sim = sim(vec![]).await;
    let api = sim_client(&sim).await;
    // redis-0's container port 6379 is a kube-sim echo server.
    let probe = "    probe: {tcp: true}\n    probeInterval: 0.2\n    probeTimeout: 0.3\n";
    let proxy = start(config("probe", &sim, None, "", &forward("echo", "pod/redis-0", probe).replace("port: 80", "port: 6379"))).await;
    status_until(&proxy, "echo", "forward echo Active", |s| s.state == State::Active).await;
    hook(&api, "POST", "/_sim/portforward/refuse?port=6379").await;
    let status = status_until(&proxy, "echo", "Degraded: probe failed", |s| s.state == State::Degraded).await;
    // The probe's own refused tunnel is the probe's verdict, never a "target refused" of its own.
    assert_eq!(status.reason, Some(Reason::ProbeFailed), "{status:?}");
    assert!(status.message.as_deref().is_some_and(|m| m.contains("connection refused")), "{status:?}");
    hook(&api, "DELETE", "/_sim/portforward/refuse").await;
    let status = status_until(&proxy, "echo", "Active once the probe passes", |s| s.state == State::Active).await;
    assert_eq!(status.reason, None);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_probe_an_idle_forward_opens_no_connection_into_the_app() {
    let sim = sim(vec![]).await;
    let (quiet, probed) = (app().await, app().await);
    // One pod, two ports: 80 to the app of the forward without a probe, 81 to the probed one's.
    pod(&sim, "two-apps", &[(80, quiet.addr), (81, probed.addr)]).await;
    let probe = "    probe:\n      http: {path: /healthz}\n    probeInterval: 0.2\n    probeTimeout: 1\n";
    let forwards = format!("{}{}", forward("quiet", "pod/two-apps", ""), forward("probed", "pod/two-apps", probe).replace("port: 80", "port: 81"));
    let proxy = start(config("idle", &sim, None, "", &forwards)).await;
    status_until(&proxy, "quiet", "forward quiet Active", |s| s.state == State::Active).await;
    // Three probes of the probed app: three of its intervals, in which the other forward,
    // idle and unprobed, must have sent nothing at all into its app.
    let mut probes = probed.connections.clone();
    changed_until(&mut probes, Duration::from_secs(15), "three probe connections", |n| *n >= 3).await;
    let probed_status = status_until(&proxy, "probed", "the probed forward Active", |s| s.state == State::Active).await;
    assert_eq!(probed_status.reason, None);
    assert_eq!(*quiet.connections.borrow(), 0, "the unprobed forward's app got connections while idle");
    assert!(quiet.requests.lock().unwrap().is_empty());
    // The HTTP probe fails with the app's refusal, and only the probed forward says so.
    hook(&sim_client(&sim).await, "POST", "/_sim/portforward/refuse?port=81").await;
    let status = status_until(&proxy, "probed", "Degraded: probe failed", |s| s.state == State::Degraded).await;
    assert_eq!(status.reason, Some(Reason::ProbeFailed), "{status:?}");
    assert!(status.message.as_deref().is_some_and(|m| m.contains("connection refused")), "{status:?}");
    assert_eq!(proxy.app().forwards.status("quiet").map(|s| s.borrow().state), Some(State::Active));
    proxy.shutdown().await;
}
