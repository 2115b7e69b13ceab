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

/// A kubectl that keeps running (`get -w`, `logs -f`), read line by line.
struct Streaming {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Streaming {
    fn spawn(kubectl: &Kubectl, args: &[&str]) -> Streaming {
        let mut child = kubectl.command(args).spawn().expect("kubectl starts");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Streaming { child, lines }
    }

    async fn next_line(&mut self) -> String {
        within("a line from kubectl", self.lines.next_line()).await.expect("read kubectl's stdout").expect("kubectl still running")
    }

    async fn stop(mut self) {
        self.child.start_kill().expect("stop kubectl");
        let _ = self.child.wait().await;
    }
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn get_watch_sees_a_new_pod() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let mut watch = Streaming::spawn(&kubectl, &["get", "pods", "-w", "-n", "demo"]);

    // The initial listing: every demo pod once.
    let mut expected = common::pods_of(&sim, "demo", "web");
    expected.extend(common::pods_of(&sim, "demo", "api"));
    expected.push("redis-0".to_owned());
    expected.sort();
    assert!(watch.next_line().await.starts_with("NAME"), "a header first");
    let mut listed = Vec::new();
    while listed.len() < expected.len() {
        listed.push(watch.next_line().await.split_whitespace().next().expect("a name column").to_owned());
    }
    listed.sort();
    assert_eq!(listed, expected);

