//! Auth modes and the config file, on real sockets: token mode refuses a request without a
//! token with a 401 Status on `/mux`, pass-through and exec before any upgrade; a token acts as
//! itself; a token subprotocol that does not decode is a 400 in every mode; and the real binary
//! refuses to start, with one clear message, on an anonymous remote listener or an invalid
//! config file.

use std::process::Stdio;
use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::{ProxyProcess, kubeconfig, proxy_binary};
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_proxy::ProxySettings;
use kubemux_proxy::auth::{AuthMode, AuthSettings};
use kubemux_testkit::http::{self, Method, Response};

async fn sim_with_users() -> Sim {
    let users = ["admin:admin-token:*", "alice:alice-token:demo"].map(|u| User::parse(u).unwrap()).to_vec();
    Sim::start(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await.unwrap()
}

fn token_mode() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), auth: AuthSettings { mode: AuthMode::Token, allow_anonymous_remote: false }, ..ProxySettings::default() }
}

/// A WebSocket upgrade request's headers, offering `protocols`.
fn upgrade_headers(protocols: &str) -> Vec<(&'static str, String)> {
    vec![
        ("connection", "Upgrade".into()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-version", "13".into()),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
        ("sec-websocket-protocol", protocols.into()),
    ]
}

async fn send(url: &str, headers: &[(&'static str, String)]) -> Response {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http::request(Method::GET, url, &headers).await
}

/// The response is a Kubernetes Status with `code` (and not an upgrade).
fn assert_status(response: &Response, code: u16, what: &str) -> serde_json::Value {
    assert_eq!(response.status.as_u16(), code, "{what}: {}", response.body);
    let status: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", response.body));
    assert_eq!((status["kind"].as_str(), status["code"].as_u64()), (Some("Status"), Some(u64::from(code))), "{what}: {status}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_refuses_requests_without_a_token_with_a_401_status() {
    let sim = sim_with_users().await;
    let proxy = ProxyProcess::start(token_mode(), kubeconfig(&[("sim", &sim.url(), Some("admin-token"))]));
    let base = proxy.http_url();
    let mux = send(&format!("{base}/mux"), &upgrade_headers(SUBPROTOCOL)).await;
    let status = assert_status(&mux, 401, "/mux without a token");
    assert_eq!(status["reason"], "Unauthorized");
    let passthrough = send(&format!("{base}/clusters/sim/api/v1/namespaces/demo/pods"), &[]).await;
    assert_status(&passthrough, 401, "pass-through without a token");
    // Admission comes before the cluster lookup: without a token nobody learns which exist.
    let unknown = send(&format!("{base}/clusters/no-such-cluster/api/v1/pods"), &[]).await;
    assert_status(&unknown, 401, "an unknown cluster without a token");
    let exec = send(&format!("{base}/clusters/sim/api/v1/namespaces/demo/pods/toolbox/exec?command=sh&stdout=true"), &upgrade_headers("v5.channel.k8s.io")).await;
    assert_status(&exec, 401, "exec without a token");
    // The proxy's own (admin) credentials were not used for any of them.
    assert!(!passthrough.body.contains("PodList"), "{}", passthrough.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_acts_as_itself_in_token_mode() {
    let sim = sim_with_users().await;
    let proxy = ProxyProcess::start(token_mode(), kubeconfig(&[("sim", &sim.url(), Some("admin-token"))]));
    let base = proxy.http_url();
    let bearer = [("authorization", "Bearer alice-token".to_owned())];
    let own = send(&format!("{base}/clusters/sim/api/v1/namespaces/demo/pods"), &bearer).await;
    assert_eq!(own.status.as_u16(), 200, "alice lists her namespace: {}", own.body);
    let system = send(&format!("{base}/clusters/sim/api/v1/namespaces/kube-system/pods"), &bearer).await;
    let status = assert_status(&system, 403, "alice in kube-system");
    assert!(status["message"].as_str().is_some_and(|m| m.contains("alice")), "the refusal names alice: {status}");
    // The token subprotocol on /mux upgrades, and the connection acts as alice.
    let protocols = format!("{SUBPROTOCOL}, base64url.bearer.authorization.k8s.io.YWxpY2UtdG9rZW4");
    let mux = send(&format!("{base}/mux"), &upgrade_headers(&protocols)).await;
    assert_eq!(mux.status.as_u16(), 101, "{}", mux.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_subprotocol_that_does_not_decode_is_refused_in_every_mode() {
    let sim = sim_with_users().await;
    for settings in [token_mode(), ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }] {
        let mode = settings.auth.mode;
        let proxy = ProxyProcess::start(settings, kubeconfig(&[("sim", &sim.url(), Some("admin-token"))]));
        let base = proxy.http_url();
        let bad = format!("{SUBPROTOCOL}, base64url.bearer.authorization.k8s.io.not*base64");
        let mux = send(&format!("{base}/mux"), &upgrade_headers(&bad)).await;
        assert_status(&mux, 400, &format!("/mux with a bad token in {mode:?} mode"));
        let exec = send(&format!("{base}/clusters/sim/api/v1/namespaces/demo/pods/toolbox/exec?command=sh&stdout=true"), &upgrade_headers("v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.%%%")).await;
        assert_status(&exec, 400, &format!("exec with a bad token in {mode:?} mode"));
    }
}

/// Runs the binary with `args` and returns its exit status and standard error; it must exit
/// on its own within the deadline.
async fn refused(args: &[&str]) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(proxy_binary()).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().expect("the proxy starts");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await.expect("the proxy exits by itself").expect("its output");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_an_anonymous_remote_listener() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig_path = dir.path().join("kubeconfig.json");
    std::fs::write(&kubeconfig_path, serde_json::to_string(&kubeconfig(&[("sim", "http://127.0.0.1:1", None)])).unwrap()).unwrap();
    let (status, stderr) = refused(&["--listen", "0.0.0.0:0", "--kubeconfig", kubeconfig_path.to_str().unwrap()]).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("auth.allowAnonymousRemote"), "names the setting to change: {stderr}");
    assert_eq!(stderr.trim().lines().filter(|l| l.starts_with("kubemux-proxy:")).count(), 1, "one clear message: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_an_invalid_config_file_naming_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, "listen: 127.0.0.1:0\nauth:\n  mode: token\nterminalGrace: -1\n").unwrap();
    let (status, stderr) = refused(&["--config", config.to_str().unwrap()]).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{}:4:16: terminalGrace: ", config.display())), "file:line:column and the key: {stderr}");
    let (status, stderr) = refused(&["--terminal-grace", "NaN"]).await;
    assert!(!status.success() && stderr.contains("finite number of seconds"), "a flag is refused, not a panic: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_clusters_a_config_file_names_and_flags_override_it() {
    use tokio::io::AsyncBufReadExt as _;
    let sim = sim_with_users().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig.json"), serde_json::to_string(&kubeconfig(&[("one", &sim.url(), Some("admin-token")), ("two", &sim.url(), None)])).unwrap()).unwrap();
    std::fs::write(dir.path().join("token"), "alice-token\n").unwrap();
    let config = dir.path().join("proxy.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:9\nauth:\n  mode: token\nclusters:\n  - kubeconfig: kubeconfig.json\n    allContexts: true\n  - name: direct\n    server: {}\n    tokenFile: token\n",
        sim.url()
    );
    std::fs::write(&config, yaml).unwrap();
    // --listen on the command line wins over the file's (unusable) port 9.
    let mut child = tokio::process::Command::new(proxy_binary())
        .args(["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the proxy starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("the proxy says where it listens").unwrap().expect("a line");
    let base = line.rsplit(' ').next().unwrap().to_owned();
    let clusters = http::get(&format!("{base}/clusters")).await.body;
    for name in ["\"one\"", "\"two\"", "\"direct\""] {
        assert!(clusters.contains(name), "{name} in {clusters}");
    }
    // The file's token mode holds: no token, 401. The token file is the proxy's own identity
    // (health checks); a client's token acts as itself.
    assert_status(&send(&format!("{base}/clusters/direct/api/v1/namespaces/demo/pods"), &[]).await, 401, "token mode from the file");
    let alice = send(&format!("{base}/clusters/direct/api/v1/namespaces/kube-system/pods"), &[("authorization", "Bearer alice-token".to_owned())]).await;
    assert_status(&alice, 403, "alice through the direct cluster");
    child.kill().await.unwrap();
}
