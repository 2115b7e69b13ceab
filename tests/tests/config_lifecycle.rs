//! Lifecycles that cannot race. kportal's forward manager fixed four races by hand; here each
//! is made structurally impossible (`edge-proxy/src/live.rs`), and each keeps a named test:
//! - configuration read while it is replaced: readers see one snapshot or the other, never a mix;
//! - a reload to no clusters leaves the health checker and the watches working when clusters
//!   come back;
//! - a client configuration shared and mutated across users: every user acts as itself while
//!   reloads rebuild the clients underneath;
//! - a double stop, a stop racing a reload, a shutdown mid-reconnect: each ends cleanly.
//!
//! Then seeded schedules of reloads (valid and invalid), clients connecting, watching and
//! vanishing, health ticks and shutdown: after each, no panic, no task left running, every
//! subscription of a kept cluster still receiving, every subscription of a removed cluster told
//! exactly once. `KUBEMUX_LIFECYCLE_SEEDS` sets how many (`cargo xtask stress` runs many).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kube_sim::{Seed, Sim, SimConfig, User};
use kubemux_e2e::client::{NativeClient, View, fast_config};
use kubemux_e2e::kubeconfig;
use kubemux_protocol::client::SubscriptionState;
use kubemux_proxy::clusters::ClusterSource;
use kubemux_proxy::live::{Candidate, Loader, Outcome};
use kubemux_proxy::{Proxy, ProxySettings};
use kubemux_testkit::http;
use kubemux_testkit::wait::{poll, within_for};

const PODS: &str = "/api/v1/namespaces/demo/pods";

/// Two churning simulators on a runtime of their own, so that counting the test runtime's tasks
/// counts the proxy's and the clients' only.
fn sims() -> &'static [String; 2] {
    static SIMS: OnceLock<[String; 2]> = OnceLock::new();
    SIMS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async {
                let users = ["admin:admin-token:*", "root:root-token:*", "alice:alice-token:demo"].map(|u| User::parse(u).unwrap()).to_vec();
                let one = Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 20.0, users: users.clone(), ..SimConfig::default() }).await.unwrap();
                let two = Sim::start(SimConfig { seed: Seed::Demo, churn_per_second: 20.0, users, ..SimConfig::default() }).await.unwrap();
                tx.send([one.url(), two.url()]).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

/// Where `Entry::sim` 2 points: a closed port, an unreachable cluster.
const UNREACHABLE: usize = 2;

/// A cluster the scripted configuration names: which simulator, with which token.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    name: String,
    sim: usize,
    token: &'static str,
}

/// A configuration source a test sets: valid entries, or a rejection.
#[derive(Clone)]
struct Scripted(Arc<Mutex<Result<Vec<Entry>, String>>>);

impl Scripted {
    fn new(entries: Vec<Entry>) -> Scripted {
        Scripted(Arc::new(Mutex::new(Ok(entries))))
    }

    fn set(&self, next: Result<Vec<Entry>, String>) {
        *self.0.lock().unwrap() = next;
    }
}

impl Loader for Scripted {
    fn load(&self) -> Result<Candidate, String> {
        let entries = self.0.lock().unwrap().clone()?;
        let sources = entries
            .iter()
            .map(|e| {
                let url = sims().get(e.sim).cloned().unwrap_or_else(|| "http://127.0.0.1:9".to_owned());
                ClusterSource::Kubeconfig { name: e.name.clone(), kubeconfig: kubeconfig(&[(&e.name, &url, Some(e.token))]), context: None, file: None }
            })
            .collect();
        let settings = ProxySettings { listen: "127.0.0.1:0".parse().unwrap(), health_interval: Duration::from_millis(100), ..ProxySettings::default() };
        Ok(Candidate { settings, sources })
    }

    fn file(&self) -> Option<std::path::PathBuf> {
        None
    }

