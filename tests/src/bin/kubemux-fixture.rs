//! The fixture the browser tests run against. A browser test cannot start processes, so this
//! binary starts them and offers a small control API with CORS:
//!
//! - kube-sim with demo objects and churn, an admin user (cluster `sim`) and a user who may
//!   only use namespace `demo` (cluster `sim-alice`), so a forbidden watch exists;
//! - a kubemux proxy on its own runtime that allows any origin, which the tests kill and restart
//!   on the same port;
//! - `GET /info`, `POST /reset` (the proxy running again if a test killed it, then `/info`:
//!   what every browser test calls first), `POST /proxy/kill`, `POST /proxy/start`, `GET /sim/pods?ns=demo` (the
//!   simulator's own list), `GET /sim/processes` (the simulator's live exec and attach
//!   processes, `/_sim/processes`), `POST /report` (a page's result);
//! - besides the demo seed, pod `default/no-bash` (container `shell`), whose image lacks bash
//!   (`kube-sim/missing-binaries: bash`), for the terminal's shell fallback;
//! - WebSockets speaking `kubemux.v1` with scripted content: `/bad-mux` sends one malformed frame
//!   before a valid snapshot, `/burst?n=N` sends a snapshot of N `ADDED`/`MODIFIED` events;
//! - for `cargo xtask bench client`, through the real proxy and simulator:
//!   `POST /bench/seed?ns=NS&pods=N` creates namespace NS with N pods of about 2.8 KB, and
//!   `POST /bench/burst?ns=NS&pods=N&n=E&round=R` writes E changes round-robin over those pods
//!   (annotation `bench/mark`, `R-end` on the last) on a blocking thread, answering at once,
//!   and `POST /bench/settle` answers when those writes are done;
//! - static files: `/pkg/*` (the built npm package) and `/page/*` (tests/browser); pages named
//!   `bench*` are served cross-origin isolated (COOP + COEP), which gives `performance.now()`
//!   microseconds instead of Chromium's coarsened 100 µs.
//!
//! Usage:
//!   kubemux-fixture serve [--pkg DIR] [--pages DIR]
//!       prints its base URL as the first line of stdout and serves until killed;
//!   kubemux-fixture page --pkg DIR --pages DIR --page NAME [--timeout SECS]
//!       also opens `/page/NAME.html` in headless Chromium, waits for the page's report, checks
//!       it (pods page: the pods equal the simulator's list; terminal page: once the browser is
//!       closed, the page's shell is gone from the simulator within 5 s; react page: a pod
//!       created, relabelled and deleted appears, changes and vanishes) and prints
//!       `RESULT <json>`; exits non-zero on failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::config::KubeConfigOptions;
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::{ProxyProcess, hook, kubeconfig, list};
use kubemux_protocol::frames::{ClientMessage, EventType, SUBPROTOCOL, ServerMessage, encode_event_raw};
use kubemux_proxy::ProxySettings;
use kubemux_proxy::mux::MuxSettings;
use kubemux_testkit::wait::try_poll;
use serde_json::{Value, json};
use tokio::sync::Notify;

const ADMIN_TOKEN: &str = "admin-token";
const ALICE_TOKEN: &str = "alice-token";

