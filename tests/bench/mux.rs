//! `kubemux-bench-mux`: the multiplexer's figures for `cargo xtask bench`, measured in one run
//! against kube-sim so that ratios, not absolute numbers on a noisy shared machine, carry the
//! meaning. Prints its table on stdout as tab-separated lines (`columns`, `row`, `method`) for
//! `cargo xtask bench proxy` to write into BENCHMARKS.md; progress goes to stderr.
//!
//! 1. Throughput: a burst of creates, counted by a direct watch on the simulator and by a
//!    subscription through the proxy.
//! 2. Added latency at a paced 5,000 events/s: each object carries its creation time; both
//!    consumers run at once and the proxy's percentiles are compared with the direct ones.
//! 3. Memory: the real `kubemux-proxy` binary, 1,000 connections with 10 subscriptions each;
//!    the growth of its resident set per subscription.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{AsyncBufReadExt, SinkExt, StreamExt};
use kube_sim::resources::{CONFIGMAPS, NAMESPACES};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_e2e::{ProxyProcess, kubeconfig, sim_client};
use kubemux_protocol::frames::SUBPROTOCOL;
use kubemux_proxy::ProxySettings;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BURST: usize = 20_000;
const PACED_RATE: u64 = 5_000;
const PACED_SECONDS: u64 = 4;
const CONNECTIONS: usize = 1_000;
const SUBS_PER_CONNECTION: usize = 10;

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

