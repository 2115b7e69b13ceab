//! Race-freedom of the forward manager. kportal (the forward manager this one is measured
//! against) fixed four P0 concurrency races by hand; each is a named regression test here, and
//! a seeded randomized schedule (reloads, refused reloads, pod restarts, cut and black-holed
//! upstreams, watchdog ticks, connections, stops) checks the invariants after every step: one
//! worker per name owns a listener, a removed or stopped forward's port is closed, every reload
//! is applied whole or refused whole, and once everything stops kube-sim has no port-forward
//! left open.

mod forwards_support;

use forwards_support::*;
use std::collections::BTreeMap;
use std::time::Duration;

use kube_sim::{Sim, User};
use kubemux_proxy::forward::worker::{Reason, State};
use kubemux_proxy::live::Outcome;
use kubemux_proxy::{AppState, Proxy};
use kubemux_testkit::sim::{hook, sim_client};
use kubemux_testkit::wait::{poll, within};
use serde_json::Value;
use tokio::net::TcpStream;

/// The proxy's credentials in these tests: kube-sim counts port-forwards by user.
const PROXY_USER: &str = "admin:admin-token:*";

async fn admin_sim() -> Sim {
    sim(vec![User::parse(PROXY_USER).unwrap()]).await
}

fn names(proxy_app: &AppState) -> Vec<String> {
    proxy_app.forwards.to_json().as_array().into_iter().flatten().filter_map(|f| f["name"].as_str().map(str::to_owned)).collect()
}

async fn sim_stats(api: &kube::Client) -> Value {
    hook(api, "GET", "/_sim/stats").await
}

/// Waits until kube-sim has no port-forward open: nothing the proxy opened was left behind.
async fn no_port_forward_left(api: &kube::Client, what: &str) {
    poll(what, Duration::from_secs(15), || async {
        let stats = sim_stats(api).await;
        if stats["portForwards"] == 0 { Ok(()) } else { Err(stats.to_string()) }
    })
    .await;
}

async fn reload(app: &AppState) -> Outcome {
    within("a reload", app.live.reload()).await
}

/// kportal race 1: `currentConfig` was read outside the manager's lock while `Reload` replaced
/// it (fixed in kportal's unreleased 2026-05 changes: "`currentConfig` access under lock").
/// Here the running set changes only inside one locked apply, so a reader racing reloads sees
/// the old set or the new one, never a mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_config_read_during_reload_is_never_half_applied() {
    let sim = admin_sim().await;
    let dir = folder("race-config", &sim, Some("admin-token"));
    let one = format!("{}{}", forward("a", "demo", "pod/redis-0", "6379", 0), forward("b", "demo", "service/web", "80", 0));
    let other = forward("c", "default", "deployment/hello", "8000", 0);
    write_config(&dir, &one);
    let proxy = start(&dir).await;
    let app = proxy.app().clone();
    let reader = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut seen = 0u64;
            let stop = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < stop {
                let listed = names(&app);
                assert!(listed == ["a", "b"] || listed == ["c"], "a reader saw half a reload: {listed:?}");
                // The dry run reads the configuration too.
                if seen.is_multiple_of(16) {
                    let check = app.live.check().await;
                    assert_eq!(check["valid"], true, "{check}");
                }
                seen += 1;
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    for round in 0..8 {
        write_config(&dir, if round % 2 == 0 { &other } else { &one });
        let outcome = reload(&app).await;
        assert!(!matches!(outcome, Outcome::Rejected(_)), "{outcome:?}");
    }
    assert!(within("the reader", reader).await.unwrap() > 0);
    proxy.shutdown().await;
}

