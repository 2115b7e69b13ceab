//! `kubemux-bench-forward`: forward figures for `cargo xtask bench forward`, measured in one run
//! against kube-sim's pod echo servers: connect latency (a new local connection to its first
//! echoed byte) and echo throughput through a kubemux forward and through `kubectl
//! port-forward` to the same pod, and the time a kubemux forward takes to carry connections
//! again after its pod is restarted; and a burst (100 connections at once, then 10 parallel
//! transfers) through each, which weighs kubemux's one upstream stream per connection against
//! kubectl's connections pooled on one SPDY tunnel (kube-sim's `/_sim/stats` counts the
//! upgrades each needed). Prints tab-separated `columns`, `row` and `method` lines;
//! progress goes to stderr.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_proxy::config::FileSource;
use kubemux_proxy::forward::worker::State;
use kubemux_proxy::{Proxy, ProxySettings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CONNECTS: usize = 200;
const THROUGHPUT_BYTES: usize = 64 * 1024 * 1024;
const RESTARTS: usize = 10;
const BURST: usize = 100;
const TRANSFERS: usize = 10;
const TRANSFER_BYTES: usize = 8 * 1024 * 1024;


/// `BURST` connections opened at once, each echoing a few bytes: the milliseconds each took
/// (sorted) and the whole burst's.
async fn burst(port: u16) -> anyhow::Result<(Vec<f64>, f64)> {
    let start = Instant::now();
    let results = futures::future::join_all((0..BURST).map(|_| async move {
        let begun = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), echo_once(port)).await.context("no echo within 30 s")??;
        Ok::<_, anyhow::Error>(begun.elapsed().as_secs_f64() * 1e3)
    }))
    .await;
    let total = start.elapsed().as_secs_f64() * 1e3;
    let mut samples = results.into_iter().collect::<anyhow::Result<Vec<f64>>>()?;
    samples.sort_by(f64::total_cmp);
    Ok((samples, total))
}

/// `TRANSFERS` connections each echoing `TRANSFER_BYTES` at once: megabytes per second, all
/// together, both ways.
async fn parallel_transfers(port: u16) -> anyhow::Result<f64> {
    let start = Instant::now();
    let results = futures::future::join_all((0..TRANSFERS).map(|_| transfer(port, TRANSFER_BYTES))).await;
    for result in results {
        result?;
    }
    Ok(2.0 * (TRANSFERS * TRANSFER_BYTES) as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// kube-sim's port-forward upgrades so far.
async fn upgrades(client: &kube::Client) -> u64 {
    kubemux_testkit::sim::hook(client, "GET", "/_sim/stats").await["portForwardUpgradesTotal"].as_u64().unwrap_or_default()
}

/// Milliseconds from `connect` to the first echoed byte, `CONNECTS` times, sorted.
async fn connect_latencies(port: u16) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        let start = Instant::now();
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket.set_nodelay(true)?;
        socket.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut byte)).await.context("no echo within 10 s")??;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// Megabytes per second echoed on one connection: `THROUGHPUT_BYTES` out and back.
async fn throughput(port: u16) -> anyhow::Result<f64> {
    let start = Instant::now();
    transfer(port, THROUGHPUT_BYTES).await?;
    Ok(2.0 * THROUGHPUT_BYTES as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// `bytes` written on one connection and read back at once.
async fn transfer(port: u16, bytes: usize) -> anyhow::Result<()> {
    let socket = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut read, mut write) = socket.into_split();
    let send = async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..bytes / chunk.len() {
            write.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(write)
    };
    let receive = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut received = 0;
        while received < bytes {
            let n = read.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            received += n;
        }
        Ok::<_, std::io::Error>(received)
    };
    let (sent, received) = tokio::try_join!(send, receive)?;
    drop(sent);
    if received != bytes {
        bail!("echoed {received} bytes of {bytes}");
    }
    Ok(())
}