    let pod = json!({"metadata": {"name": "watched-pod", "labels": {"app": "watched"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    http.post("/api/v1/namespaces/demo/pods", &pod).await.ok();
    loop {
        let line = watch.next_line().await;
        if line.split_whitespace().next() == Some("watched-pod") {
            // The watch event's object is a Table row: the server's columns, not NAME and AGE.
            assert_eq!(line.split_whitespace().take(4).collect::<Vec<_>>(), ["watched-pod", "1/1", "Running", "0"], "{line}");
            break;
        }
    }
    watch.stop().await;
    sim.shutdown().await;
}

/// A temporary `.yaml` file for kubectl's `-f`, and its path.
fn manifest_file() -> (tempfile::NamedTempFile, String) {
    let manifest = tempfile::Builder::new().prefix("kube-sim-manifest-").suffix(".yaml").tempfile().expect("a manifest file");
    let path = manifest.path().to_str().expect("a UTF-8 path").to_owned();
    (manifest, path)
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn apply_creates_then_updates_a_config_map() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let (_manifest, path) = manifest_file();
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

/// The kube-sim binary, run as a user would, with `--write-kubeconfig`; stopped when dropped.
struct SimProcess {
    child: tokio::process::Child,
    kubeconfig: String,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    async fn start(args: &[&str]) -> SimProcess {
        let dir = tempfile::Builder::new().prefix("kube-sim-bin-").tempdir().expect("a temporary directory");
        let path = dir.path().join("kubeconfig");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
            .arg("--write-kubeconfig")
            .arg(&path)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("kube-sim starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = within("kube-sim's listening line", lines.next_line()).await.expect("read kube-sim's stdout").expect("a line");
        assert!(line.starts_with("kube-sim listening on http://"), "{line}");
        // The file exists before the line is printed.
        let kubeconfig = std::fs::read_to_string(&path).expect("the kubeconfig was written");
        SimProcess { child, kubeconfig, _dir: dir }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn written_kubeconfig_is_accepted_for_plain_http() {
    // Anonymous: kubectl reads no credentials from a kubeconfig whose server is plain HTTP
    // (client-go's `IsConfigTransportTLS`), so a token would never be sent.
    let sim = SimProcess::start(&[]).await;
    assert!(sim.kubeconfig.contains("insecure-skip-tls-verify: true"), "client-node needs it for http://:\n{}", sim.kubeconfig);
    let kubectl = Kubectl::new(&sim.kubeconfig);
    let stdout = kubectl.ok(&["get", "pods", "-n", "default", "toolbox", "-o", "name"], None).await;
    assert_eq!(stdout.trim(), "pod/toolbox");
    let stdout = kubectl.ok(&["config", "view", "--raw", "-o", "jsonpath={.clusters[0].cluster.insecure-skip-tls-verify}"], None).await;
    assert_eq!(stdout, "true");
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn nodes_are_listed_and_described() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let stdout = kubectl.ok(&["get", "nodes", "-o", "name"], None).await;
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["node/sim-node-1", "node/sim-node-2"]);
    let described = kubectl.ok(&["describe", "node", "sim-node-1"], None).await;
    for expected in ["Name:               sim-node-1", "HolderIdentity:  sim-node-1", "KubeletReady", "kubelet is posting ready status", "InternalIP:  10.0.0.1", "Capacity:", "Allocatable:", "Kubelet Version:            v1.32.0", "Container Runtime Version:  containerd://1.7.22"] {
        assert!(described.contains(expected), "{expected:?} missing from kubectl describe node:\n{described}");
    }
    // The pods scheduled there, found by kubectl's `spec.nodeName` field selector.
    let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, None);
    let on_node: Vec<&str> = pods.iter().filter(|p| p["spec"]["nodeName"] == "sim-node-1").filter_map(|p| p["metadata"]["name"].as_str()).collect();
    assert!(!on_node.is_empty());
    let section = described.split("Non-terminated Pods:").nth(1).expect("a pods section");
    for pod in on_node {
        assert!(section.contains(pod), "{pod} missing from the node's pods:\n{described}");
    }
    sim.shutdown().await;
}

/// kubectl's rows, each split into its columns (at runs of two or more spaces, since a column
/// such as RESTARTS may hold `1 (5s ago)`).
fn table_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|line| line.split("  ").map(str::trim).filter(|cell| !cell.is_empty()).map(str::to_owned).collect())
        .collect()
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn get_prints_the_servers_columns() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let pod_of = |name: &str| sim.state().store.get(&kube_sim::resources::PODS, "demo", name).expect("a listed pod exists");

    let rows = table_rows(&kubectl.ok(&["get", "pods", "-n", "demo"], None).await);
    assert_eq!(rows[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    for row in &rows[1..] {
        let containers = pod_of(&row[0])["spec"]["containers"].as_array().map_or(0, Vec::len);
        assert_eq!(row[1..4], [format!("{containers}/{containers}"), "Running".to_owned(), "0".to_owned()], "{row:?}");
    }

    let rows = table_rows(&kubectl.ok(&["get", "pods", "-n", "demo", "-o", "wide"], None).await);
    assert_eq!(rows[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]);
    for row in &rows[1..] {
        let pod = pod_of(&row[0]);
        assert_eq!(row[5..], [pod["status"]["podIP"].as_str().unwrap(), pod["spec"]["nodeName"].as_str().unwrap(), "<none>", "<none>"], "{row:?}");
    }

    let rows = table_rows(&kubectl.ok(&["get", "pod", &rows[1][0], "-n", "demo"], None).await);
    assert_eq!((rows.len(), &rows[1][2]), (2, &"Running".to_owned()), "a get of one object is a one-row Table: {rows:?}");

    let rows = table_rows(&kubectl.ok(&["get", "deployments", "-n", "demo"], None).await);
    assert_eq!(rows, [vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], vec!["api", "2/2", "2", "2", &rows[1][4]], vec!["web", "3/3", "3", "3", &rows[2][4]]]);
    let rows = table_rows(&kubectl.ok(&["get", "services", "-n", "demo", "api"], None).await);
    assert_eq!(rows[0], ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]);
    assert_eq!((&rows[1][1], &rows[1][3], &rows[1][4]), (&"ClusterIP".to_owned(), &"<none>".to_owned(), &"8080/TCP,9090/TCP".to_owned()));
    let rows = table_rows(&kubectl.ok(&["get", "nodes"], None).await);
    assert_eq!(rows[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(rows[1..].iter().map(|r| (r[0].as_str(), r[1].as_str(), r[4].as_str())).collect::<Vec<_>>(), [("sim-node-1", "Ready", "v1.32.0"), ("sim-node-2", "Ready", "v1.32.0")]);
    let rows = table_rows(&kubectl.ok(&["get", "configmaps", "-n", "demo", "web-config"], None).await);
    assert_eq!(rows[0..2], [vec!["NAME", "DATA", "AGE"], vec!["web-config", "2", &rows[1][2]]]);
    let rows = table_rows(&kubectl.ok(&["get", "secrets", "-n", "demo"], None).await);
    assert_eq!(rows[0..2], [vec!["NAME", "TYPE", "DATA", "AGE"], vec!["api-credentials", "Opaque", "2", &rows[1][3]]]);
    let rows = table_rows(&kubectl.ok(&["get", "namespaces", "demo"], None).await);
    assert_eq!(rows[0..2], [vec!["NAME", "STATUS", "AGE"], vec!["demo", "Active", &rows[1][2]]]);
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn server_dry_runs_store_nothing() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let (_manifest, path) = manifest_file();
    let write = |greeting: &str| {
        let yaml = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\n  namespace: demo\ndata:\n  greeting: {greeting}\n");
        std::fs::write(&path, yaml).expect("write the manifest");
    };
    let stored = || sim.state().store.get(&kube_sim::resources::CONFIGMAPS, "demo", "dry").map(|cm| cm["data"]["greeting"].clone());

    write("hello");
    let out = kubectl.ok(&["apply", "--dry-run=server", "-f", &path], None).await;
    assert_eq!(out.trim(), "configmap/dry created (server dry run)");
    assert_eq!(stored(), None, "a dry-run create stores nothing");
    kubectl.ok(&["apply", "-f", &path], None).await;
    assert_eq!(stored(), Some(json!("hello")));

    // From here on, a watch and the revision counter must see nothing until the marker.
    let rv = sim.state().store.current_rv();
    let (status, mut events) = http.stream(&format!("/api/v1/namespaces/demo/configmaps?watch=true&resourceVersion={rv}")).await;
    assert_eq!(status, 200);

    write("bonjour");
    let out = kubectl.ok(&["apply", "--dry-run=server", "-f", &path], None).await;
    assert_eq!(out.trim(), "configmap/dry configured (server dry run)");
    let diff = kubectl.run(&["diff", "-f", &path], None).await;
    let shown = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "kubectl diff exits 1 when there are differences: {shown}{}", String::from_utf8_lossy(&diff.stderr));
    assert!(shown.contains("-  greeting: hello") && shown.contains("+  greeting: bonjour"), "{shown}");
    let out = kubectl.ok(&["delete", "configmap", "dry", "-n", "demo", "--dry-run=server"], None).await;
    assert_eq!(out.trim(), "configmap \"dry\" deleted (server dry run)");
    let out = kubectl.ok(&["delete", "configmaps", "-n", "demo", "--all", "--dry-run=server"], None).await;
    assert!(out.contains("configmap \"dry\" deleted (server dry run)"), "{out}");
    assert_eq!(stored(), Some(json!("hello")), "nothing was changed or deleted");
    assert_eq!(sim.state().store.current_rv(), rv, "no revision consumed");

    // An unknown dryRun value is refused as the API server refuses it.
    http.post("/api/v1/namespaces/demo/configmaps?dryRun=Some", &json!({"metadata": {"name": "x"}})).await.status(422, "Invalid");

    http.post("/api/v1/namespaces/demo/configmaps", &json!({"metadata": {"name": "marker"}})).await.ok();
    let first = events.next_event().await;
    assert_eq!((first["type"].as_str(), first["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("marker")), "the watch saw a dry run: {first}");
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn deployments_scale_and_roll_out() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let (_manifest, path) = manifest_file();
    std::fs::write(&path, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\n  namespace: demo\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: shop}\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n  template:\n    metadata:\n      labels: {app: shop}\n    spec:\n      containers:\n      - {name: shop, image: 'nginx:1.27'}\n").expect("write the manifest");
    let shop_pods = || {
        let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, Some("demo"));
        pods.into_iter().filter(|p| p["metadata"]["labels"]["app"] == "shop").collect::<Vec<_>>()
    };
    let ready = |pod: &serde_json::Value| pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");

    assert_eq!(kubectl.ok(&["apply", "-f", &path], None).await.trim(), "deployment.apps/shop created");
    let out = kubectl.ok(&["rollout", "status", "deployment/shop", "-n", "demo", "--timeout=60s"], None).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = shop_pods();
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| ready(p) && p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" && p["metadata"]["labels"]["pod-template-hash"].is_string()), "{pods:?}");

    assert_eq!(kubectl.ok(&["scale", "deployment/shop", "-n", "demo", "--replicas=3"], None).await.trim(), "deployment.apps/shop scaled");
    kubectl.ok(&["rollout", "status", "deployment/shop", "-n", "demo", "--timeout=60s"], None).await;
    let before: Vec<String> = shop_pods().iter().map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(before.len(), 3, "{before:?}");

    // Every change to the shop pods during the rollout, from here on.
    let rv = sim.state().store.current_rv();
    let (_, mut events) = http.stream(&format!("/api/v1/namespaces/demo/pods?watch=true&labelSelector=app%3Dshop&resourceVersion={rv}")).await;
    assert_eq!(kubectl.ok(&["rollout", "restart", "deployment/shop", "-n", "demo"], None).await.trim(), "deployment.apps/shop restarted");
    let out = kubectl.ok(&["rollout", "status", "deployment/shop", "-n", "demo", "--timeout=60s"], None).await;
    assert!(out.contains("successfully rolled out"), "{out}");

    let after: Vec<String> = shop_pods().iter().map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|p| !before.contains(p)), "every pod was replaced: {before:?} -> {after:?}");
    // Pods are ready when created, so the live ones are the available ones: with maxSurge 1
    // and maxUnavailable 0, between 3 and 4 at every moment.
    let mut live: std::collections::BTreeSet<String> = before.iter().cloned().collect();
    while live.iter().collect::<Vec<_>>() != after.iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>() {
        let event = events.next_event().await;
        let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match event["type"].as_str() {
            Some("ADDED") => live.insert(name),
            Some("DELETED") => live.remove(&name),
            _ => continue,
        };
        assert!((3..=4).contains(&live.len()), "{} pods live after {event}", live.len());
    }
    let deployment = sim.state().store.get(&kube_sim::resources::DEPLOYMENTS, "demo", "shop").expect("the deployment");
    assert_eq!(deployment["metadata"]["generation"], 3, "created, scaled, restarted");
    assert_eq!(deployment["status"]["observedGeneration"], 3);
    sim.shutdown().await;
}

/// `kubectl set image` and `kubectl patch` send strategic merge patches: the container is
/// merged by its name, so its ports, env and the other container stay.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn strategic_merge_patches_keep_a_containers_ports() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let (_manifest, path) = manifest_file();
    std::fs::write(&path, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: storefront\n  namespace: demo\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: storefront}\n  template:\n    metadata:\n      labels: {app: storefront}\n    spec:\n      containers:\n      - name: web\n        image: 'nginx:1.27'\n        ports: [{containerPort: 80, name: http}]\n        env: [{name: MODE, value: demo}]\n      - {name: sidecar, image: 'busybox:1.36'}\n").expect("write the manifest");
    kubectl.ok(&["apply", "-f", &path], None).await;
    let containers = || sim.state().store.get(&kube_sim::resources::DEPLOYMENTS, "demo", "storefront").map(|d| d["spec"]["template"]["spec"]["containers"].clone()).unwrap_or_default();

    assert_eq!(kubectl.ok(&["set", "image", "deployment/storefront", "-n", "demo", "web=nginx:1.28"], None).await.trim(), "deployment.apps/storefront image updated");
    let after = containers();
    assert_eq!(after[0]["image"], "nginx:1.28");
    assert_eq!(after[0]["ports"], json!([{"containerPort": 80, "name": "http"}]), "{after}");
    assert_eq!(after[1]["name"], "sidecar");

    let patch = r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"LEVEL","value":"debug"}],"ports":[{"containerPort":443}]}]}}}}"#;
    assert_eq!(kubectl.ok(&["patch", "deployment/storefront", "-n", "demo", "-p", patch], None).await.trim(), "deployment.apps/storefront patched");
    let after = containers();
    let ports: Vec<&serde_json::Value> = after[0]["ports"].as_array().into_iter().flatten().map(|p| &p["containerPort"]).collect();
    assert_eq!(ports, [&json!(80), &json!(443)], "{after}");
    let env: Vec<&serde_json::Value> = after[0]["env"].as_array().into_iter().flatten().map(|e| &e["name"]).collect();
    assert_eq!(env, [&json!("MODE"), &json!("LEVEL")], "{after}");
    assert_eq!(after[0]["image"], "nginx:1.28");

    let delete = r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","$patch":"delete"}]}}}}"#;
    kubectl.ok(&["patch", "deployment/storefront", "-n", "demo", "-p", delete], None).await;
    assert_eq!(containers().as_array().map(Vec::len), Some(1));
    sim.shutdown().await;
}

