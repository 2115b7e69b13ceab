//! kube-sim through the real `kubectl` (1.32 here), with the simulator's kubeconfig in a
//! temporary file and a private cache directory (`kubemux_testkit::kubectl`): get, get -w,
//! apply, exec. Ignored by a plain `cargo test`; `cargo xtask test` runs them when kubectl is
//! on PATH, and fails them without it under CI or `KUBEMUX_REQUIRE_TOOLS=1`.

mod common;

use kube_sim::{Seed, Sim};
use kubemux_testkit::kubectl::Kubectl;
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use common::{Http, within};

/// kubectl with the simulator's own kubeconfig.
fn kubectl(sim: &Sim) -> Kubectl {
    Kubectl::new(&sim.kubeconfig())
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn get_pods_in_all_namespaces() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let stdout = kubectl.ok(&["get", "pods", "-A"], None).await;
    let rows: Vec<Vec<&str>> = stdout.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    let mut listed: Vec<String> = rows.iter().map(|r| format!("{}/{}", r[0], r[1])).collect();
    listed.sort();
    assert_eq!(listed, common::all_pods(&sim), "kubectl get pods -A:\n{stdout}");
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn get_watch_sees_a_new_pod() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let mut child = kubectl.command(&["get", "pods", "-w", "-n", "demo"]).spawn().expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut next_line = async || within("a line from kubectl get -w", lines.next_line()).await.expect("read kubectl's stdout").expect("kubectl still watching");

    // The initial listing: every demo pod once.
    let mut expected = common::pods_of(&sim, "demo", "web");
    expected.extend(common::pods_of(&sim, "demo", "api"));
    expected.push("redis-0".to_owned());
    expected.sort();
    assert!(next_line().await.starts_with("NAME"), "a header first");
    let mut listed = Vec::new();
    while listed.len() < expected.len() {
        listed.push(next_line().await.split_whitespace().next().expect("a name column").to_owned());
    }
    listed.sort();
    assert_eq!(listed, expected);

    let pod = json!({"metadata": {"name": "watched-pod", "labels": {"app": "watched"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    http.post("/api/v1/namespaces/demo/pods", &pod).await.ok();
    loop {
        let line = next_line().await;
        if line.split_whitespace().next() == Some("watched-pod") {
            break;
        }
    }
    child.start_kill().expect("stop kubectl");
    let _ = child.wait().await;
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn apply_creates_then_updates_a_config_map() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let manifest = tempfile::Builder::new().prefix("kube-sim-manifest-").suffix(".yaml").tempfile().expect("a manifest file");
    let path = manifest.path().to_str().expect("a UTF-8 path").to_owned();
    let write = |greeting: &str, extra: &str| {
        let yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: demo\n  labels:\n    app: applied\ndata:\n  greeting: {greeting}\n{extra}");
        std::fs::write(&path, yaml).expect("write the manifest");
    };
    let stored = || sim.state().store.get(&kube_sim::resources::CONFIGMAPS, "demo", "applied").map(|cm| cm["data"].clone());

    write("hello", "  removed: soon\n");
    let out = kubectl.ok(&["apply", "-f", &path], None).await;
    assert_eq!(out.trim(), "configmap/applied created");
    assert_eq!(stored(), Some(json!({"greeting": "hello", "removed": "soon"})));

    write("bonjour", "  added: now\n");
    let out = kubectl.ok(&["apply", "-f", &path], None).await;
    assert_eq!(out.trim(), "configmap/applied configured");
    // The three-way merge: changed, added, and the key dropped from the manifest removed.
    assert_eq!(stored(), Some(json!({"greeting": "bonjour", "added": "now"})));

    let out = kubectl.ok(&["apply", "-f", &path], None).await;
    assert_eq!(out.trim(), "configmap/applied unchanged");
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn exec_prints_output_and_exits_with_the_commands_code() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let output = kubectl.run(&["exec", "toolbox", "--", "sh", "-c", "echo hi; exit 3"], None).await;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n", "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(3), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn exec_with_stdin_echoes_it_back() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let input = b"line one\nline two, no newline at the end";
    let output = kubectl.run(&["exec", "-i", "toolbox", "--", "cat"], Some(input)).await;
    assert!(output.status.success(), "kubectl exec -i failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.stdout, input, "cat echoes stdin, and ends when stdin is closed");
    sim.shutdown().await;
}

/// `kubectl port-forward TARGET :PORT` on 127.0.0.1, over the WebSocket tunnel (kubectl
/// 1.31+'s default) or, with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, over `Upgrade: SPDY/3.1`.
/// Returns kubectl (killed on drop) and the local port it printed.
async fn port_forward(kubectl: &Kubectl, target: &str, remote: u16, websockets: bool) -> (tokio::process::Child, u16) {
    let remote_spec = format!(":{remote}");
    let mut command = kubectl.command(&["port-forward", "--address", "127.0.0.1", target, &remote_spec]);
    command.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", if websockets { "true" } else { "false" });
    let mut child = command.spawn().expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    // "Forwarding from 127.0.0.1:NNNNN -> PORT"
    let line = within("kubectl's Forwarding line", lines.next_line()).await.expect("read kubectl's stdout").expect("kubectl still running");
    let local = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from kubectl port-forward: {line}"));
    // Keep reading stdout ("Handling connection for …") so kubectl never blocks on the pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, local)
}

/// Connects to kubectl's local port, writes `payload`, half-closes, and reads to the end.
async fn echo_through(local: u16, payload: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut socket = within("the local connection", tokio::net::TcpStream::connect(("127.0.0.1", local))).await.expect("connect to kubectl");
    let (mut read, mut write) = socket.split();
    let send = async {
        write.write_all(payload).await.expect("write to kubectl");
        write.shutdown().await.expect("half-close");
    };
    let mut back = Vec::new();
    let receive = read.read_to_end(&mut back);
    let (_, received) = within("the echo through kubectl", futures::future::join(send, receive)).await;
    received.expect("read from kubectl");
    back
}

/// Waits for kubectl to exit by itself; its status and stderr.
async fn exit_of(child: tokio::process::Child, what: &str) -> (std::process::ExitStatus, String) {
    let output = within(what, child.wait_with_output()).await.expect("kubectl exits");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Which transport the simulator sees kubectl's SPDY connection on.
async fn forward_transport(http: &Http) -> String {
    kubemux_testkit::wait::poll("kubectl's SPDY connection", common::DEADLINE, || async {
        let listed = http.get("/_sim/portforward").await.ok();
        listed["connections"][0]["transport"].as_str().map(str::to_owned).ok_or_else(|| listed.to_string())
    })
    .await
}

async fn port_forward_pod_echoes(websockets: bool, transport: &str) {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let pod = common::pods_of(&sim, "default", "hello")[0].clone();
    let (mut child, local) = port_forward(&kubectl, &format!("pod/{pod}"), 8000, websockets).await;
    assert_eq!(echo_through(local, b"hello through kubectl\n").await, b"hello through kubectl\n");
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(echo_through(local, &payload).await, payload, "a megabyte both ways");
    assert_eq!(forward_transport(&http).await, transport);
    child.start_kill().expect("stop kubectl");
    let _ = child.wait().await;
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_pod_over_the_websocket_tunnel() {
    port_forward_pod_echoes(true, "websocket").await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_pod_over_the_spdy_upgrade_fallback() {
    port_forward_pod_echoes(false, "spdy").await;
}

async fn port_forward_twenty_connections_at_once(websockets: bool) {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let pod = common::pods_of(&sim, "default", "hello")[0].clone();
    let (mut child, local) = port_forward(&kubectl, &format!("pod/{pod}"), 8000, websockets).await;
    let connections = (0..20u32).map(|i| async move {
        let payload: Vec<u8> = (0..50_000u32).map(|j| ((i * 7 + j) % 251) as u8).collect();
        (echo_through(local, &payload).await == payload, i)
    });
    for (same, i) in futures::future::join_all(connections).await {
        assert!(same, "connection {i} got other bytes back");
    }
    child.start_kill().expect("stop kubectl");
    let _ = child.wait().await;
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_twenty_connections_at_once_over_the_tunnel() {
    port_forward_twenty_connections_at_once(true).await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_twenty_connections_at_once_over_spdy() {
    port_forward_twenty_connections_at_once(false).await;
}

/// kubectl resolves `svc/hello` to a pod itself (the service, then its pods by selector, then
/// the service port to the container port) and forwards to that pod.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_service_reaches_a_pod_behind_it() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    for websockets in [true, false] {
        let (mut child, local) = port_forward(&kubectl, "svc/hello", 8000, websockets).await;
        assert_eq!(echo_through(local, b"via the service").await, b"via the service");
        let listed = http.get("/_sim/portforward").await.ok();
        assert_eq!(listed["connections"][0]["pod"].as_str(), Some(common::pods_of(&sim, "default", "hello")[0].as_str()), "{listed}");
        child.start_kill().expect("stop kubectl");
        let _ = child.wait().await;
    }
    sim.shutdown().await;
}

/// A refused port: the kubelet's message reaches kubectl on the error stream, which kubectl
/// prints (and 1.32 then drops the connection and exits).
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_to_a_refused_port_reports_the_kubelets_error() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let pod = common::pods_of(&sim, "default", "hello")[0].clone();
    http.hook(&format!("/_sim/portforward/refuse?port=8000&pod={pod}")).await;
    let (child, local) = port_forward(&kubectl, &format!("pod/{pod}"), 8000, true).await;
    assert_eq!(echo_through(local, b"nobody home").await, b"", "a refused connection closes with nothing");
    let (status, stderr) = exit_of(child, "kubectl to exit after the error").await;
    assert!(!status.success(), "kubectl fails: {stderr}");
    assert!(stderr.contains(&format!("error forwarding port 8000 to pod {pod}, uid ")), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    sim.shutdown().await;
}

/// What a load balancer's idle cut does to kubectl: the SPDY connection drops without a word,
/// kubectl 1.32 says "lost connection to pod" and exits. (A stream-pair cut leaves it running:
/// the next local connection works.)
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_cuts_end_a_stream_or_the_whole_kubectl() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let pod = common::pods_of(&sim, "default", "hello")[0].clone();
    let (child, local) = port_forward(&kubectl, &format!("pod/{pod}"), 8000, true).await;

    // A local connection held open, its stream pair cut: the local connection ends, kubectl stays.
    let mut held = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.expect("connect to kubectl");
    tokio::io::AsyncWriteExt::write_all(&mut held, b"held").await.expect("write");
    let mut buf = [0u8; 4];
    within("the held echo", tokio::io::AsyncReadExt::read_exact(&mut held, &mut buf)).await.expect("echo");
    let cut = http.hook(&format!("/_sim/portforward/cut?namespace=default&pod={pod}")).await;
    assert_eq!(cut["cut"], 1);
    let ended = within("the cut local connection to end", tokio::io::AsyncReadExt::read(&mut held, &mut buf)).await;
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    assert_eq!(echo_through(local, b"still forwarding").await, b"still forwarding");

    assert_eq!(http.hook("/_sim/portforward/cut?scope=connections").await["cut"], 1);
    let (status, stderr) = exit_of(child, "kubectl to exit after the cut").await;
    assert!(!status.success(), "kubectl fails: {stderr}");
    assert!(stderr.contains("lost connection to pod"), "{stderr}");
    sim.shutdown().await;
}

/// A withheld SYN_REPLY is kubectl's "error creating error stream … Timeout occurred"
/// (`portforward-anchors.md` §2 #5): spdystream waits 30 s for the reply, then gives up on that
/// local connection. This test waits those 30 s.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn port_forward_without_a_syn_reply_times_out_like_kubectl_does() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let pod = common::pods_of(&sim, "default", "hello")[0].clone();
    let (mut child, local) = port_forward(&kubectl, &format!("pod/{pod}"), 8000, false).await;
    http.hook("/_sim/portforward/withhold-replies?count=1").await;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", local)).await.expect("connect to kubectl");
    let mut buf = [0u8; 1];
    let ended = kubemux_testkit::wait::within_for(std::time::Duration::from_secs(45), "kubectl to give up on the stream", tokio::io::AsyncReadExt::read(&mut socket, &mut buf)).await;
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    child.start_kill().expect("stop kubectl");
    let output = within("kubectl's end", child.wait_with_output()).await.expect("kubectl's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error creating error stream") && stderr.contains("Timeout occurred"), "{stderr}");
    sim.shutdown().await;
}