/// Its mutexes are held only to take or put a value, never across an await or anything that
/// can panic, so none is ever poisoned: their `lock().unwrap()`s cannot fire.
struct Fixture {
    sim: Sim,
    sim_api: kube::Client,
    proxy_addr: SocketAddr,
    proxy: Mutex<Option<ProxyProcess>>,
    base_url: String,
    pkg_dir: Option<PathBuf>,
    pages_dir: Option<PathBuf>,
    report: Mutex<Option<Value>>,
    reported: Notify,
    /// The writes of the latest `/bench/burst`, which `/bench/settle` waits for.
    burst: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Fixture {
    fn contexts(&self) -> kube::config::Kubeconfig {
        let url = self.sim.url();
        kubeconfig(&[("sim", &url, Some(ADMIN_TOKEN)), ("sim-alice", &url, Some(ALICE_TOKEN))])
    }

    fn proxy_settings(listen: SocketAddr) -> ProxySettings {
        // The browser tests' pages are served from other ports than the proxy's. The bench
        // page's bursts (20,000 writes of about 3.6 KB, 72 MB) are written faster than a slow
        // client reads them: the queue holds a whole burst, so that a burst measures the
        // client's events, not a `reset` of its subscription (the default is 16 MiB).
        let mux = MuxSettings { max_queued_bytes: 256 * 1024 * 1024, ..MuxSettings::default() };
        ProxySettings { listen, allowed_origins: vec!["*".to_owned()], mux, ..ProxySettings::default() }
    }
}

#[derive(Default)]
struct Args {
    mode: String,
    pkg: Option<PathBuf>,
    pages: Option<PathBuf>,
    page: Option<String>,
    timeout: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args { timeout: 60, ..Args::default() };
    let mut it = std::env::args().skip(1);
    args.mode = it.next().context("usage: kubemux-fixture serve|page [options]")?;
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--pkg" => args.pkg = Some(PathBuf::from(value()?)),
            "--pages" => args.pages = Some(PathBuf::from(value()?)),
            "--page" => args.page = Some(value()?),
            "--timeout" => args.timeout = value()?.parse().context("--timeout takes seconds")?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let admin = User::parse(&format!("admin:{ADMIN_TOKEN}:*")).map_err(anyhow::Error::msg)?;
    let alice = User::parse(&format!("alice:{ALICE_TOKEN}:demo")).map_err(anyhow::Error::msg)?;
    // History enough for the bench page's bursts of 20,000 writes, so that a watch behind them
    // still gets every event instead of a 410.
    let sim = Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 10.0, users: vec![admin, alice], history: 100_000, ..SimConfig::default() }).await?;
    let admin_config = kubeconfig(&[("sim", &sim.url(), Some(ADMIN_TOKEN))]);
    let sim_api = kube::Client::try_from(kube::Config::from_custom_kubeconfig(admin_config, &KubeConfigOptions::default()).await?)?;
    create_pod_without_bash(&sim_api).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let url = sim.url();
    let contexts = kubeconfig(&[("sim", &url, Some(ADMIN_TOKEN)), ("sim-alice", &url, Some(ALICE_TOKEN))]);
    let proxy = tokio::task::spawn_blocking(move || ProxyProcess::start(Fixture::proxy_settings("127.0.0.1:0".parse().unwrap()), contexts)).await?;
    let fixture = Arc::new(Fixture {
        sim,
        sim_api,
        proxy_addr: proxy.addr(),
        proxy: Mutex::new(Some(proxy)),
        base_url: base_url.clone(),
        pkg_dir: args.pkg.clone(),
        pages_dir: args.pages.clone(),
        report: Mutex::new(None),
        reported: Notify::new(),
        burst: Mutex::new(None),
    });

    let app = Router::new()
        .route("/info", get(info))
        .route("/reset", post(reset))
        .route("/proxy/kill", post(proxy_kill))
        .route("/proxy/start", post(proxy_start))
        .route("/sim/pods", get(sim_pods))
        .route("/sim/processes", get(sim_processes))
        .route("/report", post(report))
        .route("/bad-mux", get(bad_mux))
        .route("/burst", get(burst))
        .route("/bench/seed", post(bench_seed))
        .route("/bench/burst", post(bench_burst))
        .route("/bench/settle", post(bench_settle))
        .route("/pkg/{*file}", get(pkg_file))
        .route("/page/{*file}", get(page_file))
        .layer(axum::middleware::map_response(allow_any_origin))
        .with_state(fixture.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    match args.mode.as_str() {
        "serve" => {
            // The first line is the contract with whoever started us (cargo xtask).
            println!("{base_url}");
            server.await??;
            Ok(())
        }
        "page" => {
            let page = args.page.context("page mode needs --page NAME")?;
            let result = run_page(&fixture, &page, Duration::from_secs(args.timeout)).await;
            let proxy = fixture.proxy.lock().unwrap().take();
            if let Some(proxy) = proxy {
                tokio::task::spawn_blocking(move || proxy.kill()).await?;
            }
            let result = result?;
            println!("RESULT {result}");
            Ok(())
        }
        other => bail!("unknown mode {other:?}: serve or page"),
    }
}