/// `kubectl top` finds metrics.k8s.io through discovery: every node with its share of the
/// allocatable CPU and memory, every running pod (the metrics-server's own among them).
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn top_nodes_and_pods_show_the_metrics_api() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let out = kubectl.ok(&["top", "nodes"], None).await;
    let rows = table_rows(&out);
    assert_eq!(rows[0], ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], "{out}");
    let nodes: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(nodes, ["sim-node-1", "sim-node-2"], "{out}");
    for row in &rows[1..] {
        assert!(row[1].ends_with('m') && row[2].ends_with('%') && row[3].ends_with("Mi") && row[4].ends_with('%'), "{out}");
    }

    let out = kubectl.ok(&["top", "pods", "-n", "kube-system", "--containers"], None).await;
    assert!(out.lines().any(|l| l.starts_with("metrics-server-") && l.split_whitespace().nth(1) == Some("metrics-server")), "{out}");
    let out = kubectl.ok(&["top", "pods", "-n", "demo", "-l", "app=api"], None).await;
    let rows = table_rows(&out);
    assert_eq!(rows[0], ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{out}");
    let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, Some("demo"));
    let mut api: Vec<String> = pods.iter().filter(|p| p["metadata"]["labels"]["app"] == "api").map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_owned()).collect();
    let mut listed: Vec<String> = rows[1..].iter().map(|r| r[0].clone()).collect();
    api.sort();
    listed.sort();
    assert_eq!(listed, api, "{out}");
    assert!(rows[1..].iter().all(|r| r[1].ends_with('m') && r[2].ends_with("Mi")), "{out}");
    sim.shutdown().await;
}