/// `kubectl port-forward` to the pod, and the local port it chose.
async fn kubectl_forward(kubeconfig: &std::path::Path) -> anyhow::Result<(tokio::process::Child, u16)> {
    let mut child = tokio::process::Command::new("kubectl")
        .args(["--kubeconfig", &kubeconfig.display().to_string(), "-n", "demo", "port-forward", "pod/redis-0", ":6379"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting kubectl (is it on PATH?)")?;
    let mut lines = BufReader::new(child.stdout.take().context("kubectl's stdout")?).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            // "Forwarding from 127.0.0.1:PORT -> 6379"
            if let Some(port) = line.strip_prefix("Forwarding from 127.0.0.1:").and_then(|rest| rest.split(' ').next()).and_then(|p| p.parse().ok()) {
                return Ok(port);
            }
        }
        bail!("kubectl port-forward ended without saying its port")
    })
    .await
    .context("kubectl port-forward did not start within 30 s")??;
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // No users: the simulator admits every request. kubectl sends no bearer token over plain
    // HTTP, so a simulator with users would refuse it (kube-sim's kubectl tests put an
    // authenticating proxy in front for that); both sides are measured as the same anonymous admin.
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await?;
    let dir = std::env::temp_dir().join(format!("kubemux-bench-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig_file = dir.join("sim.kubeconfig");
    // The simulator's own kubeconfig, the one kubectl is tested with.
    std::fs::write(&kubeconfig_file, sim.kubeconfig())?;
    let forward = |name: &str, target: &str, port: u16| format!("  - name: {name}\n    cluster: sim\n    namespace: demo\n    target: {target}\n    port: {port}\n    localPort: 0\n");
    let config = format!("clusters:\n  - name: sim\n    kubeconfig: sim.kubeconfig\nforwards:\n{}{}", forward("redis", "pod/redis-0", 6379), forward("api", "deployment/api", 8080));
    std::fs::write(dir.join("proxy.yaml"), config)?;
    let base = ProxySettings { listen: "127.0.0.1:0".parse()?, ..ProxySettings::default() };
    let proxy = Proxy::start_live(Box::new(FileSource { file: dir.join("proxy.yaml"), base, pinned: Box::new(|s| s) })).await?;
    let forwards = &proxy.app().forwards;
    let active = |name: &'static str| async move {
        let mut status = forwards.status(name).context("no such forward")?;
        let status = tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.state == State::Active)).await.context("not Active within 30 s")??.clone();
        status.local.map(|a| a.port()).context("not bound")
    };
    let ours = active("redis").await?;
    let (kubectl, theirs) = kubectl_forward(&kubeconfig_file).await?;

    eprintln!("bench-forward: connect latency ({CONNECTS} connections each)...");
    let our_connects = connect_latencies(ours).await?;
    let their_connects = connect_latencies(theirs).await?;
    eprintln!("bench-forward: echo throughput ({} MiB each way)...", THROUGHPUT_BYTES >> 20);
    let our_rate = throughput(ours).await?;
    let their_rate = throughput(theirs).await?;
    eprintln!("bench-forward: a burst of {BURST} connections, then {TRANSFERS} parallel transfers of {} MiB...", TRANSFER_BYTES >> 20);
    let client = {
        let config = kube::Config::new(sim.url().parse()?);
        kube::Client::try_from(config)?
    };
    let before = upgrades(&client).await;
    let (our_burst, our_burst_total) = burst(ours).await?;
    let our_transfers = parallel_transfers(ours).await?;
    let our_upgrades = upgrades(&client).await - before;
    let before = upgrades(&client).await;
    let (their_burst, their_burst_total) = burst(theirs).await?;
    let their_transfers = parallel_transfers(theirs).await?;
    let their_upgrades = upgrades(&client).await - before;
    drop(kubectl);

    eprintln!("bench-forward: recovery after {RESTARTS} pod restarts...");
    let api_port = active("api").await?;
    let mut recoveries = Vec::new();
    for _ in 0..RESTARTS {
        let pod = forwards.status("api").context("no forward")?.borrow().pod.clone().context("no pod")?;
        let start = Instant::now();
        kubemux_testkit::sim::hook(&client, "POST", &format!("/_sim/pods/demo/{pod}/restart")).await;
        // The first connection after the restart that echoes: the forward carries again.
        loop {
            if tokio::time::timeout(Duration::from_secs(30), echo_once(api_port)).await.is_ok_and(|r| r.is_ok()) {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the forward did not recover within 60 s");
            }
        }
        recoveries.push(start.elapsed().as_secs_f64() * 1e3);
        let mut status = forwards.status("api").context("no forward")?;
        tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.state == State::Active && s.pod.as_ref() != Some(&pod))).await.context("no new pod")??;
    }
    recoveries.sort_by(f64::total_cmp);
    proxy.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown()).await.ok();

    println!("columns\tmeasure\tkubectl port-forward\tkubemux forward\tratio");
    let row = |name: &str, theirs: f64, ours: f64| println!("row\t{name}\t{theirs:.2}\t{ours:.2}\t{:.2}×", ours / theirs);
    row("connect to first echoed byte p50 (ms)", percentile(&their_connects, 0.5), percentile(&our_connects, 0.5));
    row("connect to first echoed byte p99 (ms)", percentile(&their_connects, 0.99), percentile(&our_connects, 0.99));
    row("echo throughput, one connection (MB/s, both ways)", their_rate, our_rate);
    row(&format!("burst of {BURST} connections at once: each, p50 (ms)"), percentile(&their_burst, 0.5), percentile(&our_burst, 0.5));
    row(&format!("burst of {BURST} connections at once: each, p99 (ms)"), percentile(&their_burst, 0.99), percentile(&our_burst, 0.99));
    row(&format!("burst of {BURST} connections at once: all done (ms)"), their_burst_total, our_burst_total);
    row(&format!("{TRANSFERS} parallel transfers of {} MiB (MB/s, all, both ways)", TRANSFER_BYTES >> 20), their_transfers, our_transfers);
    println!("row\tupstream upgrades for the burst and the transfers\t{their_upgrades} (one SPDY tunnel, pooled)\t{our_upgrades} (one stream per connection)\t—");
    println!(
        "row\tfirst echoed connection after a pod restart, p50 / max (ms)\tnever (the forward ends with its pod)\t{:.1} / {:.1}\t—",
        percentile(&recoveries, 0.5),
        recoveries.last().copied().unwrap_or_default()
    );
    println!(
        "method\tOne run of `kubemux-bench-forward` (release build) on a {}-core machine, all on loopback, against one kube-sim. \
         kubectl 1.32's `port-forward pod/redis-0 :6379` (SPDY over its WebSocket tunnel) and a kubemux forward to the same pod \
         (the legacy channel WebSocket, one per connection) reach the same echo server. Connect: {CONNECTS} sequential connections, \
         from `connect` to the first byte echoed. Throughput: {} MiB written and read back at once on one connection. Recovery: \
         deployment/api's pod restarted {RESTARTS} times (deleted and replaced at once), from the restart to the first connection \
         through the forward that echoes; kubectl's forward of a pod ends when the pod does. Burst: {BURST} connections opened at \
         once, each echoing one byte, then {TRANSFERS} connections each echoing {} MiB at once; the upgrades are kube-sim's count of \
         port-forward connections opened meanwhile (`/_sim/stats` `portForwardUpgradesTotal`). Both clients use the simulator's own \
         kubeconfig, as its one anonymous admin (kubectl sends no bearer token over plain HTTP).",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        THROUGHPUT_BYTES >> 20,
        TRANSFER_BYTES >> 20
    );
    Ok(())
}

/// One connection's echo.
async fn echo_once(port: u16) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
    socket.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    socket.read_exact(&mut byte).await?;
    Ok(())
}
