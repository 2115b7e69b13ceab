//! `/clusters/{cluster}/{api path}` end to end: any Kubernetes API request through the proxy,
//! answered by kube-sim as is. First through kube-rs (a client configured with the base path),
//! then through the real `kubectl --server http://PROXY/clusters/NAME` (get, apply, delete,
//! get -w, exec and exec -i with exit codes). The kubectl tests are ignored by a plain `cargo
//! test`; `cargo xtask test` runs them (see `kubemux_testkit::kubectl`).

mod terminal_support;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::{ProxyProcess, kubeconfig, sim_client};
use kubemux_proxy::ProxySettings;
use serde_json::json;
use kubemux_testkit::http;
use kubemux_testkit::kubectl::Kubectl;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use terminal_support::{http_get, within};

fn settings() -> ProxySettings {
    ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), ..ProxySettings::default() }
}

async fn demo_sim(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, users, ..SimConfig::default() }).await.expect("the simulator starts")
}

/// A kube client that talks to cluster `sim` through the proxy, optionally with a token.
fn through_proxy(proxy: &ProxyProcess, cluster: &str, token: Option<&str>) -> kube::Client {
    let mut config = kube::Config::new(format!("{}/clusters/{cluster}", proxy.http_url()).parse().unwrap());
    // Every answer as sent: no retries.
    config.default_retry = false;
    if let Some(token) = token {
        config.auth_info.token = Some(token.to_owned().into());
    }
    kube::Client::try_from(config).expect("a client")
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "data": {"k": value}})).unwrap()
}

/// Every verb, with bodies and content types, and the upstream's statuses as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_and_statuses_pass_through() {
    let sim = demo_sim(vec![]).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let client = through_proxy(&proxy, "sim", None);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = pods.list(&ListParams::default()).await.expect("list").items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert!(names.contains(&"toolbox".to_owned()), "{names:?}");

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    maps.create(&PostParams::default(), &config_map("through", "one")).await.expect("create (POST)");
    let patch = Patch::Strategic(json!({"data": {"k": "two"}}));
    maps.patch("through", &PatchParams::default(), &patch).await.expect("strategic merge patch");
    // The simulator has no server-side apply: its own 415, naming the content type it got,
    // comes back as is.
    let apply = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "through"}, "data": {"k": "three"}}));
    match maps.patch("through", &PatchParams::apply("passthrough-test"), &apply).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (415, "UnsupportedMediaType"), "{status:?}");
            assert!(status.message.contains("application/apply-patch+yaml"), "the content type reached the cluster: {status:?}");
        }
        other => panic!("expected the simulator's 415, got {other:?}"),
    }
    let merge = Patch::Merge(json!({"data": {"extra": "yes"}}));
    maps.patch("through", &PatchParams::default(), &merge).await.expect("merge patch");
    let stored = sim.state().store.get(&kube_sim::resources::CONFIGMAPS, "default", "through").expect("stored upstream");
    assert_eq!(stored["data"], json!({"k": "two", "extra": "yes"}));
    maps.delete("through", &DeleteParams::default()).await.expect("delete");

    // The upstream's own Status, code and reason as sent.
    match maps.get("through").await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"), "{status:?}"),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    let conflict = maps.create(&PostParams::default(), &config_map("twice", "a")).await.and(maps.create(&PostParams::default(), &config_map("twice", "b")).await);
    match conflict {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected a 409 Status, got {other:?}"),
    }
    // A cluster the proxy does not know: a Status too.
    match Api::<Pod>::namespaced(through_proxy(&proxy, "nowhere", None), "default").list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404, "{status:?}"),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    proxy.stop();
    sim.shutdown().await;
}

/// A watch streams through: an event made after the watch started arrives while the response
/// is still open (nothing buffers it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_stream_through() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let maps: Api<ConfigMap> = Api::namespaced(through_proxy(&proxy, "sim", None), "default");
    let version = maps.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("a resourceVersion");
    let mut events = maps.watch(&WatchParams::default().timeout(60), &version).await.expect("watch").boxed();

    let direct: Api<ConfigMap> = Api::namespaced(sim_api, "default");
    direct.create(&PostParams::default(), &config_map("watched", "x")).await.expect("create upstream");
    let added = within("the ADDED event through the proxy", async {
        while let Some(event) = events.try_next().await.expect("a clean stream") {
            if let WatchEvent::Added(cm) = event
                && cm.metadata.name.as_deref() == Some("watched")
            {
                return cm;
            }
        }
        panic!("the watch ended before the event");
    })
    .await;
    assert_eq!(added.data.unwrap()["k"], "x");
    proxy.stop();
    sim.shutdown().await;
}