/// `kubectl explain` reads the OpenAPI v3 documents: a kind's description and fields, a
/// field's type and description at any depth.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn explain_reads_the_served_schemas() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let out = kubectl.ok(&["explain", "pods"], None).await;
    assert!(out.contains("KIND:       Pod") && out.contains("Pod is a collection of containers") && out.contains("spec\t<PodSpec>"), "{out}");
    let out = kubectl.ok(&["explain", "deployment.spec.replicas"], None).await;
    assert!(out.contains("GROUP:      apps") && out.contains("FIELD: replicas <integer>") && out.contains("Number of desired pods"), "{out}");
    let out = kubectl.ok(&["explain", "pods.spec.containers.ports"], None).await;
    assert!(out.contains("FIELD: ports <[]ContainerPort>") && out.contains("containerPort\t<integer> -required-"), "{out}");
    let out = kubectl.run(&["explain", "pods.spec.bogus"], None).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("field \"bogus\" does not exist"), "{out:?}");
    sim.shutdown().await;
}

/// kubectl validates strictly by default (`fieldValidation=Strict`, which the OpenAPI documents
/// advertise): a misspelt field is the server's strict decoding error and nothing is stored;
/// `--validate=warn` stores the object and prints the warning.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn apply_validates_fields_against_the_schemas() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let (_manifest, path) = manifest_file();
    std::fs::write(&path, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: typo\n  namespace: demo\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: typo}}\n  template:\n    metadata: {labels: {app: typo}}\n    spec:\n      containers:\n      - {name: c, image: 'busybox:1.36', imagePullPolcy: Always}\n").expect("write the manifest");
    let stored = || sim.state().store.get(&kube_sim::resources::DEPLOYMENTS, "demo", "typo");
    for validate in ["--validate=strict", "--validate=true"] {
        let out = kubectl.run(&["apply", validate, "-f", &path], None).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("strict decoding error: unknown field \"spec.template.spec.containers[0].imagePullPolcy\""), "{validate}: {stderr}");
        assert!(stored().is_none());
    }
    let out = kubectl.run(&["apply", "--validate=warn", "-f", &path], None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("unknown field \"spec.template.spec.containers[0].imagePullPolcy\""), "{stderr}");
    assert!(stored().is_some());
    sim.shutdown().await;
}

