//! kubectl against kube-sim over HTTPS (`--tls`, `SimConfig::tls`), with the kubeconfig the
//! simulator writes (the generated CA as `certificate-authority-data`): get, get -w, exec and
//! port-forward over both of kubectl's transports all work through TLS, and a kubectl that does
//! not trust the CA is refused by certificate verification. Ignored by a plain `cargo test`;
//! `cargo xtask test` runs them when kubectl is on PATH, and fails them without it under CI or
//! `KUBEMUX_REQUIRE_TOOLS=1`.

mod common;

use kubemux_testkit::kubectl::{Kubectl, echo_through};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use common::{Http, within};

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn get_and_watch_over_tls() {
    let sim = common::start_tls().await;
    let kubectl = Kubectl::new(&sim.kubeconfig());
    let stdout = kubectl.ok(&["get", "pods", "-A", "-o", "name"], None).await;
    let listed = stdout.lines().count();
    assert_eq!(
        listed,
        common::all_pods(&sim).len(),
        "kubectl get pods -A over TLS:\n{stdout}"
    );

    let mut child = kubectl
        .command(&["get", "configmaps", "-n", "demo", "-w", "-o", "name"])
        .spawn()
        .expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let http = Http::new(&sim);
    let existing: Vec<String> = http.get("/api/v1/namespaces/demo/configmaps").await.ok()["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str())
                .map(|n| format!("configmap/{n}"))
                .collect()
        })
        .unwrap_or_default();
    for _ in &existing {
        let line = within("the initial listing over TLS", lines.next_line())
            .await
            .expect("read kubectl")
            .expect("kubectl still running");
        assert!(existing.contains(&line), "{line} not among {existing:?}");
    }
    http.post(
        "/api/v1/namespaces/demo/configmaps",
        &json!({"metadata": {"name": "watched-over-tls"}}),
    )
    .await
    .ok();
    let line = within("the new ConfigMap over TLS", lines.next_line())
        .await
        .expect("read kubectl")
        .expect("kubectl still running");
    assert_eq!(line, "configmap/watched-over-tls");
    child.start_kill().expect("stop kubectl");
    let _ = child.wait().await;
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn exec_over_tls() {
    let sim = common::start_tls().await;
    let kubectl = Kubectl::new(&sim.kubeconfig());
    let output = kubectl
        .run(
            &["exec", "-i", "toolbox", "--", "sh", "-c", "cat; exit 4"],
            Some(b"through tls\n"),
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "through tls\n",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.code(),
        Some(4),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    sim.shutdown().await;
}

async fn port_forward_over_tls(websockets: bool) {
    let sim = common::start_tls().await;
    let kubectl = Kubectl::new(&sim.kubeconfig());
    let pod = common::pods_of(&sim, "default", "hello")[0].clone();
    let (mut child, local) = kubectl
        .port_forward(&format!("pod/{pod}"), 8000, websockets)
        .await;
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        echo_through(local, &payload).await,
        payload,
        "200 kB both ways through TLS"
    );
    child.start_kill().expect("stop kubectl");
    let _ = child.wait().await;
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_over_tls_through_the_websocket_tunnel() {
    port_forward_over_tls(true).await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_over_tls_through_the_spdy_upgrade() {
    port_forward_over_tls(false).await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_without_the_ca_is_refused() {
    let sim = common::start_tls().await;
    let without_ca: String = sim
        .kubeconfig()
        .lines()
        .filter(|l| !l.contains("certificate-authority-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    let output = Kubectl::new(&without_ca)
        .run(&["get", "namespaces"], None)
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "kubectl without the CA succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains("x509: certificate signed by unknown authority"),
        "refused for another reason: {stderr}"
    );
    sim.shutdown().await;
}
