//! The fidelity suite: kube-sim through kubectl's tutorial commands, the official Python client
//! and `@kubernetes/client-node` 1.x (`tests/fidelity/`), directly with the kubeconfig kube-sim
//! writes, and through the proxy's pass-through (`/clusters/NAME`). Each client script runs its
//! cases (list, watch, create, patch, delete, logs, exec, field selectors, `can-i`, metrics,
//! Python's `portforward()`) and prints a line per case.
//!
//! Ignored by a plain `cargo test`: `cargo xtask test` installs the clients (a virtualenv under
//! the target directory, `npm ci` in `tests/fidelity`) and runs these with `--ignored`, with
//! `KUBEMUX_FIDELITY_PYTHON` naming the virtualenv's interpreter. Without a client they say so
//! and pass, except under `CI` or `KUBEMUX_REQUIRE_TOOLS=1`, where they fail.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, kubeconfig};
use kubemux_proxy::ProxySettings;
use kubemux_testkit::kubectl::Kubectl;
use kubemux_testkit::wait::within_for;

fn fidelity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fidelity")
}

fn tools_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") || std::env::var_os("KUBEMUX_REQUIRE_TOOLS").is_some_and(|v| v == "1")
}

/// The client's interpreter and script, or `None` (said loudly) when it is not installed.
fn client(name: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = fidelity_dir();
    let found = match name {
        "python" => std::env::var_os("KUBEMUX_FIDELITY_PYTHON").map(PathBuf::from).filter(|p| p.is_file()).map(|python| (python, dir.join("python_client.py"))),
        _ => std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file()))
            .filter(|_| dir.join("node_modules/@kubernetes/client-node/package.json").is_file())
            .map(|node| (node, dir.join("client_node.mjs"))),
    };
    if found.is_none() {
        let how = match name {
            "python" => "KUBEMUX_FIDELITY_PYTHON must name a Python with `pip install -r tests/fidelity/requirements.txt` done",
            _ => "node on PATH and `npm ci` in tests/fidelity",
        };
        assert!(!tools_required(), "the {name} fidelity client is missing under CI or KUBEMUX_REQUIRE_TOOLS=1: {how} (cargo xtask test does both)");
        eprintln!("SKIPPED: the {name} fidelity client is not installed ({how}; cargo xtask test does both)");
    }
    found
}

/// A kubeconfig for plain HTTP to `server`, as kube-sim writes its own: client-node refuses
/// `http://` without `insecure-skip-tls-verify: true`.
fn plain_kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n"
    )
}

/// Runs `client`'s script with `kubeconfig`; fails with its output unless every case passed.
async fn run(client: &str, kubeconfig: &str, via: &str) {
    let Some((interpreter, script)) = self::client(client) else { return };
    let file = tempfile::Builder::new().prefix("kubemux-fidelity-").suffix(".yaml").tempfile().expect("a kubeconfig file");
    std::fs::write(file.path(), kubeconfig).expect("write the kubeconfig");
    let mut command = tokio::process::Command::new(&interpreter);
    command.arg(&script).current_dir(fidelity_dir()).env("KUBECONFIG", file.path()).kill_on_drop(true);
    let output = within_for(Duration::from_secs(120), &format!("end of the {client} fidelity script ({via})"), command.output()).await.expect("the script starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{client} ({via}):\n{stdout}");
    assert!(output.status.success() && stdout.contains(" passed, 0 failed"), "{client} ({via}) failed ({}):\n{stdout}\n{stderr}", output.status);
}

async fn demo_sim() -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.expect("the simulator starts")
}

/// Straight at kube-sim, with the kubeconfig it writes (`--write-kubeconfig` renders the same).
async fn direct(client: &str) {
    let sim = demo_sim().await;
    run(client, &sim.kubeconfig(), "direct").await;
    sim.shutdown().await;
}

/// A proxy serving `sim` as cluster `sim`.
fn start_proxy(sim: &Sim) -> ProxyProcess {
    ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse().expect("an address"), ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]))
}

/// Through the proxy's pass-through to the same kind of simulator.
async fn through_proxy(client: &str) {
    let sim = demo_sim().await;
    let proxy = start_proxy(&sim);
    run(client, &plain_kubeconfig(&format!("{}/clusters/sim", proxy.http_url())), "through the proxy").await;
    drop(proxy);
    sim.shutdown().await;
}