async fn allow_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

async fn info(State(fixture): State<Arc<Fixture>>) -> Response {
    let fixture_ws = fixture.base_url.replacen("http://", "ws://", 1);
    axum::Json(json!({
        "mux": format!("ws://{}/mux", fixture.proxy_addr),
        "proxy": format!("http://{}", fixture.proxy_addr),
        "cluster": "sim",
        "restrictedCluster": "sim-alice",
        "restrictedToken": ALICE_TOKEN,
        "forbiddenPath": "/api/v1/namespaces/kube-system/pods",
        "podsPath": "/api/v1/namespaces/demo/pods",
        "badMux": format!("{fixture_ws}/bad-mux"),
        "burstMux": format!("{fixture_ws}/burst"),
    }))
    .into_response()
}

async fn proxy_kill(State(fixture): State<Arc<Fixture>>) -> Response {
    let proxy = fixture.proxy.lock().unwrap().take();
    match proxy {
        Some(proxy) => {
            // Joining the proxy's thread blocks; keep it off the fixture's own workers.
            let _ = tokio::task::spawn_blocking(move || proxy.kill()).await;
            (StatusCode::OK, "killed\n").into_response()
        }
        None => (StatusCode::CONFLICT, "the proxy is not running\n").into_response(),
    }
}

/// Starts the proxy on its port unless it runs; says whether it started it.
async fn ensure_proxy(fixture: &Arc<Fixture>) -> anyhow::Result<bool> {
    let fixture = fixture.clone();
    // The slot stays locked while the proxy starts, so two callers never start two.
    tokio::task::spawn_blocking(move || {
        let mut slot = fixture.proxy.lock().unwrap();
        if slot.is_some() {
            return false;
        }
        *slot = Some(ProxyProcess::start(Fixture::proxy_settings(fixture.proxy_addr), fixture.contexts()));
        true
    })
    .await
    .context("the proxy did not start")
}

async fn proxy_start(State(fixture): State<Arc<Fixture>>) -> Response {
    match ensure_proxy(&fixture).await {
        Ok(true) => (StatusCode::OK, "started\n").into_response(),
        Ok(false) => (StatusCode::CONFLICT, "the proxy is already running\n").into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}\n")).into_response(),
    }
}

/// The stack as every browser test starts from (the proxy running), then `/info`.
async fn reset(State(fixture): State<Arc<Fixture>>) -> Response {
    match ensure_proxy(&fixture).await {
        Ok(_) => info(State(fixture)).await,
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}\n")).into_response(),
    }
}

async fn sim_pods(State(fixture): State<Arc<Fixture>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    let ns = query.get("ns").map_or("demo", String::as_str);
    let pods = list(&fixture.sim_api, &format!("/api/v1/namespaces/{ns}/pods")).await;
    axum::Json(Value::Array(pods.into_values().collect())).into_response()
}

async fn sim_processes(State(fixture): State<Arc<Fixture>>) -> Response {
    axum::Json(hook(&fixture.sim_api, "GET", "/_sim/processes").await).into_response()
}

/// `default/no-bash`: a pod whose image has `sh` but no `bash`.
async fn create_pod_without_bash(sim_api: &kube::Client) -> anyhow::Result<()> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "no-bash", "labels": {"app": "no-bash"}, "annotations": {"kube-sim/missing-binaries": "bash"}},
        "spec": {"containers": [{"name": "shell", "image": "busybox:1.36", "stdin": true, "tty": true}]}
    });
    let request = http::Request::post("/api/v1/namespaces/default/pods").header(header::CONTENT_TYPE, "application/json").body(serde_json::to_vec(&pod)?)?;
    sim_api.request::<Value>(request).await.context("creating pod default/no-bash")?;
    Ok(())
}

