//! `kubemux-bench-mux`: kubemux-proxy against `kubectl proxy` at kubectl proxy's own job, for
//! `cargo xtask bench proxy`, measured in one run against one kube-sim so that ratios, not
//! absolute numbers on a noisy shared machine, carry the meaning (issue 13). Both proxies run as
//! separate processes (their CPU from `/proc/PID/task/*/schedstat`, their resident set from
//! `/proc/PID/status`), and the same raw-socket client (`raw.rs`) reads kube-sim directly, each
//! proxy's HTTP watch and kubemux's WebSocket, parsing every line or frame and counting every
//! event. Prints its table on stdout as tab-separated lines (`columns`, `row`, `method`) for
//! `cargo xtask bench proxy` to write into BENCHMARKS.md; progress goes to stderr.
//!
//! The producer stays outside the timed part: kube-sim's watches are stalled
//! (`/_sim/watches/stall`) while the burst is created in process, and the clock and the CPU
//! counters start when the stall ends and every watch delivers its backlog at once.
//!
//! 1. One stream: a burst of creates through one watch; events/s and proxy CPU per event.
//! 2. Fan-out: N identical watches (N connections) of one collection; upstream watches opened
//!    (kube-sim's `watchRequests`) and proxy CPU per delivered event.
//! 3. A 10k-pod snapshot, cold and warm: first object, complete, proxy CPU and RSS growth.
//! 4. Memory per idle connection, each with one watch.
//! 5. Added latency at a paced 5,000 events/s (kubemux against a direct watch).

mod procs;
mod raw;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{AsyncBufReadExt, SinkExt, StreamExt};
use kube_sim::resources::{CONFIGMAPS, NAMESPACES, PODS};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{hook, sim_client};
use kubemux_protocol::frames::SUBPROTOCOL;
use procs::{Kubeconfig, Proc};
use raw::Watch;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BURST: usize = 20_000;
const FAN_OUT: [usize; 4] = [1, 10, 100, 500];
/// Events delivered in all per fan-out measurement (the burst is this divided by N, at most
/// `BURST`).
const FAN_OUT_DELIVERED: usize = 200_000;
const SNAPSHOT_PODS: usize = 10_000;
const POD_BYTES: usize = 2_800;
const LIST_PAGE: usize = 500;
const IDLE_CONNECTIONS: usize = 1_000;
const PACED_RATE: u64 = 5_000;
const PACED_SECONDS: u64 = 4;
/// How long kube-sim's watches hold back while a burst is created.
const STALL: Duration = Duration::from_millis(1_500);

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn create(sim: &Sim, namespace: &str, name: String, stamp: bool) {
    let mut annotations = json!({});
    if stamp {
        annotations["bench/sent-ns"] = json!(now_nanos().to_string());
    }
    let object = json!({"metadata": {"name": name, "annotations": annotations}, "data": {"payload": "x".repeat(300)}});
    sim.state().store.create(&CONFIGMAPS, namespace, object).expect("bench objects are valid");
}

fn namespace(sim: &Sim, name: &str) {
    sim.state().store.create(&NAMESPACES, "", json!({"metadata": {"name": name}})).expect("a fresh namespace");
}