/// `kubectl create` sends protobuf bodies; what they hold is stored as if sent as JSON. Then
/// the tutorial's rollout: a new image, and `rollout undo` back to the first ReplicaSet, which
/// becomes revision 3.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn create_commands_and_rollout_undo() {
    use kube_sim::resources::{CONFIGMAPS, DEPLOYMENTS, NAMESPACES, REPLICASETS, SECRETS, SERVICEACCOUNTS};
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let store = &sim.state().store;
    assert_eq!(kubectl.ok(&["create", "namespace", "team"], None).await.trim(), "namespace/team created");
    assert!(store.get(&NAMESPACES, "", "team").is_some());
    kubectl.ok(&["create", "configmap", "settings", "-n", "team", "--from-literal=mode=fast"], None).await;
    assert_eq!(store.get(&CONFIGMAPS, "team", "settings").map(|c| c["data"].clone()), Some(json!({"mode": "fast"})));
    kubectl.ok(&["create", "secret", "generic", "creds", "-n", "team", "--from-literal=password=hunter2"], None).await;
    let secret = store.get(&SECRETS, "team", "creds").expect("the secret");
    assert_eq!((&secret["type"], &secret["data"]), (&json!("Opaque"), &json!({"password": "aHVudGVyMg=="})));
    kubectl.ok(&["create", "serviceaccount", "robot", "-n", "team"], None).await;
    assert!(store.get(&SERVICEACCOUNTS, "team", "robot").is_some());

    let out = kubectl.ok(&["create", "deployment", "bootcamp", "-n", "team", "--image=gcr.io/google-samples/kubernetes-bootcamp:v1", "--replicas=2", "--port=8080"], None).await;
    assert_eq!(out.trim(), "deployment.apps/bootcamp created");
    let deployment = store.get(&DEPLOYMENTS, "team", "bootcamp").expect("the deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["selector"], json!({"matchLabels": {"app": "bootcamp"}}));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((&container["name"], &container["image"], &container["ports"][0]["containerPort"]), (&json!("kubernetes-bootcamp"), &json!("gcr.io/google-samples/kubernetes-bootcamp:v1"), &json!(8080)), "{deployment}");
    assert_eq!(container.as_object().map(|c| c.len()), Some(3), "only what kubectl set: {container}");
    let status = ["rollout", "status", "deployment/bootcamp", "-n", "team", "--timeout=60s"];
    assert!(kubectl.ok(&status, None).await.contains("successfully rolled out"));

    kubectl.ok(&["set", "image", "deployment/bootcamp", "-n", "team", "kubernetes-bootcamp=docker.io/jocatalin/kubernetes-bootcamp:v2"], None).await;
    kubectl.ok(&status, None).await;
    assert_eq!(kubectl.ok(&["rollout", "undo", "deployment/bootcamp", "-n", "team"], None).await.trim(), "deployment.apps/bootcamp rolled back");
    kubectl.ok(&status, None).await;
    let deployment = store.get(&DEPLOYMENTS, "team", "bootcamp").expect("the deployment");
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], "gcr.io/google-samples/kubernetes-bootcamp:v1");
    assert_eq!(deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    let (_, sets) = store.list(&REPLICASETS, Some("team"));
    assert_eq!(sets.len(), 2, "the first set came back rather than a third: {sets:?}");
    let history = kubectl.ok(&["rollout", "history", "deployment/bootcamp", "-n", "team"], None).await;
    let revisions: Vec<&str> = history.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    sim.shutdown().await;
}