/// kportal race 2: one `rest.Config` was shared by the forwards of a context and mutated per
/// forward (fixed there by copying it before mutation), so concurrent forwards could dial with
/// another's settings. Here each worker reads the snapshot in force and its own spec: two
/// forwards on one cluster, in different namespaces and to different pods, started together and
/// carrying connections at once, each reach their own pod as the proxy's user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forward_dials_with_its_own_client_config() {
    let sim = admin_sim().await;
    let api = sim_client(&sim).await;
    let dir = folder("race-client", &sim, Some("admin-token"));
    write_config(&dir, &format!("{}{}", forward("redis", "demo", "pod/redis-0", "6379", 0), forward("hello", "default", "deployment/hello", "8000", 0)));
    let proxy = start(&dir).await;
    let redis = active(&proxy, "redis").await.local.expect("bound").port();
    let hello_status = active(&proxy, "hello").await;
    let hello = hello_status.local.expect("bound").port();
    let hello_pod = hello_status.pod.expect("a pod");
    // Eight connections held on each, opened at once.
    let opened = futures::future::join_all((0..16u16).map(|i| async move {
        let port = if i % 2 == 0 { redis } else { hello };
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        exchange(&mut socket, format!("connection {i}").as_bytes()).await;
        socket
    }))
    .await;
    let listed = hook(&api, "GET", "/_sim/portforward").await;
    let mut by_pod: BTreeMap<String, usize> = BTreeMap::new();
    for connection in listed["connections"].as_array().into_iter().flatten() {
        *by_pod.entry(format!("{}/{}", connection["namespace"].as_str().unwrap_or(""), connection["pod"].as_str().unwrap_or(""))).or_default() += 1;
    }
    assert_eq!(by_pod, BTreeMap::from([("demo/redis-0".to_owned(), 8), (format!("default/{hello_pod}"), 8)]), "{listed}");
    let stats = sim_stats(&api).await;
    assert_eq!(stats["portForwardsByUser"], serde_json::json!({"admin": 16}), "{stats}");
    drop(opened);
    no_port_forward_left(&api, "the held connections' port-forwards to close").await;
    proxy.shutdown().await;
}

/// kportal race 3: `ForwardWorker.Stop` could run twice (a reload removing a forward while the
/// manager stopped), closing a closed channel; kportal wrapped it in `sync.Once` and made
/// `Manager.Stop()` idempotent ("double-Stop no longer panics"). Here stopping is cancelling a
/// token: a reload removing a forward at the moment the proxy stops everything, then a second
/// stop and a reload after it, start nothing again and leave no port or port-forward open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_forward_twice_at_once_is_harmless() {
    let sim = admin_sim().await;
    let api = sim_client(&sim).await;
    let dir = folder("race-stop", &sim, Some("admin-token"));
    let (kept_port, removed_port) = (free_port(), free_port());
    let kept = forward("kept", "demo", "pod/redis-0", "6379", kept_port);
    write_config(&dir, &format!("{kept}{}", forward("removed", "demo", "service/web", "80", removed_port)));
    let proxy = start(&dir).await;
    active(&proxy, "kept").await;
    active(&proxy, "removed").await;
    let mut held = [TcpStream::connect(("127.0.0.1", kept_port)).await.unwrap(), TcpStream::connect(("127.0.0.1", removed_port)).await.unwrap()];
    for socket in &mut held {
        exchange(socket, b"held").await;
    }
    let app = proxy.app().clone();
    write_config(&dir, &kept);
    let (outcome, ()) = tokio::join!(app.live.reload(), app.forwards.stop_all());
    assert!(!matches!(outcome, Outcome::Unchanged), "{outcome:?}");
    // Stopped again, by the shutdown itself, and once more after it.
    proxy.shutdown().await;
    app.forwards.stop_all().await;
    for socket in &mut held {
        closed(socket, "a held connection to end with its forward").await;
    }
    // A reload after the shutdown starts nothing: refused whole.
    write_config(&dir, &format!("{kept}{}", forward("late", "demo", "service/web", "80", removed_port)));
    let outcome = reload(&app).await;
    assert!(matches!(&outcome, Outcome::Rejected(message) if message.contains("shutting down")), "{outcome:?}");
    assert!(names(&app).is_empty() && app.forwards.owners().is_empty(), "{:?}", app.forwards.owners());
    for port in [kept_port, removed_port] {
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "port {port} is closed");
    }
    no_port_forward_left(&api, "every port-forward to close after the stops").await;
}

