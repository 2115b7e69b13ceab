//! Live reload of the real binary, on real sockets with two simulators: a cluster added by
//! editing the file is usable at once while a subscription on the other keeps receiving with no
//! `reset`; a removed cluster's subscriptions get one fatal error each; an invalid file is
//! rejected with its line while the old configuration keeps serving; SIGHUP; a ConfigMap-style
//! symlink swap; a rotated token file heals a 401; a reload to no clusters and back leaves the
//! health checks running; an edit that leaves a cluster as it was does not touch its watches.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::client::{NativeClient, fast_config};
use kubemux_e2e::kubeconfig;
use kubemux_protocol::frames::Status;
use kubemux_testkit::http;
use kubemux_testkit::{proxy_binary, start_binary};
use kubemux_testkit::wait::poll;
use serde_json::Value;

const PODS: &str = "/api/v1/namespaces/demo/pods";
/// The issue's bound: a cluster added to the file is usable this soon.
const USABLE_WITHIN: Duration = Duration::from_secs(2);

async fn churning_sim(users: Vec<User>) -> Sim {
    Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 20.0, users, ..SimConfig::default() }).await.unwrap()
}

/// A folder with a kubeconfig per simulator and the proxy's config file.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(sims: &[(&str, &Sim)]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        for (name, sim) in sims {
            std::fs::write(dir.path().join(format!("{name}.kubeconfig")), serde_json::to_string(&kubeconfig(&[(name, &sim.url(), None)])).unwrap()).unwrap();
        }
        Setup { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("proxy.yaml")
    }

    /// The config file naming `clusters` (each from its kubeconfig), written the way editors
    /// save: a new file renamed over the old one.
    fn write(&self, clusters: &[&str], extra: &str) {
        let mut yaml = String::from("clusters:\n");
        for name in clusters {
            yaml.push_str(&format!("  - name: {name}\n    kubeconfig: {name}.kubeconfig\n"));
        }
        if clusters.is_empty() {
            yaml = "clusters: []\n".to_owned();
        }
        yaml.push_str(extra);
        save(&self.config(), &yaml);
    }
}