/// More of kubectl's typed creates, each a protobuf body of another kind: `run` (a Pod),
/// `expose` (a Service), `create role`, `rolebinding` and `poddisruptionbudget`; each stores
/// what kubectl sent.
#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn run_expose_and_create_role_binding_and_budget() {
    use kube_sim::resources::{PODDISRUPTIONBUDGETS, PODS, ROLEBINDINGS, ROLES, SERVICES};
    let sim = common::start(Seed::Empty).await;
    let kubectl = kubectl(&sim);
    let store = &sim.state().store;
    let out = kubectl.ok(&["run", "web", "--image=nginx:1.27", "--port=80", "--env=MODE=fast", "--labels=app=web", "--", "nginx", "-g", "daemon off;"], None).await;
    assert_eq!(out.trim(), "pod/web created");
    let pod = store.get(&PODS, "default", "web").expect("the pod");
    let container = &pod["spec"]["containers"][0];
    assert_eq!((&container["image"], &container["ports"], &container["env"]), (&json!("nginx:1.27"), &json!([{"containerPort": 80}]), &json!([{"name": "MODE", "value": "fast"}])), "{pod}");
    assert_eq!(container["args"], json!(["nginx", "-g", "daemon off;"]));
    assert_eq!(pod["metadata"]["labels"], json!({"app": "web"}));

    assert_eq!(kubectl.ok(&["expose", "pod", "web", "--port=8080", "--target-port=80", "--name=web"], None).await.trim(), "service/web exposed");
    let service = store.get(&SERVICES, "default", "web").expect("the service");
    assert_eq!((&service["spec"]["selector"], &service["spec"]["ports"]), (&json!({"app": "web"}), &json!([{"port": 8080, "protocol": "TCP", "targetPort": 80}])), "{service}");

    assert_eq!(kubectl.ok(&["create", "role", "reader", "--verb=get,list", "--resource=pods"], None).await.trim(), "role.rbac.authorization.k8s.io/reader created");
    let role = store.get(&ROLES, "default", "reader").expect("the role");
    assert_eq!(role["rules"], json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]), "{role}");
    assert_eq!(kubectl.ok(&["create", "rolebinding", "readers", "--role=reader", "--user=alice"], None).await.trim(), "rolebinding.rbac.authorization.k8s.io/readers created");
    let binding = store.get(&ROLEBINDINGS, "default", "readers").expect("the binding");
    assert_eq!(binding["roleRef"], json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}));
    assert_eq!(binding["subjects"], json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]));
    let out = kubectl.ok(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=1"], None).await;
    assert_eq!(out.trim(), "poddisruptionbudget.policy/web created");
    let budget = store.get(&PODDISRUPTIONBUDGETS, "default", "web").expect("the budget");
    assert_eq!((&budget["spec"]["minAvailable"], &budget["spec"]["selector"]), (&json!(1), &json!({"matchLabels": {"app": "web"}})), "{budget}");
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn logs_tail_limit_previous_and_timestamps() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let all = kubectl.ok(&["logs", "toolbox"], None).await;
    assert_eq!(all, "kube-sim: container shell of pod default/toolbox started\nkube-sim: ready\n");
    assert_eq!(kubectl.ok(&["logs", "toolbox", "--tail=1"], None).await, "kube-sim: ready\n");
    assert_eq!(kubectl.ok(&["logs", "toolbox", "--limit-bytes=8"], None).await, "kube-sim");
    assert_eq!(kubectl.ok(&["logs", "toolbox", "--since=1h"], None).await, all);
    let stamped = kubectl.ok(&["logs", "toolbox", "--timestamps", "--tail=1"], None).await;
    let (stamp, text) = stamped.trim_end().split_once(' ').expect("a timestamp, a space, the line");
    assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && text == "kube-sim: ready", "{stamped}");
    let refused = kubectl.run(&["logs", "toolbox", "--previous"], None).await;
    assert!(String::from_utf8_lossy(&refused.stderr).contains("previous terminated container \"shell\" in pod \"toolbox\" not found"), "{refused:?}");

    // A restart keeps the old container's log for --previous.
    let state = sim.state();
    let pod = state.store.get(&kube_sim::resources::PODS, "default", "toolbox").expect("the toolbox pod");
    let uid = pod["metadata"]["uid"].as_str().expect("a uid");
    kube_sim::logs::with_start(state, &pod, "shell", |start| {
        state.logs.append(uid, "shell", start, "last words".to_owned());
        state.logs.restart(uid, "shell", start, chrono::Utc::now());
    });
    assert_eq!(kubectl.ok(&["logs", "toolbox", "--previous", "--tail=1"], None).await, "last words\n");
    assert_eq!(kubectl.ok(&["logs", "toolbox"], None).await, all, "the new container's log starts afresh");
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn logs_follow_streams_what_the_container_writes() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let mut follow = Streaming::spawn(&kubectl, &["logs", "-f", "toolbox"]);
    assert_eq!(follow.next_line().await, "kube-sim: container shell of pod default/toolbox started");
    assert_eq!(follow.next_line().await, "kube-sim: ready");

    // A process in the container writes to the container's log after kubectl started.
    kubectl.ok(&["exec", "toolbox", "--", "sh", "-c", "echo written-after-start >> container.log"], None).await;
    assert_eq!(follow.next_line().await, "written-after-start");
    http.stats_when("the follow to be streaming", |s| s["logFollows"] == 1).await;

    follow.stop().await;
    http.stats_when("the follow to end once kubectl is gone", |s| s["logFollows"] == 0).await;
    sim.shutdown().await;
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn field_selectors_kubectl_uses() {
    let sim = common::start(Seed::Demo).await;
    let kubectl = kubectl(&sim);
    let http = Http::new(&sim);
    let web = common::pods_of(&sim, "demo", "web");
    let about = |pod: &str, reason: &str| {
        let uid = sim.state().store.get(&kube_sim::resources::PODS, "demo", pod).map(|p| p["metadata"]["uid"].clone());
        json!({"metadata": {"generateName": format!("{pod}.")}, "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": "demo", "name": pod, "uid": uid},
               "reason": reason, "message": format!("{reason} happened"), "type": "Normal", "source": {"component": "kubelet", "host": "sim-node-1"}})
    };
    http.post("/api/v1/namespaces/demo/events", &about(&web[0], "Pulled")).await.ok();
    http.post("/api/v1/namespaces/demo/events", &about(&web[1], "Started")).await.ok();

    let rows = table_rows(&kubectl.ok(&["events", "-n", "demo", "--for", &format!("pod/{}", web[0])], None).await);
    assert_eq!(rows.len(), 2, "a header and the one event about {}: {rows:?}", web[0]);
    assert!(rows[1].contains(&"Pulled".to_owned()) && rows[1].contains(&format!("Pod/{}", web[0])), "{rows:?}");
    let described = kubectl.ok(&["describe", "pod", "-n", "demo", &web[1]], None).await;
    assert!(described.contains("Started happened") && !described.contains("Pulled happened"), "events by involvedObject.uid:\n{described}");

    let on_node: Vec<String> = table_rows(&kubectl.ok(&["get", "pods", "-A", "--field-selector", "spec.nodeName=sim-node-2,status.phase=Running", "--no-headers"], None).await)
        .into_iter()
        .map(|row| format!("{}/{}", row[0], row[1]))
        .collect();
    let (_, pods) = sim.state().store.list(&kube_sim::resources::PODS, None);
    let expected: Vec<String> = pods.iter().filter(|p| p["spec"]["nodeName"] == "sim-node-2").map(|p| format!("{}/{}", p["metadata"]["namespace"].as_str().unwrap_or_default(), p["metadata"]["name"].as_str().unwrap_or_default())).collect();
    assert!(!expected.is_empty());
    assert_eq!(on_node, expected);
    assert_eq!(kubectl.ok(&["get", "pods", "-n", "default", "--field-selector", "spec.schedulerName=default-scheduler,spec.serviceAccountName=default,spec.restartPolicy=Always", "-o", "name"], None).await.lines().count(), 2);

    let refused = kubectl.run(&["get", "pods", "--field-selector", "spec.color=blue"], None).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("field label not supported: spec.color"), "{}", String::from_utf8_lossy(&refused.stderr));
    sim.shutdown().await;
}