fn is_event(text: &str) -> bool {
    text.starts_with(r#"{"op":"event""#) || text.starts_with(r#"{"type":"ADDED""#)
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

async fn throughput(sim: &Sim, api: &kube::Client, mux_url: &str) -> anyhow::Result<(f64, f64)> {
    namespace(sim, "burst-direct");
    let path = "/api/v1/namespaces/burst-direct/configmaps";
    let mut lines = Box::pin(direct_watch(api, path, sim.state().store.current_rv()).await?);
    let start = Instant::now();
    for i in 0..BURST {
        create(sim, "burst-direct", format!("o-{i}"), false);
    }
    let mut seen = 0;
    while seen < BURST {
        let line = lines.next().await.context("direct watch ended")??;
        if is_event(&line) {
            seen += 1;
        }
    }
    let direct = BURST as f64 / start.elapsed().as_secs_f64();

    namespace(sim, "burst-proxy");
    let mut ws = proxy_watch(mux_url, "/api/v1/namespaces/burst-proxy/configmaps").await?;
    let start = Instant::now();
    for i in 0..BURST {
        create(sim, "burst-proxy", format!("o-{i}"), false);
    }
    let mut seen = 0;
    while seen < BURST {
        if let Message::Text(text) = ws.next().await.context("proxy closed")??
            && is_event(text.as_str())
        {
            seen += 1;
        }
    }
    let proxied = BURST as f64 / start.elapsed().as_secs_f64();
    Ok((direct, proxied))
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

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn memory(sim: &Sim) -> anyhow::Result<(u64, u64)> {
    for n in 0..SUBS_PER_CONNECTION {
        let ns = format!("mem-{n}");
        namespace(sim, &ns);
        for i in 0..5 {
            create(sim, &ns, format!("o-{i}"), false);
        }
    }
    let dir = std::env::temp_dir().join(format!("kubemux-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("kubeconfig");
    std::fs::write(&config_path, format!("apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {}\nusers:\n- name: sim\n  user: {{}}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\n", sim.url()))?;
    let binary = std::env::current_exe()?.parent().context("exe dir")?.join("kubemux-proxy");
    let mut child = tokio::process::Command::new(&binary)
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut first).await?;
    let addr = first.trim().rsplit('/').next().context("proxy address")?.to_owned();
    let pid = child.id().context("pid")?;
    let mux_url = format!("ws://{addr}/mux");
    // Warm up: one connection with every subscription, so shared upstream state is in the
    // baseline and the growth is per subscription.
    let mut warm = open_subscribed(&mux_url).await?;
    let before = rss_kib(pid)?;
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        connections.push(open_subscribed(&mux_url).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    warm.close(None).await.ok();
    drop(connections);
    child.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
    Ok((before, after))
}

async fn open_subscribed(mux_url: &str) -> anyhow::Result<Ws> {
    let mut request = mux_url.into_client_request()?;
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    for n in 0..SUBS_PER_CONNECTION {
        let watch = json!({"op": "watch", "id": format!("s{n}"), "cluster": "sim", "path": format!("/api/v1/namespaces/mem-{n}/configmaps")});
        ws.send(Message::Text(watch.to_string().into())).await?;
    }
    let mut synced = 0;
    while synced < SUBS_PER_CONNECTION {
        if let Message::Text(text) = ws.next().await.context("closed")?? {
            synced += usize::from(text.as_str().starts_with(r#"{"op":"synced""#));
        }
    }
    Ok(ws)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sim = Sim::start(SimConfig { seed: Seed::Empty, history: 100_000, ..SimConfig::default() }).await?;
    let api = sim_client(&sim).await;
    let proxy = ProxyProcess::start(ProxySettings { listen: "127.0.0.1:0".parse()?, ..ProxySettings::default() }, kubeconfig(&[("sim", &sim.url(), None)]));
    eprintln!("bench-mux: throughput ({BURST} events)...");
    let (direct_rate, proxy_rate) = throughput(&sim, &api, &proxy.mux_url()).await?;
    eprintln!("bench-mux: latency ({PACED_RATE} events/s for {PACED_SECONDS} s)...");
    let (direct, proxied) = latency(&sim, &api, &proxy.mux_url()).await?;
    drop(proxy);
    eprintln!("bench-mux: memory ({CONNECTIONS} connections x {SUBS_PER_CONNECTION} subscriptions)...");
    let (before, after) = memory(&sim).await?;
    let per_sub = (after.saturating_sub(before)) as f64 / (CONNECTIONS * SUBS_PER_CONNECTION) as f64;

    let (d50, d99, p50, p99) = (percentile(&direct, 0.5), percentile(&direct, 0.99), percentile(&proxied, 0.5), percentile(&proxied, 0.99));
    let rows = [
        vec![format!("events/s, burst of {BURST} creates"), format!("{direct_rate:.0}"), format!("{proxy_rate:.0}"), format!("{:.0}% of direct", 100.0 * proxy_rate / direct_rate), "≥ 50%".to_owned()],
        vec![format!("latency p50 at {PACED_RATE} events/s (ms)"), format!("{d50:.3}"), format!("{p50:.3}"), format!("+{:.3} ms", p50 - d50), String::new()],
        vec![format!("latency p99 at {PACED_RATE} events/s (ms)"), format!("{d99:.3}"), format!("{p99:.3}"), format!("+{:.3} ms", p99 - d99), "< 2 ms added".to_owned()],
        vec![format!("proxy RSS, {CONNECTIONS} connections × {SUBS_PER_CONNECTION} idle subscriptions"), String::new(), format!("{before} KiB → {after} KiB"), format!("{per_sub:.2} KiB per subscription"), "< 20 KiB".to_owned()],
    ];
    println!("columns\tmeasure\tdirect watch on kube-sim\tthrough kubemux-proxy\tratio or difference\ttarget");
    for row in rows {
        println!("row\t{}", row.join("\t"));
    }
    println!(
        "method\tOne run of `kubemux-bench-mux` (release build) on a {}-core machine, everything on loopback: kube-sim, the proxy and \
         the consumers share the cores, so compare the columns, not runs. Throughput: a burst of creates counted by a direct watch \
         on kube-sim and by a subscription through the proxy. Latency: objects created at a paced {PACED_RATE}/s carry their creation \
         time; both consumers run at once ({} direct and {} proxied samples). Memory: the `kubemux-proxy` binary's resident set \
         before and after {CONNECTIONS} connections open {SUBS_PER_CONNECTION} subscriptions each over {SUBS_PER_CONNECTION} \
         collections (one warm connection first, so shared upstream state is in the baseline).",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        direct.len(),
        proxied.len()
    );
    sim.shutdown().await;
    Ok(())
}