/// kportal race 4: `Reload` stopped the health checker along with the old forwards, so after a
/// reload nothing noticed a dead tunnel (kportal: "`Reload` no longer kills the health
/// checker"). Here health is each tunnel's own keepalive plus the manager's watchdog; after a
/// reload to no forwards and back, a black-holed tunnel is still noticed, and a worker that
/// panics is contained, counted and restarted on its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_kill_the_health_checks() {
    let sim = admin_sim().await;
    let api = sim_client(&sim).await;
    let dir = folder("race-health", &sim, Some("admin-token"));
    let redis = format!("{}    keepaliveInterval: 0.3\n", forward("redis", "demo", "pod/redis-0", "6379", 0));
    write_config(&dir, &redis);
    let proxy = start(&dir).await;
    proxy.app().forwards.set_watchdog_timeout(Duration::from_millis(1500));
    active(&proxy, "redis").await;
    write_config(&dir, "");
    assert!(!matches!(reload(proxy.app()).await, Outcome::Rejected(_)));
    write_config(&dir, &redis);
    assert!(!matches!(reload(proxy.app()).await, Outcome::Rejected(_)));
    let port = active(&proxy, "redis").await.local.expect("bound").port();
    // The tunnel's health check still runs.
    let mut held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    exchange(&mut held, b"alive").await;
    hook(&api, "POST", "/_sim/portforward/blackhole?pod=redis-0").await;
    let status = status_until(&proxy, "redis", "Degraded: tunnel silent", |s| s.state == State::Degraded).await;
    assert_eq!(status.reason, Some(Reason::TunnelSilent), "{status:?}");
    closed(&mut held, "the silent tunnel's connection to close").await;
    // kube-sim holds a black-holed connection open, as the far side of a partition does
    // until its own timeout: that one it drops now.
    hook(&api, "POST", "/_sim/portforward/cut?scope=connections").await;
    // The watchdog still runs: a panicking worker is contained, counted and replaced.
    let since = status.since;
    proxy.app().forwards.inject_panic("redis");
    let status = status_until(&proxy, "redis", "the replaced worker Active", |s| s.state == State::Active && s.since > since).await;
    assert_eq!(status.local.map(|a| a.port()), Some(port), "the same port");
    echo(port, b"after the panic").await.unwrap();
    let metrics = proxy.app().metrics.render();
    assert!(metrics.contains("kubemux_task_panics_total{task=\"forward\"} 1"), "{metrics}");
    assert_eq!(proxy.app().forwards.owners(), BTreeMap::from([("redis".to_owned(), 1)]));
    proxy.shutdown().await;
    no_port_forward_left(&api, "every port-forward to close after the shutdown").await;
}

/// Prints the seed of a schedule that fails, to replay it with `KUBEMUX_FORWARD_SEED`.
struct SeedOnFailure(u64);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("forwards_races: the failing schedule's seed is {0}; replay it with KUBEMUX_FORWARD_SEED={0}", self.0);
        }
    }
}

/// The invariants after a step: the forwards running are `wanted`, each owned by exactly one
/// worker, and carry a connection (waiting for a Ready pod if they must).
async fn check_invariants(proxy: &Proxy, wanted: &[String], ports: &mut BTreeMap<String, u16>, at: &str) {
    assert_eq!(names(proxy.app()), wanted, "{at}: one worker per configured name");
    for name in wanted {
        // Bound first; a connection then makes a forward that saw a failure Active again.
        let port = status_until(proxy, name, &format!("{at}: {name} bound"), |s| s.local.is_some()).await.local.expect("bound").port();
        echo(port, at.as_bytes()).await.unwrap_or_else(|why| panic!("{at}: {name}: {why}"));
        active(proxy, name).await;
        ports.insert(name.clone(), port);
    }
    let owners = proxy.app().forwards.owners();
    assert_eq!(owners, wanted.iter().map(|n| (n.clone(), 1)).collect::<BTreeMap<_, _>>(), "{at}: one owner per forward's listener");
    for (name, port) in ports.iter() {
        echo(*port, at.as_bytes()).await.unwrap_or_else(|why| panic!("{at}: {name}: {why}"));
    }
}