async fn report(State(fixture): State<Arc<Fixture>>, body: Bytes) -> Response {
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    *fixture.report.lock().unwrap() = Some(value);
    fixture.reported.notify_waiters();
    (StatusCode::OK, "ok\n").into_response()
}

/// Upgrades with `kubemux.v1` selected, as the proxy does.
fn kubemux_upgrade<F, Fut>(upgrade: WebSocketUpgrade, serve: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    upgrade.protocols([SUBPROTOCOL]).on_upgrade(serve)
}

/// Waits for the client's first `watch` and returns its id; answers pings meanwhile.
async fn first_watch(socket: &mut WebSocket) -> Option<String> {
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(text) = message {
            match ClientMessage::decode(text.as_str()) {
                Ok(ClientMessage::Watch(watch)) => return Some(watch.id),
                Ok(ClientMessage::Ping { data }) => {
                    let _ = socket.send(Message::text(ServerMessage::Pong { data }.encode())).await;
                }
                _ => {}
            }
        }
    }
    None
}

fn pod(name: &str, rv: u64, generation: u64) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "resourceVersion": rv.to_string(), "labels": {"app": "bench", "generation": generation.to_string()}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": "Running"}
    })
    .to_string()
}

/// A server that sends one malformed frame, then a valid one-pod snapshot, then stays open.
async fn bad_mux(upgrade: WebSocketUpgrade) -> Response {
    kubemux_upgrade(upgrade, |mut socket| async move {
        let Some(id) = first_watch(&mut socket).await else { return };
        let frames =
            ["{this is not json".to_owned(), encode_event_raw(&id, EventType::Added, &pod("only-pod", 1, 1)), ServerMessage::Synced { id: id.clone(), resource_version: "1".to_owned() }.encode()];
        for frame in frames {
            if socket.send(Message::text(frame)).await.is_err() {
                return;
            }
        }
        // Stay open (answering pings) until the client leaves, so the test can check that the
        // connection lived on.
        while first_watch(&mut socket).await.is_some() {}
    })
}

/// A snapshot burst: `n` events over 1000 pods (first `ADDED`, then `MODIFIED`), then `synced`.
async fn burst(upgrade: WebSocketUpgrade, Query(query): Query<BTreeMap<String, String>>) -> Response {
    let n: u64 = query.get("n").and_then(|n| n.parse().ok()).unwrap_or(20_000).min(1_000_000);
    kubemux_upgrade(upgrade, move |mut socket| async move {
        let Some(id) = first_watch(&mut socket).await else { return };
        let pods = 1000.min(n.max(1));
        for i in 0..n {
            let (event_type, generation) = if i < pods { (EventType::Added, 1) } else { (EventType::Modified, i / pods + 1) };
            let frame = encode_event_raw(&id, event_type, &pod(&format!("pod-{:04}", i % pods), i + 1, generation));
            if socket.send(Message::text(frame)).await.is_err() {
                return;
            }
        }
        let synced = ServerMessage::Synced { id, resource_version: n.to_string() }.encode();
        if socket.send(Message::text(synced)).await.is_err() {
            return;
        }
        while first_watch(&mut socket).await.is_some() {}
    })
}

async fn pkg_file(State(fixture): State<Arc<Fixture>>, axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    static_file(fixture.pkg_dir.as_deref(), &file).await
}

async fn page_file(State(fixture): State<Arc<Fixture>>, axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let mut response = static_file(fixture.pages_dir.as_deref(), &file).await;
    if file.starts_with("bench") {
        let headers = response.headers_mut();
        headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
        headers.insert("cross-origin-embedder-policy", HeaderValue::from_static("require-corp"));
    }
    response
}