/// A plain-HTTP front for `sim` that adds `Authorization: Bearer <token>` to every request:
/// kubectl sends no credentials to a plain-HTTP server itself, so a user behind an
/// authenticating proxy is how kubectl acts as someone there.
async fn authenticating_proxy(sim: &Sim, token: &str) -> (Kubectl, tokio::task::JoinHandle<()>) {
    let mut config = kube::Config::new(sim.url().parse().expect("the simulator URL is a URI"));
    config.auth_info.token = Some(token.to_owned().into());
    let client = kube::Client::try_from(config).expect("a client with the token");
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let client = client.clone();
        async move {
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
            match client.send(axum::http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()))).await {
                Ok(response) => response.map(axum::body::Body::new),
                Err(error) => axum::response::IntoResponse::into_response((axum::http::StatusCode::BAD_GATEWAY, error.to_string())),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the proxy");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (Kubectl::for_server(&url), task)
}

#[tokio::test]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn auth_can_i_answers_from_the_users_namespaces() {
    let users = ["root:root-token:*", "alice:alice-token:demo"].map(|u| kube_sim::User::parse(u).expect("a user"));
    let sim = common::start_with(kube_sim::SimConfig { users: users.to_vec(), ..Default::default() }).await;
    let (root, root_proxy) = authenticating_proxy(&sim, "root-token").await;
    let (alice, alice_proxy) = authenticating_proxy(&sim, "alice-token").await;

    assert_eq!(root.ok(&["auth", "can-i", "create", "pods"], None).await.trim(), "yes");
    assert_eq!(root.ok(&["auth", "can-i", "list", "nodes"], None).await.trim(), "yes");
    assert_eq!(alice.ok(&["auth", "can-i", "create", "pods", "-n", "demo"], None).await.trim(), "yes");
    let denied = alice.run(&["auth", "can-i", "create", "pods", "-n", "default"], None).await;
    assert_eq!((String::from_utf8_lossy(&denied.stdout).trim(), denied.status.code()), ("no", Some(1)), "{}", String::from_utf8_lossy(&denied.stderr));
    let denied = alice.run(&["auth", "can-i", "list", "nodes"], None).await;
    assert_eq!(String::from_utf8_lossy(&denied.stdout).trim(), "no", "cluster-scoped is beyond her namespaces");

    let rows = |out: String| table_rows(&out).into_iter().map(|r| r.join(" ")).collect::<Vec<_>>();
    let everything = rows(root.ok(&["auth", "can-i", "--list"], None).await);
    assert!(everything.contains(&"*.* [] [] [*]".to_owned()) && everything.contains(&"[*] [] [*]".to_owned()), "{everything:?}");
    let in_demo = rows(alice.ok(&["auth", "can-i", "--list", "-n", "demo"], None).await);
    assert!(in_demo.contains(&"*.* [] [] [*]".to_owned()), "{in_demo:?}");
    let in_default = rows(alice.ok(&["auth", "can-i", "--list", "-n", "default"], None).await);
    assert!(!in_default.iter().any(|r| r.starts_with("*.*")), "{in_default:?}");
    assert!(in_default.contains(&"selfsubjectaccessreviews.authorization.k8s.io [] [] [create]".to_owned()), "{in_default:?}");
    root_proxy.abort();
    alice_proxy.abort();
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