    fn files(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
}

fn entry(name: &str, sim: usize) -> Entry {
    Entry { name: name.to_owned(), sim, token: "admin-token" }
}

async fn start(loader: &Scripted) -> Proxy {
    Proxy::start_live(Box::new(loader.clone())).await.expect("the proxy starts")
}

async fn reload(proxy: &Proxy, loader: &Scripted, next: Result<Vec<Entry>, String>) -> Outcome {
    loader.set(next);
    within_for(Duration::from_secs(10), "a reload", proxy.app().live.reload()).await
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

async fn cluster_names(proxy: &Proxy) -> Vec<String> {
    let body: serde_json::Value = serde_json::from_str(&http::get(&format!("{}/clusters", proxy.http_url())).await.body).unwrap();
    body.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

trait HttpUrl {
    fn http_url(&self) -> String;
    fn mux_url(&self) -> String;
}

impl HttpUrl for Proxy {
    fn http_url(&self) -> String {
        format!("http://{}", self.addr())
    }
    fn mux_url(&self) -> String {
        format!("ws://{}/mux", self.addr())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_configuration_read_while_it_is_replaced_is_never_half_old_half_new() {
    let first = vec![entry("a1", 0), entry("a2", 1)];
    let second = vec![entry("b1", 0), entry("b2", 1)];
    let loader = Scripted::new(first.clone());
    let proxy = start(&loader).await;
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.http_url();
            tokio::spawn(async move {
                let mut seen = 0;
                for _ in 0..60 {
                    let body: serde_json::Value = serde_json::from_str(&http::get(&format!("{url}/clusters")).await.body).unwrap();
                    let names: Vec<&str> = body.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
                    assert!(names == ["a1", "a2"] || names == ["b1", "b2"], "a mixed configuration: {names:?}");
                    let status: serde_json::Value = serde_json::from_str(&http::get(&format!("{url}/config/status")).await.body).unwrap();
                    // Odd generations are the first set, even ones the second, in one snapshot.
                    let generation = status["generation"].as_u64().unwrap();
                    let expected = if generation % 2 == 1 { ["a1", "a2"] } else { ["b1", "b2"] };
                    assert_eq!(status["clusters"], serde_json::json!(expected), "generation {generation}");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for i in 0..40 {
        let next = if i % 2 == 0 { second.clone() } else { first.clone() };
        assert!(matches!(reload(&proxy, &loader, Ok(next)).await, Outcome::Applied { .. }));
    }
    for reader in readers {
        assert_eq!(within_for(Duration::from_secs(30), "a reader", reader).await.unwrap(), 60);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_a_reload_to_no_clusters_leaves_health_checks_and_watches_working() {
    let loader = Scripted::new(vec![entry("a", 0)]);
    let proxy = start(&loader).await;
    assert!(matches!(reload(&proxy, &loader, Ok(Vec::new())).await, Outcome::Applied { .. }));
    assert!(cluster_names(&proxy).await.is_empty());
    let three = vec![entry("x", 0), entry("y", 1), entry("z", 0)];
    assert!(matches!(reload(&proxy, &loader, Ok(three)).await, Outcome::Applied { .. }));
    let url = proxy.http_url();
    poll("every new cluster health-checked", Duration::from_secs(5), || async {
        let body = http::get(&format!("{url}/clusters")).await.body;
        if body.matches(r#""status":"ok""#).count() == 3 { Ok(()) } else { Err(body) }
    })
    .await;
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(7));
    for name in ["x", "y", "z"] {
        client.watch(name, name, PODS, None).await.unwrap();
    }
    client.wait_for(Duration::from_secs(10), "every watch synced", |v| ["x", "y", "z"].iter().all(|n| v.synced.contains_key(*n))).await.unwrap();
    drop(client);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_users_never_share_or_mutate_a_client_config_while_reloads_rebuild_clients() {
    let loader = Scripted::new(vec![entry("a", 0)]);
    let proxy = start(&loader).await;
    let url = format!("{}/clusters/a/api/v1/namespaces/kube-system/pods", proxy.http_url());
    let users: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let (token, expected) = if i % 2 == 0 { ("alice-token", 403) } else { ("admin-token", 200) };
                let header = format!("Bearer {token}");
                for _ in 0..25 {
                    let response = http::request(http::Method::GET, &url, &[("authorization", header.as_str())]).await;
                    assert_eq!(response.status.as_u16(), expected, "{token}: {}", response.body);
                }
            })
        })
        .collect();
    // Meanwhile the cluster is rebuilt again and again (its own token alternating).
    for i in 0..20 {
        let token = if i % 2 == 0 { "alice-token" } else { "admin-token" };
        assert!(matches!(reload(&proxy, &loader, Ok(vec![Entry { token, ..entry("a", 0) }])).await, Outcome::Applied { .. }));
    }
    for user in users {
        within_for(Duration::from_secs(30), "a user's requests", user).await.unwrap();
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_stop_twice_stop_racing_a_reload_and_shutdown_mid_reconnect_end_cleanly() {
    let baseline = alive_tasks();
    let loader = Scripted::new(vec![entry("a", 0)]);
    let proxy = start(&loader).await;
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(8));
    client.watch("a", "a", PODS, None).await.unwrap();
    client.wait_for(Duration::from_secs(10), "synced", |v| v.synced.contains_key("a")).await.unwrap();
    // Reloads racing the stop: a task reloading in a loop while the proxy shuts down.
    let app = proxy.app().clone();
    let racing_loader = loader.clone();
    let racer = tokio::spawn(async move {
        for i in 0..50 {
            racing_loader.set(Ok(vec![Entry { token: if i % 2 == 0 { "alice-token" } else { "admin-token" }, ..entry("a", 0) }]));
            app.live.reload().await;
            // The owner is still there after shutdown: a reload then is refused or applied, never
            // a panic, and nothing starts on a stopped proxy.
        }
    });
    // Stopping twice: the cancellation token is idempotent, and `Proxy::shutdown` takes the
    // proxy, so a second stop cannot run the sequence again.
    proxy.app().shutdown.cancel();
    proxy.app().shutdown.cancel();
    within_for(Duration::from_secs(15), "the shutdown", proxy.shutdown()).await;
    within_for(Duration::from_secs(15), "the racing reloads", racer).await.unwrap();
    drop(client);
    poll("every task of the proxy ended", Duration::from_secs(10), || async {
        let alive = alive_tasks();
        if alive <= baseline { Ok(()) } else { Err(format!("{alive} alive, {baseline} before")) }
    })
    .await;

    // Shutdown mid-reconnect: the only cluster is unreachable, the upstream is backing off.
    let loader = Scripted::new(vec![Entry { name: "gone".into(), sim: UNREACHABLE, token: "admin-token" }]);
    let proxy = start(&loader).await;
    let client = NativeClient::connect(&proxy.mux_url(), fast_config(9));
    client.watch("g", "gone", PODS, None).await.unwrap();
    let view = client.wait_for(Duration::from_secs(10), "the retried failure", |v| !v.errors_of("g").is_empty()).await.unwrap();
    assert!(view.errors_of("g").iter().all(|s| s.code == 503), "unreachable, retried: {:?}", view.errors);
    within_for(Duration::from_secs(15), "the shutdown mid-retry", proxy.shutdown()).await;
    drop(client);
    poll("every task ended again", Duration::from_secs(10), || async {
        let alive = alive_tasks();
        if alive <= baseline { Ok(()) } else { Err(format!("{alive} alive, {baseline} before")) }
    })
    .await;
}

/// What the model expects of one subscription.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Its cluster is in force: it keeps receiving.
    Streaming,
    /// Its cluster was removed (or never there): exactly one fatal error.
    ToldOnce,
}

struct ModelClient {
    client: NativeClient,
    subs: BTreeMap<String, (String, Expect)>,
}

fn fatal_count(view: &View, id: &str) -> usize {
    view.errors.iter().filter(|(i, fatal, _)| i.as_deref() == Some(id) && *fatal).count()
}

/// One seeded schedule; returns a description of what went wrong.
async fn schedule(seed: u64) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let names = ["a", "b", "c"];
    let random_config = |rng: &mut fastrand::Rng| -> Vec<Entry> {
        let mut entries = Vec::new();
        for name in names {
            if rng.bool() {
                entries.push(Entry { name: name.to_owned(), sim: rng.usize(0..2), token: if rng.bool() { "admin-token" } else { "root-token" } });
            }
        }
        entries
    };
    let mut in_force = random_config(&mut rng);
    let loader = Scripted::new(in_force.clone());
    let proxy = start(&loader).await;
    let mut clients: Vec<ModelClient> = Vec::new();
    let mut next_id = 0;
    for _step in 0..rng.usize(5..14) {
        match rng.u8(0..10) {
            0..=2 => {
                let next = random_config(&mut rng);
                if let Outcome::Rejected(e) = reload(&proxy, &loader, Ok(next.clone())).await {
                    return Err(format!("a valid reload was rejected: {e}"));
                }
                // A removed cluster's subscriptions are told; a changed one's (other token, or
                // the other simulator, whose versions do not carry on: a reset) stream on.
                for model in &mut clients {
                    for (cluster, expect) in model.subs.values_mut() {
                        if !next.iter().any(|e| &e.name == cluster) {
                            *expect = Expect::ToldOnce;
                        }
                    }
                }
                in_force = next;
            }
            3 => {
                if !matches!(reload(&proxy, &loader, Err("an invalid file".into())).await, Outcome::Rejected(_)) {
                    return Err("an invalid reload was applied".into());
                }
                loader.set(Ok(in_force.clone()));
            }
            4..=5 => clients.push(ModelClient { client: NativeClient::connect(&proxy.mux_url(), fast_config(seed.wrapping_add(next_id))), subs: BTreeMap::new() }),
            6..=8 if !clients.is_empty() => {
                let index = rng.usize(0..clients.len());
                let cluster = names[rng.usize(0..names.len())].to_owned();
                next_id += 1;
                let id = format!("s{next_id}");
                let model = &mut clients[index];
                model.client.watch(&id, &cluster, PODS, None).await.map_err(|e| format!("watch: {e}"))?;
                let present = in_force.iter().any(|e| e.name == cluster);
                let wanted = id.clone();
                model
                    .client
                    .wait_for(Duration::from_secs(10), "the subscription's answer", move |v| v.synced.contains_key(&wanted) || fatal_count(v, &wanted) > 0)
                    .await
                    .map_err(|e| e.to_string())?;
                model.subs.insert(id, (cluster, if present { Expect::Streaming } else { Expect::ToldOnce }));
            }
            9 if !clients.is_empty() => {
                let index = rng.usize(0..clients.len());
                clients.swap_remove(index);
            }
            _ => {
                // A health tick: the checker runs every 100 ms; let one pass.
                let url = proxy.http_url();
                poll("a health check of every cluster", Duration::from_secs(5), || async {
                    let body = http::get(&format!("{url}/clusters")).await.body;
                    if !body.contains("unknown") { Ok(()) } else { Err(body) }
                })
                .await;
            }
        }
    }
    // The end state, against the model.
    for model in &clients {
        let checkpoint = model.client.view();
        for (id, (cluster, expect)) in &model.subs {
            match expect {
                Expect::Streaming => {
                    let before = checkpoint.events.get(id).copied().unwrap_or(0);
                    let wanted = id.clone();
                    let view = model
                        .client
                        .wait_for(Duration::from_secs(10), "a kept subscription receiving", move |v| v.events.get(&wanted).copied().unwrap_or(0) > before && v.sub_states.get(&wanted) == Some(&SubscriptionState::Synced))
                        .await
                        .map_err(|e| format!("{id} on {cluster}: {e}"))?;
                    if fatal_count(&view, id) != 0 {
                        return Err(format!("{id} on kept cluster {cluster} got a fatal error: {:?}", view.errors_of(id)));
                    }
                }
                Expect::ToldOnce => {
                    let wanted = id.clone();
                    model.client.wait_for(Duration::from_secs(10), "the fatal error", move |v| fatal_count(v, &wanted) > 0).await.map_err(|e| format!("{id} on {cluster}: {e}"))?;
                    let count = fatal_count(&model.client.view(), id);
                    if count != 1 {
                        return Err(format!("{id} on removed cluster {cluster} was told {count} times"));
                    }
                }
            }
        }
    }
    let panics = http::metric(&http::get(&format!("{}/metrics", proxy.http_url())).await.body, "kubemux_task_panics_total");
    if panics > 0.0 {
        return Err(format!("{panics} task panics"));
    }
    drop(clients);
    within_for(Duration::from_secs(15), "the shutdown", proxy.shutdown()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_lifecycles_leave_no_task_and_tell_every_subscriber_once() {
    sims();
    let seeds: u64 = std::env::var("KUBEMUX_LIFECYCLE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let first: u64 = std::env::var("KUBEMUX_LIFECYCLE_FIRST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let baseline = alive_tasks();
    for seed in first..first + seeds {
        if let Err(problem) = schedule(seed).await {
            panic!("seed {seed} (rerun with KUBEMUX_LIFECYCLE_FIRST_SEED={seed} KUBEMUX_LIFECYCLE_SEEDS=1): {problem}");
        }
        let settled = kubemux_testkit::wait::try_poll("every task of the schedule ended", Duration::from_secs(10), || async {
            let alive = alive_tasks();
            if alive <= baseline { Ok(()) } else { Err(format!("{alive} alive, {baseline} before")) }
        })
        .await;
        if let Err(left) = settled {
            panic!("seed {seed} left tasks running: {left}");
        }
    }
}
