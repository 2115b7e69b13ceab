//! `kubemux-bench-terminal`: terminal figures for `cargo xtask bench terminal`, measured in one
//! run against kube-sim's real processes: keystroke echo round-trip and stdout throughput, for a
//! direct exec on the simulator and for the same exec through the proxy, the `kubemux-proxy`
//! binary as its own process (its CPU from `/proc/PID/task/*/schedstat`). Prints tab-separated
//! `columns`, `row` and `method` lines; progress goes to stderr.

// Shared with `kubemux-bench-mux`, which also starts `kubectl proxy`.
#[allow(dead_code)]
mod procs;

use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_protocol::channel::{ChannelProtocol, Decoded, ERROR, STDIN, STDOUT, decode};
use procs::{Kubeconfig, Proc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ECHOES: usize = 500;
const THROUGHPUT_BYTES: usize = 64 * 1024 * 1024;
/// Throughput runs each way, alternating direct and proxied; the table has each one's median.
const THROUGHPUT_RUNS: usize = 5;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn exec(base: &str, query: &str) -> anyhow::Result<Ws> {
    let url = format!("{base}/api/v1/namespaces/default/pods/toolbox/exec?container=shell&{query}");
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("sec-websocket-protocol", ChannelProtocol::V5.name().parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(request).await.with_context(|| format!("exec at {base}"))?;
    Ok(ws)
}

/// The next data frame on a channel other than 3; `None` once the status arrives.
async fn next_output(ws: &mut Ws) -> anyhow::Result<Option<Vec<u8>>> {
    loop {
        let Message::Binary(data) = ws.next().await.context("the exec socket closed")?? else { continue };
        match decode(ChannelProtocol::V5, &data) {
            Ok(Decoded::Data { channel: ERROR, .. }) => return Ok(None),
            Ok(Decoded::Data { channel: STDOUT, payload }) => return Ok(Some(payload)),
            _ => {}
        }
    }
}

/// Milliseconds from a keystroke to its echo, `ECHOES` times, on a TTY running `cat`.
async fn echo_round_trips(base: &str) -> anyhow::Result<Vec<f64>> {
    let mut ws = exec(base, "command=cat&stdin=true&stdout=true&tty=true").await?;
    // The connected frame: an empty message on stdout.
    next_output(&mut ws).await?;
    let mut samples = Vec::with_capacity(ECHOES);
    for i in 0..ECHOES {
        let key = b'a' + (i % 26) as u8;
        let start = Instant::now();
        ws.send(Message::Binary(vec![STDIN, key].into())).await?;
        loop {
            let output = next_output(&mut ws).await?.context("cat ended")?;
            if output.contains(&key) {
                break;
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // Enter, then Ctrl-D at the start of a line: end of input for cat, which ends the session
    // so nothing is left behind.
    ws.send(Message::Binary(vec![STDIN, b'\r', 4].into())).await?;
    while next_output(&mut ws).await?.is_some() {}
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

/// Megabytes per second of stdout from `head -c N /dev/zero`.
async fn stdout_throughput(base: &str) -> anyhow::Result<f64> {
    let mut ws = exec(base, &format!("command=head&command=-c&command={THROUGHPUT_BYTES}&command=/dev/zero&stdout=true")).await?;
    let start = Instant::now();
    let mut received = 0;
    while let Some(output) = next_output(&mut ws).await? {
        received += output.len();
    }
    if received != THROUGHPUT_BYTES {
        bail!("received {received} bytes of {THROUGHPUT_BYTES}");
    }
    Ok(received as f64 / 1e6 / start.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await?;
    let config = Kubeconfig::write(&sim.url())?;
    let proxy = Proc::kubemux(&config.path).await?;
    let direct = sim.url().replace("http://", "ws://");
    let proxied = format!("ws://{}/clusters/sim", proxy.addr);
    eprintln!("bench-terminal: keystroke echo ({ECHOES} keys each)...");
    let direct_echo = echo_round_trips(&direct).await?;
    let proxied_echo = echo_round_trips(&proxied).await?;
    eprintln!("bench-terminal: stdout throughput ({THROUGHPUT_RUNS} runs of {} MiB each)...", THROUGHPUT_BYTES >> 20);
    let (mut direct_rates, mut proxied_rates, mut proxy_cpu) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..THROUGHPUT_RUNS {
        direct_rates.push(stdout_throughput(&direct).await?);
        let cpu = proxy.cpu_seconds()?;
        proxied_rates.push(stdout_throughput(&proxied).await?);
        proxy_cpu += proxy.cpu_seconds()? - cpu;
    }
    // Milliseconds of proxy CPU per MiB of stdout, over every proxied run (session setup and
    // teardown included).
    let cpu_per_mib = proxy_cpu * 1e3 / (THROUGHPUT_RUNS * (THROUGHPUT_BYTES >> 20)) as f64;
    direct_rates.sort_by(f64::total_cmp);
    proxied_rates.sort_by(f64::total_cmp);
    let (direct_rate, proxied_rate) = (percentile(&direct_rates, 0.5), percentile(&proxied_rates, 0.5));
    proxy.stop().await;
    tokio::time::timeout(Duration::from_secs(10), sim.shutdown()).await.ok();

    let met = |ok: bool| if ok { "met" } else { "not met" }.to_owned();
    let (direct_p50, proxied_p50) = (percentile(&direct_echo, 0.5), percentile(&proxied_echo, 0.5));
    let (direct_p99, proxied_p99) = (percentile(&direct_echo, 0.99), percentile(&proxied_echo, 0.99));
    let ratio = proxied_rate / direct_rate;
    println!("columns\tmeasure\tdirect exec on kube-sim\tthrough kubemux-proxy\tdifference\tgoal\tmet");
    for r in [
        vec![
            "keystroke echo p50 (ms)".into(),
            format!("{direct_p50:.3}"),
            format!("{proxied_p50:.3}"),
            format!("{:+.3} ms", proxied_p50 - direct_p50),
            "≤ +0.2 ms".into(),
            met(proxied_p50 - direct_p50 <= 0.2),
        ],
        vec!["keystroke echo p99 (ms)".into(), format!("{direct_p99:.3}"), format!("{proxied_p99:.3}"), format!("{:+.3} ms", proxied_p99 - direct_p99), String::new(), String::new()],
        vec!["stdout: proxy CPU per MiB (ms)".into(), "—".into(), format!("{cpu_per_mib:.2}"), String::new(), String::new(), String::new()],
        vec!["stdout throughput (MB/s)".into(), format!("{direct_rate:.1}"), format!("{proxied_rate:.1}"), format!("{:.0}% of direct", 100.0 * ratio), "≥ 95% of direct".into(), met(ratio >= 0.95)],
    ] {
        println!("row\t{}", r.join("\t"));
    }
    println!(
        "method\tOne run of `kubemux-bench-terminal` (release build) on a {}-core machine, all on loopback. Echo: a TTY exec of `cat` \
         on the demo pod `default/toolbox`; one key at a time, from the stdin frame sent to the echo received ({ECHOES} keys). \
         Throughput: a non-TTY exec of `head -c {} /dev/zero`, bytes of stdout over the time to the exit status, the median of {THROUGHPUT_RUNS} \
         runs each way, direct and proxied alternating; proxy CPU is the `kubemux-proxy` process's time on CPU across the proxied \
         runs, per MiB of stdout. The same measurements against kube-sim's exec endpoint directly (in the bench process) and \
         through the `kubemux-proxy` binary's `/clusters/sim/…/exec` (its own process), which negotiates v5 upstream and runs its \
         teardown at the end of each session.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        THROUGHPUT_BYTES
    );
    Ok(())
}