/// A pod of about 2.8 KB, shaped like a Deployment's on a real cluster (without its owner
/// reference, which kube-sim's garbage collector would follow to no ReplicaSet and delete it).
fn bench_pod(name: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "labels": {"app": "bench", "pod-template-hash": "5d4f8c9b7", "app.kubernetes.io/part-of": "kubemux-bench", "tier": "backend"},
            "annotations": {"bench/mark": "seed", "prometheus.io/scrape": "true", "prometheus.io/port": "9090"}
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "registry.example.com/team/backend:1.42.7",
                "args": ["--listen=:8080", "--metrics=:9090", "--log-format=json"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                    {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "backend-db", "key": "url"}}},
                    {"name": "CACHE_TTL_SECONDS", "value": "300"}
                ],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/backend", "readOnly": true}, {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "backend-config", "defaultMode": 420}},
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}, {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "backend",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001},
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}, {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        }
    })
}

/// How many pods a bench namespace holds, so that `/bench/burst` writes only existing ones.
#[allow(clippy::result_large_err, reason = "the error is the handler's answer, returned at once")]
fn bench_query(query: &BTreeMap<String, String>, key: &str, default: usize) -> Result<usize, Response> {
    match query.get(key) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| (StatusCode::BAD_REQUEST, format!("{key} must be a number\n")).into_response()),
    }
}