/// The Kubernetes Basics tutorial and the commands of issue 11, through `kubectl`.
async fn kubectl_tutorial(kubeconfig: &str, via: &str) {
    if !std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("kubectl").is_file())) {
        assert!(!tools_required(), "kubectl is not on PATH, which CI or KUBEMUX_REQUIRE_TOOLS=1 does not allow");
        eprintln!("SKIPPED: kubectl is not on PATH");
        return;
    }
    let kubectl = Kubectl::new(kubeconfig);
    let ok = |args: &'static [&'static str]| {
        let kubectl = &kubectl;
        async move { kubectl.ok(args, None).await }
    };
    let has = |out: &str, wanted: &[&str], what: &str| {
        for w in wanted {
            assert!(out.contains(w), "{via}: {what}: {w:?} missing from:\n{out}");
        }
    };
    has(&ok(&["get", "nodes"]).await, &["NAME", "STATUS", "ROLES", "AGE", "VERSION", "sim-node-1   Ready", "v1.32.0"], "get nodes");
    has(&ok(&["create", "deployment", "kubernetes-bootcamp", "--image=gcr.io/google-samples/kubernetes-bootcamp:v1"]).await, &["deployment.apps/kubernetes-bootcamp created"], "create deployment");
    let status: &'static [&'static str] = &["rollout", "status", "deployment/kubernetes-bootcamp", "--timeout=60s"];
    has(&ok(status).await, &["successfully rolled out"], "rollout status");
    let pods = ok(&["get", "pods", "-l", "app=kubernetes-bootcamp", "-o", "wide"]).await;
    has(&pods, &["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "1/1", "Running", "sim-node-"], "get pods -o wide");
    has(&ok(&["expose", "deployment/kubernetes-bootcamp", "--type=NodePort", "--port", "8080"]).await, &["service/kubernetes-bootcamp exposed"], "expose");
    has(&ok(&["get", "services", "kubernetes-bootcamp"]).await, &["NodePort", "8080"], "get services");
    has(&ok(&["scale", "deployments/kubernetes-bootcamp", "--replicas=4"]).await, &["deployment.apps/kubernetes-bootcamp scaled"], "scale");
    ok(status).await;
    let rows = ok(&["get", "pods", "-l", "app=kubernetes-bootcamp", "--no-headers"]).await;
    assert_eq!(rows.lines().count(), 4, "{via}: four pods after scaling:\n{rows}");
    has(&ok(&["set", "image", "deployments/kubernetes-bootcamp", "kubernetes-bootcamp=docker.io/jocatalin/kubernetes-bootcamp:v2"]).await, &["image updated"], "set image");
    ok(status).await;
    has(&ok(&["rollout", "undo", "deployments/kubernetes-bootcamp"]).await, &["rolled back"], "rollout undo");
    ok(status).await;
    has(&ok(&["create", "namespace", "team"]).await, &["namespace/team created"], "create namespace");
    has(&ok(&["create", "configmap", "settings", "-n", "team", "--from-literal=mode=fast"]).await, &["configmap/settings created"], "create configmap");
    has(&ok(&["create", "secret", "generic", "creds", "-n", "team", "--from-literal=password=x"]).await, &["secret/creds created"], "create secret");
    has(&ok(&["logs", "toolbox", "--tail=1"]).await, &["kube-sim: ready"], "logs --tail=1");
    has(&ok(&["explain", "deployment.spec.replicas"]).await, &["FIELD: replicas <integer>"], "explain");
    has(&ok(&["auth", "can-i", "create", "pods"]).await, &["yes"], "auth can-i");
    has(&ok(&["top", "nodes"]).await, &["CPU(cores)", "sim-node-2"], "top nodes");
    has(&ok(&["top", "pods", "-n", "demo"]).await, &["MEMORY(bytes)", "redis-0"], "top pods");
    ok(&["events", "-n", "demo", "--for", "pod/redis-0"]).await;
    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#;
    let out = kubectl.ok(&["patch", "deployment/web", "-n", "demo", "-p", patch, "-o", "jsonpath={.spec.template.spec.containers[0].ports[0].containerPort}"], None).await;
    assert_eq!(out, "80", "{via}: a strategic merge patch keeps the container's ports");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_tutorial_direct() {
    let sim = demo_sim().await;
    kubectl_tutorial(&sim.kubeconfig(), "direct").await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_tutorial_through_the_proxy() {
    let sim = demo_sim().await;
    let proxy = start_proxy(&sim);
    kubectl_tutorial(&plain_kubeconfig(&format!("{}/clusters/sim", proxy.http_url())), "through the proxy").await;
    drop(proxy);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fidelity clients: cargo xtask test installs them and runs it"]
async fn python_client_direct() {
    direct("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fidelity clients: cargo xtask test installs them and runs it"]
async fn python_client_through_the_proxy() {
    through_proxy("python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fidelity clients: cargo xtask test installs them and runs it"]
async fn client_node_direct() {
    direct("node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the fidelity clients: cargo xtask test installs them and runs it"]
async fn client_node_through_the_proxy() {
    through_proxy("node").await;
}