/// The connection's identity applies: the client's bearer token reaches the cluster (and its
/// refusals come back as they are); the proxy's `Authorization` is its own business; a foreign
/// Origin is refused before anything runs with the proxy's credentials.
/// A cluster whose URL has a path of its own (as behind Rancher's `/k8s/clusters/ID`): a
/// request that fits in a URI on its way in can outgrow one once that path goes in front. The
/// proxy answers 414 with a Status instead of panicking in kube's request builder (which
/// dropped the connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_long_for_the_clusters_url_is_a_414() {
    let sim = demo_sim(vec![]).await;
    let base = format!("{}/{}", sim.url(), "p".repeat(200));
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &base, None)]));
    let path = "/clusters/sim/api/v1/pods?labelSelector=";
    let url = format!("{}{path}{}", proxy.http_url(), "a".repeat(65_400 - path.len()));
    let response = http::get(&url).await;
    assert_eq!(response.status, 414, "{}", response.body);
    assert!(response.body.contains("RequestURITooLong") && response.body.contains("65534"), "{}", response.body);
    // The proxy lives on.
    assert_eq!(http_get(proxy.addr(), "/healthz").await.0, 200);
    proxy.stop();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_origin_rules() {
    let sim = demo_sim(vec![User::parse("admin:admin-token:*").unwrap(), User::parse("alice:alice-token:demo").unwrap()]).await;
    // The proxy has no credentials of its own here.
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));

    let anonymous: Api<Pod> = Api::namespaced(through_proxy(&proxy, "sim", None), "default");
    match anonymous.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("expected 401, got {other:?}"),
    }
    let admin: Api<Pod> = Api::namespaced(through_proxy(&proxy, "sim", Some("admin-token")), "default");
    assert!(!admin.list(&ListParams::default()).await.expect("the admin's token works").items.is_empty());
    let alice: Api<Pod> = Api::namespaced(through_proxy(&proxy, "sim", Some("alice-token")), "default");
    match alice.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "alice may only use demo: {status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }

    // A browser page from elsewhere gets nothing.
    let pods = format!("{}/clusters/sim/api/v1/namespaces/default/pods", proxy.http_url());
    let response = http::request(http::Method::GET, &pods, &[("origin", "https://evil.example")]).await;
    assert_eq!(response.status, 403, "{response:?}");
    // The proxy's own endpoints are not shadowed by the pass-through.
    assert_eq!(http_get(proxy.addr(), "/healthz").await.0, 200);
    proxy.stop();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_get_apply_delete_and_watch_through_the_proxy() {
    let sim = demo_sim(vec![]).await;
    let sim_api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let kubectl = Kubectl::for_server(&format!("{}/clusters/sim", proxy.http_url()));

    let pods = kubectl.ok(&["get", "pods", "-o", "name"], None).await;
    assert!(pods.lines().any(|l| l == "pod/toolbox"), "{pods}");

    let manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  greeting: hello\n";
    assert_eq!(kubectl.ok(&["apply", "-f", "-"], Some(manifest)).await.trim(), "configmap/applied created");
    assert_eq!(kubectl.ok(&["get", "configmap", "applied", "-o", "jsonpath={.data.greeting}"], None).await, "hello");
    let changed = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  greeting: bonjour\n";
    assert_eq!(kubectl.ok(&["apply", "-f", "-"], Some(changed)).await.trim(), "configmap/applied configured");
    assert_eq!(sim.state().store.get(&kube_sim::resources::CONFIGMAPS, "default", "applied").unwrap()["data"], json!({"greeting": "bonjour"}));
    assert_eq!(kubectl.ok(&["delete", "configmap", "applied"], None).await.trim(), "configmap \"applied\" deleted");
    let missing = kubectl.run(&["get", "configmap", "applied"], None).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound") || String::from_utf8_lossy(&missing.stderr).contains("not found"), "{missing:?}");

    // get -w: the listing, then a change made upstream afterwards.
    let mut child = kubectl.command(&["get", "configmaps", "-w"]).spawn().expect("kubectl starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let header = within("kubectl's header", lines.next_line()).await.expect("read").expect("a line");
    assert!(header.starts_with("NAME"), "{header}");
    let direct: Api<ConfigMap> = Api::namespaced(sim_api, "default");
    direct.create(&PostParams::default(), &config_map("seen-by-kubectl", "x")).await.expect("create upstream");
    within("the new config map in kubectl get -w", async {
        loop {
            let line = lines.next_line().await.expect("read").expect("kubectl still watching");
            if line.split_whitespace().next() == Some("seen-by-kubectl") {
                return;
            }
        }
    })
    .await;
    child.start_kill().expect("stop kubectl");
    let _ = child.wait().await;
    proxy.stop();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: cargo xtask test runs it when kubectl is on PATH"]
async fn kubectl_exec_through_the_proxy() {
    let sim = demo_sim(vec![]).await;
    let proxy = ProxyProcess::start(settings(), kubeconfig(&[("sim", &sim.url(), None)]));
    let kubectl = Kubectl::for_server(&format!("{}/clusters/sim", proxy.http_url()));

    let output = kubectl.run(&["exec", "toolbox", "-c", "shell", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"], None).await;
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hi\n", "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("oops"), "{output:?}");
    assert_eq!(output.status.code(), Some(3), "the command's exit code: {output:?}");

    let input = b"line one\nline two, no newline at the end";
    let output = kubectl.run(&["exec", "-i", "toolbox", "-c", "shell", "--", "cat"], Some(input)).await;
    assert!(output.status.success(), "kubectl exec -i failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.stdout, input, "cat echoes stdin, and ends when kubectl closes stdin");

    // -t without a local terminal: kubectl says so and runs without one.
    let output = kubectl.run(&["exec", "-it", "toolbox", "-c", "shell", "--", "sh", "-c", "exit 5"], Some(b"")).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");

    // Every session went over WebSocket v5 through the proxy's terminal endpoint.
    let (_, metrics) = http_get(proxy.addr(), "/metrics").await;
    let sessions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("kubemux_terminal_sessions_total{kind=\"exec\",protocol=\"v5.channel.k8s.io\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(sessions, 3.0, "{metrics}");
    proxy.stop();
    sim.shutdown().await;
}