/// `POST /bench/seed?ns=NS&pods=N`: namespace NS with N bench pods, written to the store directly.
async fn bench_seed(State(fixture): State<Arc<Fixture>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    let ns = query.get("ns").cloned().unwrap_or_else(|| "bench".to_owned());
    let pods = match bench_query(&query, "pods", 1000) {
        Ok(n) => n,
        Err(response) => return response,
    };
    let state = fixture.sim.state().clone();
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        // An existing namespace (a second run) keeps its pods.
        let store = &state.store;
        let _ = store.create(&kube_sim::resources::NAMESPACES, "", json!({"metadata": {"name": ns}}));
        let mut created = 0;
        for i in 0..pods {
            let name = format!("bench-{i:05}");
            if store.get(&kube_sim::resources::PODS, &ns, &name).is_none() {
                store.create(&kube_sim::resources::PODS, &ns, bench_pod(&name)).map_err(|e| anyhow::anyhow!("creating {ns}/{name}: {e:?}"))?;
                created += 1;
            }
        }
        Ok(created)
    })
    .await;
    match result {
        Ok(Ok(created)) => axum::Json(json!({"created": created})).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// `POST /bench/burst?ns=NS&pods=N&n=E&round=R`: E writes over the first N bench pods, started
/// on a blocking thread so that the page's clients count them as they arrive.
async fn bench_burst(State(fixture): State<Arc<Fixture>>, Query(query): Query<BTreeMap<String, String>>) -> Response {
    let ns = query.get("ns").cloned().unwrap_or_else(|| "bench".to_owned());
    let round = query.get("round").cloned().unwrap_or_else(|| "0".to_owned());
    let (pods, writes) = match (bench_query(&query, "pods", 1000), bench_query(&query, "n", 20_000)) {
        (Ok(pods), Ok(writes)) if pods > 0 => (pods, writes),
        (Err(response), _) | (_, Err(response)) => return response,
        _ => return (StatusCode::BAD_REQUEST, "pods must be positive\n").into_response(),
    };
    let state = fixture.sim.state().clone();
    let writer = tokio::task::spawn_blocking(move || {
        let store = &state.store;
        for i in 0..writes {
            let name = format!("bench-{:05}", i % pods);
            let mark = if i + 1 == writes { format!("{round}-end") } else { format!("{round}-{i}") };
            let result = store.modify(&kube_sim::resources::PODS, &ns, &name, |pod| {
                pod["metadata"]["annotations"]["bench/mark"] = Value::String(mark);
                Ok(())
            });
            if let Err(error) = result {
                eprintln!("bench burst: writing {ns}/{name}: {error:?}");
                return;
            }
        }
    });
    *fixture.burst.lock().unwrap() = Some(writer);
    (StatusCode::ACCEPTED, "started\n").into_response()
}

/// `POST /bench/settle`: answers once the latest burst's writes are all in the store.
async fn bench_settle(State(fixture): State<Arc<Fixture>>) -> Response {
    let writer = fixture.burst.lock().unwrap().take();
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    (StatusCode::OK, "settled\n").into_response()
}

/// A file under `dir`, with the content type a module import and `instantiateStreaming` need.
async fn static_file(dir: Option<&Path>, file: &str) -> Response {
    let Some(dir) = dir else { return (StatusCode::NOT_FOUND, "not configured\n").into_response() };
    if file.split('/').any(|segment| segment.is_empty() || segment == ".." || segment.starts_with('.')) {
        return (StatusCode::BAD_REQUEST, "bad path\n").into_response();
    }
    let content_type = match Path::new(file).extension().and_then(|e| e.to_str()) {
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(dir.join(file)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Headless Chromium on one URL, in its own process group so that ending it ends its helpers.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> anyhow::Result<Browser> {
        use std::os::unix::process::CommandExt as _;
        let profile = tempfile::tempdir()?;
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let child = Command::new(&chromium)
            // Without the networking flags Chromium tries to reach Google's services, which
            // this machine's closed network refuses, many at a time.
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // For the bench page: exact heap figures and `gc()` before each memory reading.
                "--enable-precise-memory-info",
                "--js-flags=--expose-gc",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {chromium}"))?;
        Ok(Browser { child, _profile: profile })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group, by its id: Chromium's zygote and renderers would outlive its main
        // process otherwise.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// Opens a page and checks what it reports.
async fn run_page(fixture: &Arc<Fixture>, page: &str, timeout: Duration) -> anyhow::Result<Value> {
    let url = format!("{}/page/{page}.html", fixture.base_url);
    let reported = fixture.reported.notified();
    tokio::pin!(reported);
    reported.as_mut().enable();
    let before = toolbox_processes(fixture).await;
    let browser = Browser::open(&url)?;
    tokio::time::timeout(timeout, reported).await.with_context(|| format!("{url} reported nothing within {timeout:?}"))?;
    let report = fixture.report.lock().unwrap().clone().unwrap_or(Value::Null);
    if let Some(error) = report.get("error") {
        bail!("{url} reported an error: {error}");
    }
    // `pods`, and the same consumer as each bundler built it (`vite/pods`, `webpack/pods`, …).
    if page == "pods" || page.ends_with("/pods") {
        check_pods_page(fixture).await?;
    }
    if page == "terminal" {
        check_terminal_page(fixture, before, browser).await?;
    }
    if page == "react" {
        check_react_page(fixture).await?;
    }
    Ok(fixture.report.lock().unwrap().clone().unwrap_or(report))
}

/// The processes of pod `default/toolbox` in the simulator, by pid.
async fn toolbox_processes(fixture: &Fixture) -> BTreeMap<u64, Value> {
    let processes = hook(&fixture.sim_api, "GET", "/_sim/processes").await;
    processes.as_array().into_iter().flatten().filter(|p| p["namespace"] == "default" && p["pod"] == "toolbox").filter_map(|p| Some((p["pid"].as_u64()?, p.clone()))).collect()
}

/// The terminal page ran its command in a new shell: closing the browser (the page never
/// calls `close()`) must leave none of that shell's processes running 5 s later.
async fn check_terminal_page(fixture: &Fixture, before: BTreeMap<u64, Value>, browser: Browser) -> anyhow::Result<()> {
    let ours: Vec<u64> = toolbox_processes(fixture).await.into_keys().filter(|pid| !before.contains_key(pid)).collect();
    if ours.is_empty() {
        bail!("the page's shell does not show in /_sim/processes");
    }
    drop(browser);
    // `/_sim/processes` pushes nothing: a poll.
    try_poll("the page's processes to end after the browser closed", Duration::from_secs(5), || async {
        let now = toolbox_processes(fixture).await;
        let left: Vec<&Value> = ours.iter().filter_map(|pid| now.get(pid)).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("still running: {left:?}")) }
    })
    .await
    .map_err(anyhow::Error::msg)
}

/// The React page (tests/react: `useWatch` from `kubemux/react`) renders one row per pod of
/// namespace `default` as `NAME STEP-LABEL` and reports its rows on every render: a pod created,
/// relabelled and deleted here must appear, change and vanish there.
async fn check_react_page(fixture: &Arc<Fixture>) -> anyhow::Result<()> {
    let path = "/api/v1/namespaces/default/pods";
    // The fixture's own pods of `default`, which nothing else changes.
    react_rows(fixture, "the simulator's pods", |rows| ["no-bash -", "toolbox -"].iter().all(|pod| rows.iter().any(|r| r == pod))).await?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "react-row", "labels": {"step": "one"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}
    });
    let create = http::Request::post(path).header(header::CONTENT_TYPE, "application/json").body(serde_json::to_vec(&pod)?)?;
    fixture.sim_api.request::<Value>(create).await.context("creating pod default/react-row")?;
    react_rows(fixture, "the new pod's row", |rows| rows.iter().any(|r| r == "react-row one")).await?;
    let patch = json!({"metadata": {"labels": {"step": "two"}}});
    let change = http::Request::patch(format!("{path}/react-row")).header(header::CONTENT_TYPE, "application/merge-patch+json").body(serde_json::to_vec(&patch)?)?;
    fixture.sim_api.request::<Value>(change).await.context("relabelling pod default/react-row")?;
    react_rows(fixture, "the row to change", |rows| rows.iter().any(|r| r == "react-row two") && !rows.iter().any(|r| r == "react-row one")).await?;
    let delete = http::Request::delete(format!("{path}/react-row")).body(Vec::new())?;
    fixture.sim_api.request::<Value>(delete).await.context("deleting pod default/react-row")?;
    react_rows(fixture, "the row to vanish", |rows| !rows.iter().any(|r| r.starts_with("react-row "))).await
}

/// Waits, on the page's reports, until its latest rows satisfy `wanted`; 20 s at most.
async fn react_rows(fixture: &Arc<Fixture>, what: &str, mut wanted: impl FnMut(&[String]) -> bool) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let next = fixture.reported.notified();
        tokio::pin!(next);
        next.as_mut().enable();
        let report = fixture.report.lock().unwrap().clone().unwrap_or(Value::Null);
        if let Some(error) = report.get("error") {
            bail!("the React page reported an error: {error}");
        }
        let rows: Vec<String> = report["rows"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_owned)).collect();
        if wanted(&rows) {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, next).await.is_err() {
            bail!("waited 20 s for {what}; the page shows {rows:?}");
        }
    }
}

/// The pods page lists the pods of namespace `demo` and reports again on every change: its
/// latest report must come to name exactly the pods the simulator has (churn moves both on, so
/// they are compared until they agree, within a deadline).
async fn check_pods_page(fixture: &Arc<Fixture>) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let report = fixture.report.lock().unwrap().clone().unwrap_or(Value::Null);
        let shown: Vec<String> = report["pods"].as_array().context("the report has no `pods` list")?.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect();
        let mut sorted = shown.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != shown.len() {
            bail!("the page lists a pod twice: {shown:?}");
        }
        let direct: Vec<String> = list(&fixture.sim_api, "/api/v1/namespaces/demo/pods").await.into_keys().map(|(_, name)| name).collect();
        if !direct.is_empty() && direct == sorted {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the page lists {sorted:?}, the simulator has {direct:?}");
        }
        // Wait for the page's next report (or re-read the simulator after a moment).
        let _ = tokio::time::timeout(Duration::from_millis(500), fixture.reported.notified()).await;
    }
}