/// Seeded schedules (`fastrand`) of reloads (forwards added, removed, changed, kept, none at
/// all), reloads refused for a taken port, pod restarts, upstream cuts and black holes,
/// watchdog ticks (a stalled worker replaced), connections, and a final stop racing a reload. After
/// every step the invariants of [`check_invariants`] hold, a removed forward's port is closed,
/// and a refused reload changed nothing; after the stop no port is open and kube-sim has no
/// port-forward left. `KUBEMUX_FORWARD_SEEDS` sets how many schedules (default 4),
/// `KUBEMUX_FORWARD_SEED` replays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_schedules_keep_one_worker_per_name_and_leave_nothing_behind() {
    let seeds: Vec<u64> = match std::env::var("KUBEMUX_FORWARD_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let count: u64 = std::env::var("KUBEMUX_FORWARD_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
            let base = fastrand::u64(..);
            (0..count).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let sim = admin_sim().await;
    let api = sim_client(&sim).await;
    let admin = {
        let mut config = kube::Config::new(sim.url().parse().unwrap());
        config.auth_info.token = Some("admin-token".to_owned().into());
        kube::Client::try_from(config).unwrap()
    };
    let targets = [("pod/redis-0", "6379"), ("deployment/api", "8080"), ("service/web", "p80"), ("app=api", "9090")];
    for seed in seeds {
        let _report = SeedOnFailure(seed);
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = folder(&format!("random-{seed}"), &sim, Some("admin-token"));
        write_config(&dir, "");
        let proxy = start(&dir).await;
        proxy.app().forwards.set_watchdog_timeout(Duration::from_millis(1500));
        let mut config = String::new();
        let mut wanted: Vec<String> = Vec::new();
        let mut ports: BTreeMap<String, u16> = BTreeMap::new();
        for step in 0..12 {
            let at = format!("seed {seed} step {step}");
            match rng.u8(0..7) {
                0 | 1 => {
                    // A reload: each of four names present or not, each with one of the targets.
                    let mut text = String::new();
                    let mut next = Vec::new();
                    for index in 0..4 {
                        if rng.bool() {
                            let (target, port) = targets[rng.usize(0..targets.len())];
                            text.push_str(&format!("{}    keepaliveInterval: 0.3\n", forward(&format!("f{index}"), "demo", target, port, 0)));
                            next.push(format!("f{index}"));
                        }
                    }
                    write_config(&dir, &text);
                    let outcome = reload(proxy.app()).await;
                    assert!(!matches!(outcome, Outcome::Rejected(_)), "{at}: {outcome:?}");
                    (config, wanted) = (text, next);
                    for (name, port) in std::mem::take(&mut ports) {
                        if !wanted.contains(&name) {
                            assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "{at}: removed {name}'s port {port} is closed");
                        } else {
                            ports.insert(name, port);
                        }
                    }
                }
                2 => {
                    // A reload adding a forward on a port another process holds: refused whole.
                    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let taken = squatter.local_addr().unwrap().port();
                    write_config(&dir, &format!("{config}{}", forward("taken", "demo", "pod/redis-0", "6379", taken)));
                    let outcome = reload(proxy.app()).await;
                    assert!(matches!(&outcome, Outcome::Rejected(message) if message.contains(&taken.to_string())), "{at}: {outcome:?}");
                    write_config(&dir, &config);
                }
                3 => {
                    // A pod of deployment/api restarted at once (no grace).
                    let pods = kubemux_testkit::sim::list(&admin, "/api/v1/namespaces/demo/pods").await;
                    let api_pods: Vec<&String> = pods.keys().map(|(_, name)| name).filter(|n| n.starts_with("api-")).collect();
                    if !api_pods.is_empty() {
                        hook(&api, "POST", &format!("/_sim/pods/demo/{}/restart", api_pods[rng.usize(0..api_pods.len())])).await;
                    }
                }
                4 | 5 => {
                    // An upstream failure under a held connection: cut, or black-holed (noticed by
                    // the keepalive). The connection ends; the next one works.
                    let Some((name, port)) = ports.iter().nth(rng.usize(0..ports.len().max(1))).map(|(n, p)| (n.clone(), *p)) else { continue };
                    let mut held = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    exchange(&mut held, at.as_bytes()).await;
                    let fault = if rng.bool() { "/_sim/portforward/cut?scope=connections" } else { "/_sim/portforward/blackhole" };
                    hook(&api, "POST", fault).await;
                    closed(&mut held, &format!("{at}: {name}'s connection to end after {fault}")).await;
                    // The far side of a black hole holds on until its own timeout; here, now.
                    hook(&api, "POST", "/_sim/portforward/cut?scope=connections").await;
                }
                _ => {
                    // A health tick that acts: a worker stops making progress and the watchdog
                    // replaces it on its listener.
                    let Some(name) = ports.keys().nth(rng.usize(0..ports.len().max(1))).cloned() else { continue };
                    let mut status = proxy.app().forwards.status(&name).expect("running");
                    let stalled_at = status.borrow().since;
                    proxy.app().forwards.inject_stall(&name);
                    kubemux_testkit::wait::changed_until(&mut status, Duration::from_secs(15), &format!("{at}: {name} replaced by the watchdog"), |s| s.state == State::Active && s.since > stalled_at)
                        .await;
                }
            }
            check_invariants(&proxy, &wanted, &mut ports, &at).await;
        }
        // The stop races a reload that changes everything; stop and shutdown both stop.
        let app = proxy.app().clone();
        write_config(&dir, &forward("last", "demo", "pod/redis-0", "6379", 0));
        let (outcome, ()) = tokio::join!(app.live.reload(), app.forwards.stop_all());
        proxy.shutdown().await;
        assert!(names(&app).is_empty(), "seed {seed}: {outcome:?} left {:?}", names(&app));
        assert!(app.forwards.owners().is_empty(), "seed {seed}: {:?}", app.forwards.owners());
        for (name, port) in &ports {
            assert!(TcpStream::connect(("127.0.0.1", *port)).await.is_err(), "seed {seed}: {name}'s port {port} is closed after the stop");
        }
        no_port_forward_left(&api, &format!("seed {seed}: every port-forward to close after the stop")).await;
    }
}