/// A direct watch on the simulator: each line's object, as it arrives.
async fn direct_watch(api: &kube::Client, path: &str, rv: u64) -> anyhow::Result<impl futures::Stream<Item = std::io::Result<String>> + use<>> {
    let request = http::Request::get(format!("{path}?watch=true&resourceVersion={rv}")).body(Vec::new())?;
    Ok(api.request_stream(request).await?.lines())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A subscription through the proxy, waited on until `synced`.
async fn proxy_watch(mux_url: &str, path: &str) -> anyhow::Result<Ws> {
    let mut request = mux_url.into_client_request()?;
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let watch = json!({"op": "watch", "id": "bench", "cluster": "sim", "path": path});
    ws.send(Message::Text(watch.to_string().into())).await?;
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message?
            && text.as_str().starts_with(r#"{"op":"synced""#)
        {
            return Ok(ws);
        }
    }
    bail!("the proxy closed before synced")
}

fn sent_at(text: &str) -> Option<u128> {
    let value: Value = serde_json::from_str(text).ok()?;
    value["object"]["metadata"]["annotations"]["bench/sent-ns"].as_str()?.parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Who serves a watch: kube-sim itself, or one of the two proxies.
#[derive(Clone, Copy)]
enum Via<'a> {
    Direct(&'a str),
    Kubectl(&'a Proc),
    Kubemux(&'a Proc),
}

impl Via<'_> {
    fn proc(&self) -> Option<&Proc> {
        match self {
            Via::Direct(_) => None,
            Via::Kubectl(p) | Via::Kubemux(p) => Some(p),
        }
    }

    fn cpu(&self) -> anyhow::Result<f64> {
        self.proc().map_or(Ok(0.0), Proc::cpu_seconds)
    }

    fn rss(&self) -> anyhow::Result<u64> {
        self.proc().map_or(Ok(0), Proc::rss_kib)
    }

    /// A watch of `path` from `rv` on: an HTTP watch, or a kubemux subscription read up to
    /// `synced`.
    async fn watch(&self, path: &str, rv: u64) -> anyhow::Result<Watch> {
        match self {
            Via::Direct(addr) => Watch::http(addr, &format!("{path}?watch=true&resourceVersion={rv}")).await,
            Via::Kubectl(p) => Watch::http(&p.addr, &format!("{path}?watch=true&resourceVersion={rv}")).await,
            Via::Kubemux(p) => {
                let mut watch = Watch::mux(&p.addr, "bench", path).await?;
                watch.until_synced().await?;
                Ok(watch)
            }
        }
    }
}

/// kube-sim's watch requests served so far.
async fn watch_requests(api: &kube::Client) -> u64 {
    hook(api, "GET", "/_sim/stats").await["watchRequests"].as_u64().unwrap_or_default()
}

/// What one stalled burst measured.
struct Burst {
    /// Seconds from the first event any watch got to the last one.
    seconds: f64,
    /// Proxy CPU seconds while the backlog was delivered.
    cpu: f64,
}

/// Stalls kube-sim's watches, creates `count` objects in `ns`, and reads them all from every
/// watch at once when the stall ends.
async fn stalled_burst(sim: &Sim, api: &kube::Client, via: Via<'_>, ns: &str, count: usize, watches: Vec<Watch>) -> anyhow::Result<(Burst, Vec<Watch>)> {
    let until = Instant::now() + STALL;
    hook(api, "POST", &format!("/_sim/watches/stall?seconds={}", STALL.as_secs_f64())).await;
    for i in 0..count {
        create(sim, ns, format!("o-{i}"), false);
    }
    if Instant::now() + Duration::from_millis(100) > until {
        bail!("creating {count} objects took longer than the {STALL:?} stall");
    }
    let cpu_before = via.cpu()?;
    let tasks: Vec<_> = watches
        .into_iter()
        .map(|mut watch| {
            tokio::spawn(async move {
                let times = watch.events(count).await;
                (watch, times)
            })
        })
        .collect();
    let (mut first, mut last, mut watches) = (None::<Instant>, None::<Instant>, Vec::new());
    for task in tasks {
        let (watch, times) = task.await?;
        let (f, l) = times?;
        first = Some(first.map_or(f, |x| x.min(f)));
        last = Some(last.map_or(l, |x| x.max(l)));
        watches.push(watch);
    }
    let cpu = via.cpu()? - cpu_before;
    let (first, last) = (first.context("no watch")?, last.context("no watch")?);
    Ok((Burst { seconds: last.duration_since(first).as_secs_f64(), cpu }, watches))
}

/// One stream: `BURST` creates through one watch.
async fn one_stream(sim: &Sim, api: &kube::Client, via: Via<'_>, ns: &str) -> anyhow::Result<(f64, f64)> {
    namespace(sim, ns);
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let watch = via.watch(&path, sim.state().store.current_rv()).await?;
    let (burst, watches) = stalled_burst(sim, api, via, ns, BURST, vec![watch]).await?;
    drop(watches);
    Ok((BURST as f64 / burst.seconds, burst.cpu / BURST as f64))
}

/// Fan-out: `n` watches of one collection, each on its own connection. Upstream watches
/// opened, proxy CPU per delivered event, delivered events/s.
async fn fan_out(sim: &Sim, api: &kube::Client, via: Via<'_>, ns: &str, n: usize) -> anyhow::Result<(u64, f64, f64)> {
    namespace(sim, ns);
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let count = (FAN_OUT_DELIVERED / n).min(BURST);
    let requests_before = watch_requests(api).await;
    let rv = sim.state().store.current_rv();
    let mut watches = Vec::with_capacity(n);
    for _ in 0..n {
        watches.push(via.watch(&path, rv).await?);
    }
    let (burst, watches) = stalled_burst(sim, api, via, ns, count, watches).await?;
    let upstream = watch_requests(api).await - requests_before;
    drop(watches);
    let delivered = (count * n) as f64;
    Ok((upstream, burst.cpu / delivered, delivered / burst.seconds))
}

/// What reading the 10k-pod collection once cost.
struct Snapshot {
    first_ms: f64,
    complete_ms: f64,
    cpu: f64,
    rss_growth_kib: i64,
    /// Objects received (event frames before `synced`, or list items).
    objects: usize,
}

/// The pods of the snapshot: about `POD_BYTES` each as stored, no container ports (so
/// kube-sim's kubelet starts no listeners).
fn seed_pods(sim: &Sim, ns: &str) -> anyhow::Result<usize> {
    namespace(sim, ns);
    let pod = |name: String, padding: usize| {
        json!({
            "metadata": {"name": name, "labels": {"app": "bench", "tier": "web", "pod-template-hash": "5d8f7c9b6"},
                         "annotations": {"bench/padding": "p".repeat(padding)}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "registry.example/bench/app:1.0.0",
                      "env": [{"name": "MODE", "value": "bench"}], "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        })
    };
    let store = &sim.state().store;
    let probe = store.create(&PODS, ns, pod("pod-0".to_owned(), 0)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let bare = serde_json::to_vec(&*probe)?.len();
    let padding = POD_BYTES.saturating_sub(bare);
    store.delete(&PODS, ns, "pod-0").map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut size = 0;
    for i in 0..SNAPSHOT_PODS {
        let stored = store.create(&PODS, ns, pod(format!("pod-{i}"), padding)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if i == 0 {
            size = serde_json::to_vec(&*stored)?.len();
        }
    }
    Ok(size)
}

/// A paged list (`limit`) through an HTTP server at `addr`, its process measured if it has one.
async fn list_snapshot(via: Via<'_>, addr: &str, path: &str) -> anyhow::Result<Snapshot> {
    let (cpu_before, rss_before) = (via.cpu()?, via.rss()?);
    let start = Instant::now();
    let listed = raw::list(addr, path, LIST_PAGE).await?;
    if listed.items != SNAPSHOT_PODS {
        bail!("listed {} pods of {SNAPSHOT_PODS} in {} pages", listed.items, listed.pages);
    }
    Ok(Snapshot {
        first_ms: listed.first_byte.duration_since(start).as_secs_f64() * 1e3,
        complete_ms: listed.complete.duration_since(start).as_secs_f64() * 1e3,
        cpu: via.cpu()? - cpu_before,
        rss_growth_kib: via.rss()? as i64 - rss_before as i64,
        objects: listed.items,
    })
}

/// A kubemux subscriber of `path` on a new connection, up to `synced`; the watch is kept open.
async fn mux_snapshot(proxy: &Proc, path: &str) -> anyhow::Result<(Snapshot, Watch)> {
    let (cpu_before, rss_before) = (proxy.cpu_seconds()?, proxy.rss_kib()?);
    let start = Instant::now();
    let mut watch = Watch::mux(&proxy.addr, "snapshot", path).await?;
    let (first, events) = watch.until_synced().await?;
    let complete = Instant::now();
    // Fewer is a lost pod; more (a restarted list) is reported with the figures.
    if events < SNAPSHOT_PODS {
        bail!("the snapshot held {events} pods of {SNAPSHOT_PODS}");
    }
    let snapshot = Snapshot {
        first_ms: first.unwrap_or(complete).duration_since(start).as_secs_f64() * 1e3,
        complete_ms: complete.duration_since(start).as_secs_f64() * 1e3,
        cpu: proxy.cpu_seconds()? - cpu_before,
        rss_growth_kib: proxy.rss_kib()? as i64 - rss_before as i64,
        objects: events,
    };
    Ok((snapshot, watch))
}

/// `IDLE_CONNECTIONS` connections with one idle watch each of `path`: the proxy's RSS growth
/// per connection, KiB (one connection first, so shared state is in the baseline).
async fn idle_connections(via: Via<'_>, path: &str, rv: u64) -> anyhow::Result<(u64, u64, f64)> {
    let warm = via.watch(path, rv).await?;
    let before = via.rss()?;
    let mut watches = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        watches.push(via.watch(path, rv).await?);
    }
    // Let the proxy's side of the last connections settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = via.rss()?;
    drop(watches);
    drop(warm);
    Ok((before, after, after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64))
}

/// One snapshot row: measure, direct, kubectl, kubemux, and the goal as the largest
/// kubemux ÷ kubectl ratio.
type SnapshotMeasure = (&'static str, Option<f64>, f64, f64, Option<f64>);

/// A cell for `kubemux ÷ kubectl`.
fn ratio(kubemux: f64, kubectl: f64) -> String {
    format!("{:.2}×", kubemux / kubectl)
}

fn met(ok: bool) -> String {
    if ok { "met" } else { "not met" }.to_owned()
}

fn micros(seconds: f64) -> String {
    format!("{:.2}", seconds * 1e6)
}

async fn latency(sim: &Sim, api: &kube::Client, mux_url: &str) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    namespace(sim, "paced");
    let path = "/api/v1/namespaces/paced/configmaps";
    let total = (PACED_RATE * PACED_SECONDS) as usize;
    let mut lines = Box::pin(direct_watch(api, path, sim.state().store.current_rv()).await?);
    let mut ws = proxy_watch(mux_url, path).await?;
    let direct = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        while latencies.len() < total {
            let Some(Ok(line)) = lines.next().await else { break };
            if let Some(sent) = sent_at(&line) {
                latencies.push((now_nanos().saturating_sub(sent)) as f64 / 1e6);
            }
        }
        latencies
    });
    let proxied = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        while latencies.len() < total {
            let Some(Ok(message)) = ws.next().await else { break };
            if let Message::Text(text) = message
                && let Some(sent) = sent_at(text.as_str())
            {
                latencies.push((now_nanos().saturating_sub(sent)) as f64 / 1e6);
            }
        }
        latencies
    });
    // 5 objects every millisecond.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let per_tick = (PACED_RATE / 1000) as usize;
    for i in 0..total / per_tick {
        tick.tick().await;
        for j in 0..per_tick {
            create(sim, "paced", format!("p-{i}-{j}"), true);
        }
    }
    let mut direct = tokio::time::timeout(Duration::from_secs(30), direct).await??;
    let mut proxied = tokio::time::timeout(Duration::from_secs(30), proxied).await??;
    direct.sort_by(f64::total_cmp);
    proxied.sort_by(f64::total_cmp);
    Ok((direct, proxied))
}

/// Rows as they are measured, on stderr, for whoever watches a run (stdout gets the table at the end).
fn progress(rows: &[Vec<String>]) {
    for cells in rows {
        eprintln!("bench-mux:   {}", cells.join(" | "));
    }
}

fn row(cells: &[String]) {
    println!("row\t{}", cells.join("\t"));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, history: 100_000, ..SimConfig::default() }).await?;
    let api = sim_client(&sim).await;
    let sim_addr = sim.addr().to_string();
    let config = Kubeconfig::write(&sim.url())?;
    let kubectl = Proc::kubectl(&config.path).await?;
    let kubemux = Proc::kubemux(&config.path).await?;
    let (direct, via_kubectl, via_kubemux) = (Via::Direct(&sim_addr), Via::Kubectl(&kubectl), Via::Kubemux(&kubemux));
    let mut rows: Vec<Vec<String>> = Vec::new();

    eprintln!("bench-mux: one stream ({BURST} events)...");
    let (direct_rate, _) = one_stream(&sim, &api, direct, "one-direct").await?;
    let (kubectl_rate, kubectl_cpu) = one_stream(&sim, &api, via_kubectl, "one-kubectl").await?;
    let (kubemux_rate, kubemux_cpu) = one_stream(&sim, &api, via_kubemux, "one-kubemux").await?;
    rows.push(vec![
        format!("one stream: events/s, burst of {BURST} creates"),
        format!("{direct_rate:.0}"),
        format!("{kubectl_rate:.0}"),
        format!("{kubemux_rate:.0}"),
        ratio(kubemux_rate, kubectl_rate),
        "≥ 1.2×".to_owned(),
        met(kubemux_rate >= 1.2 * kubectl_rate),
    ]);
    rows.push(vec![
        "one stream: proxy CPU per event (µs)".to_owned(),
        "—".to_owned(),
        micros(kubectl_cpu),
        micros(kubemux_cpu),
        ratio(kubemux_cpu, kubectl_cpu),
        "≤ 0.8×".to_owned(),
        met(kubemux_cpu <= 0.8 * kubectl_cpu),
    ]);

    progress(&rows);
    for n in FAN_OUT {
        eprintln!("bench-mux: fan-out, {n} watches...");
        let (kubectl_upstream, kubectl_cpu, kubectl_rate) = fan_out(&sim, &api, via_kubectl, &format!("fan-kubectl-{n}"), n).await?;
        let (kubemux_upstream, kubemux_cpu, kubemux_rate) = fan_out(&sim, &api, via_kubemux, &format!("fan-kubemux-{n}"), n).await?;
        let last = n == FAN_OUT[FAN_OUT.len() - 1];
        rows.push(vec![
            format!("fan-out, {n} identical watches: upstream watches opened"),
            n.to_string(),
            kubectl_upstream.to_string(),
            kubemux_upstream.to_string(),
            String::new(),
            if last { "1".to_owned() } else { String::new() },
            if last { met(kubemux_upstream == 1) } else { String::new() },
        ]);
        rows.push(vec![
            format!("fan-out, {n} watches: proxy CPU per delivered event (µs); delivered events/s"),
            "—".to_owned(),
            format!("{}; {kubectl_rate:.0}", micros(kubectl_cpu)),
            format!("{}; {kubemux_rate:.0}", micros(kubemux_cpu)),
            ratio(kubemux_cpu, kubectl_cpu),
            if last { "≤ 0.2×".to_owned() } else { String::new() },
            if last { met(kubemux_cpu <= 0.2 * kubectl_cpu) } else { String::new() },
        ]);
    }

    progress(&rows[2..]);
    // Fresh processes for the snapshot and for memory, so that neither reuses what an earlier
    // part left resident.
    kubectl.stop().await;
    kubemux.stop().await;
    let (kubectl, kubemux) = (Proc::kubectl(&config.path).await?, Proc::kubemux(&config.path).await?);
    let via_kubectl = Via::Kubectl(&kubectl);
    eprintln!("bench-mux: snapshot ({SNAPSHOT_PODS} pods)...");
    let pod_bytes = seed_pods(&sim, "snap")?;
    let pods = "/api/v1/namespaces/snap/pods";
    let direct_list = list_snapshot(direct, &sim_addr, pods).await?;
    let kubectl_cold = list_snapshot(via_kubectl, &kubectl.addr, pods).await?;
    let kubectl_warm = list_snapshot(via_kubectl, &kubectl.addr, pods).await?;
    let (kubemux_cold, first) = mux_snapshot(&kubemux, pods).await?;
    let (kubemux_warm, second) = mux_snapshot(&kubemux, pods).await?;
    drop((first, second));
    for (label, kubectl_snap, kubemux_snap) in [("cold", &kubectl_cold, &kubemux_cold), ("warm", &kubectl_warm, &kubemux_warm)] {
        let measures: [SnapshotMeasure; 3] = [
            ("first object (ms)", Some(direct_list.first_ms), kubectl_snap.first_ms, kubemux_snap.first_ms, Some(1.0)),
            ("complete (ms)", Some(direct_list.complete_ms), kubectl_snap.complete_ms, kubemux_snap.complete_ms, None),
            ("proxy CPU (ms)", None, kubectl_snap.cpu * 1e3, kubemux_snap.cpu * 1e3, Some(3.0)),
        ];
        for (measure, direct_value, kubectl_value, kubemux_value, goal) in measures {
            rows.push(vec![
                format!("{SNAPSHOT_PODS}-pod snapshot, {label}: {measure}"),
                direct_value.map_or_else(|| "—".to_owned(), |v| format!("{v:.1}")),
                format!("{kubectl_value:.1}"),
                format!("{kubemux_value:.1}"),
                ratio(kubemux_value, kubectl_value),
                goal.map_or_else(String::new, |g| format!("≤ {g}×")),
                goal.map_or_else(String::new, |g| met(kubemux_value <= g * kubectl_value)),
            ]);
        }
        rows.push(vec![
            format!("{SNAPSHOT_PODS}-pod snapshot, {label}: proxy RSS growth (KiB); objects received"),
            format!("—; {}", direct_list.objects),
            format!("{}; {}", kubectl_snap.rss_growth_kib, kubectl_snap.objects),
            format!("{}; {}", kubemux_snap.rss_growth_kib, kubemux_snap.objects),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }

    kubectl.stop().await;
    kubemux.stop().await;
    let (kubectl, kubemux) = (Proc::kubectl(&config.path).await?, Proc::kubemux(&config.path).await?);
    let (via_kubectl, via_kubemux) = (Via::Kubectl(&kubectl), Via::Kubemux(&kubemux));
    eprintln!("bench-mux: memory ({IDLE_CONNECTIONS} idle connections)...");
    namespace(&sim, "idle");
    for i in 0..5 {
        create(&sim, "idle", format!("o-{i}"), false);
    }
    let idle = "/api/v1/namespaces/idle/configmaps";
    let rv = sim.state().store.current_rv();
    let (kubectl_before, kubectl_after, kubectl_per) = idle_connections(via_kubectl, idle, rv).await?;
    let (kubemux_before, kubemux_after, kubemux_per) = idle_connections(via_kubemux, idle, rv).await?;
    rows.push(vec![
        format!("memory per idle connection with one watch (KiB), {IDLE_CONNECTIONS} connections"),
        "—".to_owned(),
        format!("{kubectl_per:.1} ({kubectl_before} → {kubectl_after} KiB)"),
        format!("{kubemux_per:.1} ({kubemux_before} → {kubemux_after} KiB)"),
        ratio(kubemux_per, kubectl_per),
        "≤ 32 KiB".to_owned(),
        met(kubemux_per <= 32.0),
    ]);

    eprintln!("bench-mux: latency ({PACED_RATE} events/s for {PACED_SECONDS} s)...");
    let (direct_latency, proxied) = latency(&sim, &api, &format!("ws://{}/mux", kubemux.addr)).await?;
    let (d50, d99, p50, p99) = (percentile(&direct_latency, 0.5), percentile(&direct_latency, 0.99), percentile(&proxied, 0.5), percentile(&proxied, 0.99));
    rows.push(vec![format!("latency p50 at {PACED_RATE} events/s (ms)"), format!("{d50:.3}"), "—".to_owned(), format!("{p50:.3}"), format!("+{:.3} ms", p50 - d50), String::new(), String::new()]);
    rows.push(vec![
        format!("latency p99 at {PACED_RATE} events/s (ms)"),
        format!("{d99:.3}"),
        "—".to_owned(),
        format!("{p99:.3}"),
        format!("+{:.3} ms", p99 - d99),
        "< 2 ms added".to_owned(),
        met(p99 - d99 < 2.0),
    ]);

    println!("{}", ["columns", "measure", "direct on kube-sim", "kubectl proxy", "kubemux-proxy", "kubemux ÷ kubectl proxy", "goal", "met"].join("\t"));
    for cells in &rows {
        row(cells);
    }
    println!(
        "method\tOne run of `kubemux-bench-mux` (release build) on a {cores}-core machine, everything on loopback: kube-sim (in the bench \
         process), `kubectl proxy` ({kubectl_version}) and the `kubemux-proxy` binary (each its own process) and the client share the \
         cores, so compare the columns, not runs. One raw-socket client for all three columns (`tests/bench/raw.rs`): HTTP/1.1 watches \
         (chunked lines) from kube-sim and `kubectl proxy`, a kubemux.v1 WebSocket (one connection per watch) from kubemux; it parses \
         every line or frame whole with serde_json and counts every event. The producer is outside the timed part: kube-sim's watches \
         are stalled (`/_sim/watches/stall`) while the objects (ConfigMaps of about 0.5 KB) are created in process; the clock runs from \
         the first event any watch gets to the last. Proxy CPU: the proxy process's threads' time on CPU \
         (`/proc/PID/task/*/schedstat`, nanoseconds) across the delivery. Fan-out: N connections each with one watch of the same \
         collection, {FAN_OUT_DELIVERED} events delivered in all (a burst of {FAN_OUT_DELIVERED}/N, at most {BURST}); upstream watches \
         are kube-sim's `watchRequests` (`/_sim/stats`) during the measurement. Snapshot: {SNAPSHOT_PODS} pods of {pod_bytes} bytes; \
         kube-sim and `kubectl proxy` are read as kubectl pages a list (limit={LIST_PAGE}, continue tokens, one kept-alive \
         connection), first object = the first byte of the first page's body; kubemux's cold snapshot is the collection's first \
         subscriber, warm a second subscriber on a new connection while the first stays; `kubectl proxy` has no cache, so its warm \
         is a second list. RSS growth is `VmRSS` after minus before. The snapshot and the memory parts each start both proxies afresh. Memory: {IDLE_CONNECTIONS} connections each with one watch \
         of a 5-object collection after one warm connection; growth of `VmRSS` per connection. Latency: objects created at a \
         paced {PACED_RATE}/s carry their creation time, a kube-rs direct watch and a tungstenite subscription through kubemux read \
         them at once ({} and {} samples).",
        direct_latency.len(),
        proxied.len(),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        kubectl_version = kubectl_version().await,
    );
    kubectl.stop().await;
    kubemux.stop().await;
    drop(config);
    sim.shutdown().await;
    Ok(())
}

async fn kubectl_version() -> String {
    let output = tokio::process::Command::new("kubectl").args(["version", "--client"]).output().await.ok();
    output.and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(|l| l.trim_start_matches("Client Version: ").to_owned())).unwrap_or_else(|| "version unknown".to_owned())
}