/// Writes `text` to `path` by renaming a new file over it, as editors do.
fn save(path: &Path, text: &str) {
    let temporary = path.with_extension("swp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

struct Proxy {
    child: tokio::process::Child,
    base: String,
    mux: String,
}

impl Proxy {
    async fn start(config: &Path) -> Proxy {
        let (child, addr) = start_binary(&proxy_binary(), &[std::ffi::OsStr::new("--config"), config.as_os_str()], "info", Stdio::null()).await;
        Proxy { child, base: format!("http://{addr}"), mux: format!("ws://{addr}/mux") }
    }

    /// Started with `--config` alone, so the file's `listen` is the one bound.
    async fn start_plain(config: &Path) -> Proxy {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = tokio::process::Command::new(proxy_binary()).arg("--config").arg(config).stdout(Stdio::piped()).stderr(Stdio::null()).kill_on_drop(true).spawn().expect("the proxy starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = kubemux_testkit::wait::within("the proxy's listening line", lines.next_line()).await.expect("stdout reads").expect("a first line");
        let addr = first.strip_prefix("kubemux-proxy listening on http://").unwrap_or_else(|| panic!("unexpected first line: {first}")).to_owned();
        Proxy { child, base: format!("http://{addr}"), mux: format!("ws://{addr}/mux") }
    }

    async fn clusters(&self) -> Vec<String> {
        let body: Value = serde_json::from_str(&http::get(&format!("{}/clusters", self.base)).await.body).unwrap();
        body.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    }

    async fn status(&self) -> Value {
        serde_json::from_str(&http::get(&format!("{}/config/status", self.base)).await.body).unwrap()
    }

    async fn reloads(&self, result: &str) -> f64 {
        http::metric(&http::get(&format!("{}/metrics", self.base)).await.body, &format!("kubemux_config_reloads_total{{result=\"{result}\"}}"))
    }

    /// Waits until `/config/status` satisfies `wanted` (the proxy pushes nothing for it).
    async fn status_until(&self, what: &str, deadline: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        poll(what, deadline, || async {
            let status = self.status().await;
            if wanted(&status) { Ok(status) } else { Err(status.to_string()) }
        })
        .await
    }
}

async fn watch_requests(sim: &Sim) -> u64 {
    let stats: Value = serde_json::from_str(&http::get(&format!("{}/_sim/stats", sim.url())).await.body).unwrap();
    stats["watchRequests"].as_u64().unwrap()
}

fn fatal_errors<'a>(view: &'a kubemux_testkit::client::View, id: &str) -> Vec<&'a Status> {
    view.errors.iter().filter(|(i, fatal, _)| i.as_deref() == Some(id) && *fatal).map(|(_, _, s)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_added_and_removed_by_editing_the_file_leave_the_others_streaming() {
    let (a, b) = (churning_sim(Vec::new()).await, churning_sim(Vec::new()).await);
    let setup = Setup::new(&[("a", &a), ("b", &b)]);
    setup.write(&["a"], "");
    let proxy = Proxy::start(&setup.config()).await;
    let client = NativeClient::connect(&proxy.mux, fast_config(1));
    client.watch("on-a", "a", PODS, None).await.unwrap();
    let view = client.wait_for(Duration::from_secs(10), "a's snapshot", |v| v.synced.contains_key("on-a")).await.unwrap();
    let before = view.events["on-a"];
    // The upstream watch opens after the list that gave the snapshot: wait for it to be open.
    let a_watches = poll("a's upstream watch open", Duration::from_secs(5), || async {
        let count = watch_requests(&a).await;
        if count > 0 { Ok(count) } else { Err("no watch yet".to_owned()) }
    })
    .await;

    // Add b by saving the file.
    setup.write(&["a", "b"], "");
    let added = tokio::time::Instant::now();
    poll("b in /clusters", USABLE_WITHIN, || async { if proxy.clusters().await.contains(&"b".to_owned()) { Ok(()) } else { Err("not yet".to_owned()) } }).await;
    client.watch("on-b", "b", PODS, None).await.unwrap();
    client.wait_for(USABLE_WITHIN.saturating_sub(added.elapsed()) + Duration::from_secs(3), "b's snapshot", |v| v.synced.contains_key("on-b")).await.unwrap();
    let view = client.wait_for(Duration::from_secs(10), "a still streaming", |v| v.events["on-a"] > before + 5).await.unwrap();
    assert_eq!(view.resets.get("on-a"), None, "no reset on the cluster the reload kept");
    assert!(view.errors_of("on-a").is_empty(), "{:?}", view.errors);
    assert_eq!(watch_requests(&a).await, a_watches, "a's upstream watch was not restarted");
    let status = proxy.status().await;
    assert_eq!((status["generation"].as_u64(), status["lastError"].is_null()), (Some(2), true), "{status}");

    // Remove b: its subscription ends with one fatal error naming it; a is not touched.
    setup.write(&["a"], "");
    let view = client.wait_for(Duration::from_secs(5), "b's fatal error", |v| !fatal_errors(v, "on-b").is_empty()).await.unwrap();
    let errors = fatal_errors(&view, "on-b");
    assert_eq!(errors.len(), 1, "exactly one: {errors:?}");
    assert_eq!(errors[0].code, 404, "{errors:?}");
    assert!(errors[0].message.contains("cluster b was removed"), "{errors:?}");
    let before = view.events["on-a"];
    let view = client.wait_for(Duration::from_secs(10), "a still streaming", |v| v.events["on-a"] > before + 5).await.unwrap();
    assert_eq!(view.resets.get("on-a"), None);
    assert_eq!(fatal_errors(&view, "on-b").len(), 1, "still exactly one");
    assert_eq!(proxy.clusters().await, ["a"]);
    assert!(proxy.reloads("applied").await >= 2.0);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_rejected_with_its_line_and_the_old_configuration_keeps_serving() {
    let a = churning_sim(Vec::new()).await;
    let setup = Setup::new(&[("a", &a)]);
    setup.write(&["a"], "");
    let proxy = Proxy::start(&setup.config()).await;
    let client = NativeClient::connect(&proxy.mux, fast_config(2));
    client.watch("on-a", "a", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "a's snapshot", |v| v.synced.contains_key("on-a")).await.unwrap();
    let file = setup.config().display().to_string();
    let cases = [
        ("clusters:\n  - name: a\n    kubeconfig: a.kubeconfig\n  - [oops\n", "bad YAML", format!("{file}:4:")),
        ("clusters:\n  - name: a\n    kubeconfig: a.kubeconfig\nmaxSubscriptionz: 3\n", "an unknown key", format!("{file}:4:1: maxSubscriptionz")),
        ("clusters:\n  - name: a\n    kubeconfig: a.kubeconfig\n  - name: a\n    kubeconfig: a.kubeconfig\n", "a duplicate name", format!("{file}:4:11: clusters[1].name: duplicate cluster name")),
    ];
    for (rejected, (text, what, expected)) in cases.iter().enumerate() {
        save(&setup.config(), text);
        let status = proxy
            .status_until(&format!("{what} rejected"), Duration::from_secs(5), |s| s["lastReload"]["result"] == "rejected" && s["lastError"]["message"].as_str().is_some_and(|m| m.contains(expected.as_str())))
            .await;
        assert_eq!(status["generation"], 1, "{what}: the old configuration stays in force: {status}");
        assert_eq!(proxy.clusters().await, ["a"], "{what}");
        assert_eq!(proxy.reloads("rejected").await, (rejected + 1) as f64, "{what}: counted");
        // Reset the record so the next case is seen as its own rejection.
        setup.write(&["a"], "");
        proxy.status_until("the valid file again", Duration::from_secs(5), |s| s["lastReload"]["result"] == "unchanged").await;
    }
    let before = client.view().events["on-a"];
    let view = client.wait_for(Duration::from_secs(10), "a still streaming", |v| v.events["on-a"] > before + 5).await.unwrap();
    assert_eq!(view.resets.get("on-a"), None);
    assert!(view.errors_of("on-a").is_empty(), "{:?}", view.errors);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_configmap_symlink_swap_is_seen() {
    let (a, b) = (churning_sim(Vec::new()).await, churning_sim(Vec::new()).await);
    let setup = Setup::new(&[("a", &a), ("b", &b)]);
    // The layout Kubernetes' atomic writer gives a mounted ConfigMap.
    let mount = setup.dir.path().join("mount");
    let first = mount.join("..2026_12_02_00_00_00.000000001");
    std::fs::create_dir_all(&first).unwrap();
    let kubeconfigs = setup.dir.path().display().to_string();
    let yaml = |names: &[&str]| names.iter().fold(String::from("clusters:\n"), |y, n| y + &format!("  - name: {n}\n    kubeconfig: {kubeconfigs}/{n}.kubeconfig\n"));
    std::fs::write(first.join("proxy.yaml"), yaml(&["a"])).unwrap();
    std::os::unix::fs::symlink(first.file_name().unwrap(), mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/proxy.yaml", mount.join("proxy.yaml")).unwrap();
    let proxy = Proxy::start(&mount.join("proxy.yaml")).await;
    assert_eq!(proxy.clusters().await, ["a"]);

    // SIGHUP with nothing changed: a reload that finds nothing to do.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(proxy.child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    proxy.status_until("the SIGHUP reload", Duration::from_secs(5), |s| s["lastReload"]["result"] == "unchanged").await;
    assert_eq!(proxy.reloads("unchanged").await, 1.0);

    // The swap: a new timestamped folder, `..data_tmp` pointing at it, renamed over `..data`.
    let second = mount.join("..2026_12_02_00_01_00.000000002");
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("proxy.yaml"), yaml(&["a", "b"])).unwrap();
    std::os::unix::fs::symlink(second.file_name().unwrap(), mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    poll("b after the swap", USABLE_WITHIN, || async { if proxy.clusters().await == ["a", "b"] { Ok(()) } else { Err("not yet".to_owned()) } }).await;
    let status = proxy.status().await;
    assert_eq!(status["generation"], 2, "{status}");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_heals_a_401_and_a_reload_to_no_clusters_and_back_keeps_health_checks() {
    let users = ["admin:admin-token:*", "other:other-token:*"].map(|u| User::parse(u).unwrap()).to_vec();
    let a = churning_sim(users).await;
    let setup = Setup::new(&[]);
    let token = setup.dir.path().join("token");
    std::fs::write(&token, "wrong-token\n").unwrap();
    let config = setup.config();
    let direct = format!("clusters:\n  - name: a\n    server: {}\n    tokenFile: token\nhealthInterval: 0.5\n", a.url());
    save(&config, &direct);
    let proxy = Proxy::start(&config).await;
    let client = NativeClient::connect(&proxy.mux, fast_config(3));
    client.watch("on-a", "a", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "a 401 for the wrong token", |v| v.errors_of("on-a").iter().any(|s| s.code == 401)).await.unwrap();
    assert!(fatal_errors(&client.view(), "on-a").is_empty(), "a 401 is retried, not fatal");

    // Rotate the token in place, as a secret's rotation does: the subscription heals.
    std::fs::write(&token, "admin-token\n").unwrap();
    let view = client.wait_for(Duration::from_secs(5), "the snapshot with the rotated token", |v| v.synced.contains_key("on-a")).await.unwrap();
    assert_eq!(view.resets.get("on-a"), None, "{view:?}");

    // Rotate again to another valid token: the watch restarts with it and the subscriber carries
    // on from the version it holds, with no reset.
    let watches = poll("the upstream watch open", Duration::from_secs(5), || async {
        let count = watch_requests(&a).await;
        if count > 0 { Ok(count) } else { Err("no watch yet".to_owned()) }
    })
    .await;
    std::fs::write(&token, "other-token\n").unwrap();
    poll("the watch restarted with the new token", Duration::from_secs(5), || async { if watch_requests(&a).await > watches { Ok(()) } else { Err("not yet".to_owned()) } }).await;
    let before = client.view().events["on-a"];
    let view = client.wait_for(Duration::from_secs(10), "events after the rotation", |v| v.events["on-a"] > before + 5).await.unwrap();
    assert_eq!(view.resets.get("on-a"), None, "the versions carry on: no reset");

    // To no clusters: the subscription ends; back to one: health checks and watches work again.
    save(&config, "clusters: []\nhealthInterval: 0.5\n");
    client.wait_for(Duration::from_secs(5), "the removal's fatal error", |v| !fatal_errors(v, "on-a").is_empty()).await.unwrap();
    assert!(proxy.clusters().await.is_empty());
    save(&config, &direct);
    poll("a checked again after the reload back", Duration::from_secs(5), || async {
        let body = http::get(&format!("{}/clusters", proxy.base)).await.body;
        if body.contains(r#""status":"ok""#) { Ok(()) } else { Err(body) }
    })
    .await;
    client.watch("again", "a", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(5), "a new subscription after the reload back", |v| v.synced.contains_key("again")).await.unwrap();
    assert_eq!(proxy.status().await["generation"], 5);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_origins_apply_to_new_connections_and_listen_needs_a_restart() {
    let a = churning_sim(Vec::new()).await;
    let setup = Setup::new(&[("a", &a)]);
    // The file's own listen address this time (start_binary's --listen would override it).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("listen: 127.0.0.1:{port}\n");
    setup.write(&["a"], &listen);
    let proxy = Proxy::start_plain(&setup.config()).await;
    let open = NativeClient::connect(&proxy.mux, fast_config(4));
    open.watch("one", "a", PODS, None).await.unwrap();
    open.wait_for(Duration::from_secs(10), "the first snapshot", |v| v.synced.contains_key("one")).await.unwrap();
    setup.write(&["a"], "maxSubscriptions: 1\nlisten: 127.0.0.1:1\n");
    let status = proxy.status_until("the reload", Duration::from_secs(5), |s| s["generation"] == 2).await;
    let restart = status["restartNeeded"].to_string();
    assert!(restart.contains("listen") && restart.contains("127.0.0.1:1"), "{status}");
    // The connection already open keeps the limit it opened with; a new one gets the new one.
    open.watch("two", "a", PODS, None).await.unwrap();
    open.wait_for(Duration::from_secs(10), "the second snapshot on the old connection", |v| v.synced.contains_key("two")).await.unwrap();
    let fresh = NativeClient::connect(&proxy.mux, fast_config(5));
    fresh.watch("one", "a", PODS, None).await.unwrap();
    fresh.watch("two", "a", PODS, None).await.unwrap();
    let view = fresh.wait_for(Duration::from_secs(10), "the new limit", |v| v.errors_of("two").iter().any(|s| s.code == 429)).await.unwrap();
    assert!(view.synced.contains_key("one"), "{view:?}");
    drop(proxy);
}
