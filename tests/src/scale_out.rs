//! The scale-out scenario (issue 15, DESIGN.md "Scaling out"): three `kubemux-proxy` processes
//! behind a real haproxy (`deploy/haproxy/haproxy.cfg.example`, rendered with this run's ports,
//! health-checking `/readyz`), 30 clients of the client core with three subscriptions each, and
//! kube-sim churning. Replicas are SIGKILLed one after another and restarted on their port, then
//! all of them are restarted in turn with SIGTERM (the drain: `/readyz` 503, then 1001), first
//! with churn on, then with it stopped.
//!
//! [`Scenario::run`] returns a [`Report`]: the figures (resumes without a reset, upstream
//! requests per restart, kill → `synced` times, who saw 1001) and [`Report::problems`], what
//! broke a promise: a cache unequal to the simulator's list, an event out of version order, a
//! duplicate without a `reset`, any `reset`, a client that saw no 1001 during a rolling restart.
//! `tests/tests/scale_out.rs` asserts there are none; `cargo xtask scale-out` (the
//! `kubemux-scale-out` binary) prints the figures.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube_sim::{Seed, Sim, SimConfig};
use kubemux_testkit::client::{NativeClient, View, fast_config, wait_for_all};
use kubemux_testkit::http::{metric, try_get};
use kubemux_testkit::wait::try_poll;
use kubemux_testkit::{KubeconfigFile, announced_addr, hook, kubeconfig, list, sim_client};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Each client's subscriptions: (id, collection). All three change under churn: pods are
/// modified, restarted and replaced, events recorded and pruned, ConfigMaps modified.
pub const SUBSCRIPTIONS: [(&str, &str); 3] = [("pods", "/api/v1/pods"), ("events", "/api/v1/events"), ("configmaps", "/api/v1/configmaps")];

const IDS: [&str; 3] = [SUBSCRIPTIONS[0].0, SUBSCRIPTIONS[1].0, SUBSCRIPTIONS[2].0];

/// The haproxy configuration the scenario renders.
pub const HAPROXY_EXAMPLE: &str = include_str!("../../deploy/haproxy/haproxy.cfg.example");

/// How long one step (a recovery, a replica coming up) may take.
const STEP: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The `kubemux-proxy` binary.
    pub proxy: PathBuf,
    /// The `haproxy` binary.
    pub haproxy: PathBuf,
    /// Clients, each with [`SUBSCRIPTIONS`].
    pub clients: usize,
    /// Changes per second while churning.
    pub churn_per_second: f64,
    /// SIGKILLs while churning, then while quiet (each followed by one rolling restart).
    pub kills: (usize, usize),
    /// Each replica's `--drain-period`, seconds.
    pub drain_seconds: u64,
    /// Let the replicas and haproxy log to this process's stderr (warnings and up).
    pub show_logs: bool,
}

impl Scenario {
    /// The scenario: 30 clients, 6 kills and a rolling restart under churn, 3 kills and
    /// a rolling restart quiet.
    pub fn new(proxy: PathBuf, haproxy: PathBuf) -> Scenario {
        Scenario { proxy, haproxy, clients: 30, churn_per_second: 40.0, kills: (6, 3), drain_seconds: 1, show_logs: false }
    }

    /// Runs it.
    pub async fn run(&self) -> anyhow::Result<Report> {
        let started = Instant::now();
        let sim = Sim::start(SimConfig { seed: Seed::Demo, ..SimConfig::default() }).await.context("starting kube-sim")?;
        let api = sim_client(&sim).await;
        let kubeconfig = KubeconfigFile::new(&kubeconfig(&[("sim", &sim.url(), None)]));
        let ports = free_ports(5)?;
        let (front, stats) = (ports[0], ports[1]);
        let mut replicas: Vec<Replica> = ports[2..].iter().map(|port| Replica { port: *port, child: None }).collect();
        for replica in &mut replicas {
            replica.start(self, kubeconfig.path()).await?;
        }
        let config_dir = tempfile::tempdir()?;
        let config = config_dir.path().join("haproxy.cfg");
        std::fs::write(&config, render(HAPROXY_EXAMPLE, front, stats, &replicas.iter().map(|r| r.port).collect::<Vec<_>>())?)?;
        let output = || if self.show_logs { Stdio::inherit() } else { Stdio::null() };
        let _haproxy = Command::new(&self.haproxy).arg("-f").arg(&config).arg("-db").stdout(output()).stderr(output()).kill_on_drop(true).spawn().context("starting haproxy")?;
        let mut run = Run { scenario: self, api, stats_url: format!("http://127.0.0.1:{stats}/stats;csv"), replicas, kubeconfig, clients: Vec::new(), report: Report::default() };
        for index in 0..run.replicas.len() {
            run.up_in_haproxy(index).await?;
        }

        let url = format!("ws://127.0.0.1:{front}/mux");
        for n in 0..self.clients {
            let client = NativeClient::connect(&url, fast_config(1000 + n as u64));
            for (id, path) in SUBSCRIPTIONS {
                client.watch(id, "sim", path, None).await.map_err(anyhow::Error::msg)?;
            }
            run.clients.push(client);
        }
        run.settled("every client's first snapshots").await?;

        hook(&run.api, "POST", &format!("/_sim/churn?perSecond={}", self.churn_per_second)).await;
        for _ in 0..self.kills.0 {
            run.restart(Phase::Churning, Kind::Kill, None).await?;
        }
        run.rolling(Phase::Churning).await?;
        hook(&run.api, "POST", "/_sim/churn?perSecond=0").await;
        for _ in 0..self.kills.1 {
            run.restart(Phase::Quiet, Kind::Kill, None).await?;
        }
        run.rolling(Phase::Quiet).await?;
        run.finish().await?;
        run.report.elapsed = started.elapsed();
        Ok(run.report)
    }
}

/// Whether churn was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The simulator changing objects.
    Churning,
    /// Nothing changing.
    Quiet,
}

/// How a replica was restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL: connections end abruptly.
    Kill,
    /// SIGTERM, in a rolling restart: the drain, then 1001.
    Term,
}

/// One replica restart.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Churning or quiet.
    pub phase: Phase,
    /// SIGKILL or SIGTERM.
    pub kind: Kind,
    /// Which replica (0–2).
    pub replica: usize,
    /// Clients it was serving.
    pub affected: usize,
    /// Per affected client: the signal → its connection's close, and the signal → every
    /// subscription `synced` again on another replica.
    pub recoveries: Vec<(Duration, Duration)>,
    /// Of the affected clients, how many saw a close frame with 1001.
    pub saw_1001: usize,
    /// List and watch requests the simulator received from the signal until every client
    /// was synced again and the replica back up.
    pub upstream_requests: u64,
}

/// What a run showed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every restart, in order.
    pub restarts: Vec<Restart>,
    /// Clients.
    pub clients: usize,
    /// Resumes (a `watch` re-sent with a resume point), over all clients.
    pub resumes: usize,
    /// `reset`s, over all clients.
    pub resets: usize,
    /// `synced` frames, over all clients.
    pub synced: usize,
    /// How the replicas answered resumes (`kubemux_resumes_total`), summed over every replica
    /// process (each read just before it was stopped, and at the end).
    pub outcomes: BTreeMap<String, f64>,
    /// At the end, over all caches: objects the simulator has and a cache lacks, objects a cache
    /// has that the simulator does not, and objects at another version.
    pub lost: usize,
    /// See `lost`.
    pub phantom: usize,
    /// See `lost`.
    pub stale: usize,
    /// Live events out of version order: (client, subscription, version, the one before).
    pub out_of_order: Vec<(usize, String, String, u64)>,
    /// Live events received twice without a `reset`: (client, subscription, object, version).
    pub duplicates: Vec<(usize, String, String, String)>,
    /// Per rolling restart (churning, quiet): the clients that saw no 1001 during it.
    pub missing_1001: Vec<(Phase, Vec<usize>)>,
    /// How long the run took.
    pub elapsed: Duration,
}

const OUTCOMES: [&str; 5] = ["replay", "inventory", "ahead", "catch_up", "reset"];

impl Report {
    /// Every broken promise, described; empty when the run kept them all.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.lost + self.phantom + self.stale > 0 {
            problems.push(format!("caches differ from the simulator's lists: {} lost, {} phantom, {} stale", self.lost, self.phantom, self.stale));
        }
        if !self.out_of_order.is_empty() {
            problems.push(format!("{} events out of version order, e.g. {:?}", self.out_of_order.len(), &self.out_of_order[..self.out_of_order.len().min(5)]));
        }
        if !self.duplicates.is_empty() {
            problems.push(format!("{} duplicate events without a reset, e.g. {:?}", self.duplicates.len(), &self.duplicates[..self.duplicates.len().min(5)]));
        }
        if self.resets > 0 {
            problems.push(format!("{} resets (none expected on any resume)", self.resets));
        }
        for (phase, missing) in &self.missing_1001 {
            if !missing.is_empty() {
                problems.push(format!("{} clients saw no 1001 during the {phase:?} rolling restart: {missing:?}", missing.len()));
            }
        }
        problems
    }

    fn recoveries(&self, kind: Kind, phase: Option<Phase>) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.restarts.iter().filter(|r| r.kind == kind && phase.is_none_or(|p| r.phase == p)).flat_map(|r| r.recoveries.iter().map(|(_, synced)| *synced)).collect();
        all.sort();
        all
    }
}

fn percentile(sorted: &[Duration], q: f64) -> String {
    if sorted.is_empty() {
        return "–".to_owned();
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    format!("{:.0} ms", sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kills = self.restarts.iter().filter(|r| r.kind == Kind::Kill).count();
        let terms = self.restarts.len() - kills;
        writeln!(f, "{} clients × {} subscriptions, 3 replicas behind haproxy; {kills} SIGKILLs and {terms} SIGTERMs in {:.1} s", self.clients, SUBSCRIPTIONS.len(), self.elapsed.as_secs_f64())?;
        let served = self.resumes.saturating_sub(self.resets);
        let share = if self.resumes == 0 { 100.0 } else { served as f64 * 100.0 / self.resumes as f64 };
        writeln!(f, "resumes without a reset: {served} of {} ({share:.1} %); synced frames: {}", self.resumes, self.synced)?;
        let outcomes: Vec<String> = OUTCOMES.iter().map(|o| format!("{o} {}", self.outcomes.get(*o).copied().unwrap_or(0.0))).collect();
        writeln!(f, "answered by the replicas (kubemux_resumes_total): {}", outcomes.join(", "))?;
        writeln!(
            f,
            "caches at the end: {} lost, {} phantom, {} stale; out of order: {}; duplicates without reset: {}",
            self.lost,
            self.phantom,
            self.stale,
            self.out_of_order.len(),
            self.duplicates.len()
        )?;
        for (kind, label) in [(Kind::Kill, "SIGKILL → every subscription synced"), (Kind::Term, "SIGTERM → every subscription synced (includes the drain period)")] {
            for phase in [Phase::Churning, Phase::Quiet] {
                let sorted = self.recoveries(kind, Some(phase));
                writeln!(f, "{label}, {phase:?}: p50 {}, p99 {}, max {} ({} recoveries)", percentile(&sorted, 0.5), percentile(&sorted, 0.99), percentile(&sorted, 1.0), sorted.len())?;
            }
        }
        let mut after_close: Vec<Duration> = self.restarts.iter().filter(|r| r.kind == Kind::Term).flat_map(|r| r.recoveries.iter().map(|(close, synced)| synced.saturating_sub(*close))).collect();
        after_close.sort();
        writeln!(f, "1001 close → every subscription synced: p50 {}, p99 {}", percentile(&after_close, 0.5), percentile(&after_close, 0.99))?;
        for phase in [Phase::Churning, Phase::Quiet] {
            let (affected, saw): (usize, usize) = self.restarts.iter().filter(|r| r.kind == Kind::Term && r.phase == phase).fold((0, 0), |(a, s), r| (a + r.affected, s + r.saw_1001));
            let missing = self.missing_1001.iter().find(|(p, _)| *p == phase).map_or(0, |(_, m)| m.len());
            writeln!(f, "rolling restart, {phase:?}: {saw} of {affected} closes were 1001; {} of {} clients saw 1001", self.clients - missing, self.clients)?;
        }
        writeln!(f, "upstream requests (list + watch) per restart:")?;
        for r in &self.restarts {
            writeln!(f, "  {:?} {:?} replica {}: {} clients moved, {} requests", r.phase, r.kind, r.replica + 1, r.affected, r.upstream_requests)?;
        }
        Ok(())
    }
}

/// `haproxy` on PATH or where Debian puts it.
pub fn find_haproxy() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>()).map(|dir| dir.join("haproxy"));
    on_path.chain([PathBuf::from("/usr/sbin/haproxy")]).find(|candidate| candidate.is_file())
}

/// The example configuration with this run's addresses and quicker checks (a replica must be
/// marked down well within the drain period). Fails if the example no longer has the lines
/// replaced, so the file and the scenario cannot drift apart.
pub fn render(example: &str, front: u16, stats: u16, replicas: &[u16]) -> anyhow::Result<String> {
    let mut replacements = vec![
        ("bind 127.0.0.1:8080".to_owned(), format!("bind 127.0.0.1:{front}")),
        ("bind 127.0.0.1:8404".to_owned(), format!("bind 127.0.0.1:{stats}")),
        ("default-server inter 1s fall 2 rise 2".to_owned(), "default-server inter 100ms fall 2 rise 1".to_owned()),
    ];
    for (n, port) in replicas.iter().enumerate() {
        replacements.push((format!("127.0.0.1:808{} check", n + 1), format!("127.0.0.1:{port} check")));
    }
    let mut text = example.to_owned();
    for (from, to) in replacements {
        if text.matches(&from).count() != 1 {
            bail!("deploy/haproxy/haproxy.cfg.example should have `{from}` once");
        }
        text = text.replace(&from, &to);
    }
    Ok(text)
}

/// `count` ports free now on 127.0.0.1.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

struct Replica {
    port: u16,
    child: Option<Child>,
}

impl Replica {
    async fn start(&mut self, scenario: &Scenario, kubeconfig: &Path) -> anyhow::Result<()> {
        let mut child = Command::new(&scenario.proxy)
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--drain-period", &scenario.drain_seconds.to_string(), "--kubeconfig"])
            .arg(kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(if scenario.show_logs { Stdio::inherit() } else { Stdio::null() })
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", scenario.proxy.display()))?;
        announced_addr(&mut child).await;
        self.child = Some(child);
        Ok(())
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

struct Run<'a> {
    scenario: &'a Scenario,
    api: kube::Client,
    stats_url: String,
    replicas: Vec<Replica>,
    kubeconfig: KubeconfigFile,
    clients: Vec<NativeClient>,
    report: Report,
}

impl Run<'_> {
    /// Waits until haproxy's checks have replica `index` up.
    async fn up_in_haproxy(&self, index: usize) -> anyhow::Result<()> {
        let server = format!("proxy-{}", index + 1);
        try_poll(&format!("haproxy to see {server} up"), STEP, || async {
            let csv = try_get(&self.stats_url).await?.body;
            let status = server_status(&csv, &server);
            if status.as_deref() == Some("UP") { Ok(()) } else { Err(format!("{server}: {status:?}")) }
        })
        .await
        .map_err(anyhow::Error::msg)
    }

    /// `/mux` connections each replica holds.
    async fn connections(&self) -> Vec<f64> {
        let mut counts = Vec::new();
        for replica in &self.replicas {
            let body = try_get(&format!("{}/metrics", replica.base())).await.map(|r| r.body).unwrap_or_default();
            counts.push(metric(&body, "kubemux_connections"));
        }
        counts
    }

    /// Waits until every client is connected with every subscription synced, and the
    /// replicas' connection gauges add up to the clients (none half-gone).
    async fn settled(&self, what: &str) -> anyhow::Result<()> {
        wait_for_all(&self.clients, STEP, what, |views| views.iter().all(|v| v.settled(&IDS))).await?;
        let expected = self.clients.len() as f64;
        try_poll("the replicas' connections to add up to the clients", STEP, || async {
            let counts = self.connections().await;
            if counts.iter().sum::<f64>() == expected { Ok(()) } else { Err(format!("{counts:?}")) }
        })
        .await
        .map_err(anyhow::Error::msg)
    }

    /// Adds a replica's `kubemux_resumes_total` to the report (before it stops, and at the end).
    async fn count_outcomes(&mut self, index: usize) {
        let body = try_get(&format!("{}/metrics", self.replicas[index].base())).await.map(|r| r.body).unwrap_or_default();
        for outcome in OUTCOMES {
            *self.report.outcomes.entry(outcome.to_owned()).or_default() += metric(&body, &format!("kubemux_resumes_total{{outcome=\"{outcome}\"}}"));
        }
    }

    async fn upstream_requests(&self) -> u64 {
        let stats = hook(&self.api, "GET", "/_sim/stats").await;
        stats["listRequests"].as_u64().unwrap_or(0) + stats["watchRequests"].as_u64().unwrap_or(0)
    }

    /// Stops one replica (when `index` is `None`, the next in turn, or the busiest if that one
    /// serves nobody), waits for its clients to be
    /// synced on the others, starts it again on its port and waits for haproxy to see it up.
    async fn restart(&mut self, phase: Phase, kind: Kind, index: Option<usize>) -> anyhow::Result<()> {
        self.settled("every client settled before a restart").await?;
        let counts = self.connections().await;
        // Kills go round the replicas, skipping one that serves nobody (for the busiest).
        let turn = self.report.restarts.len() % counts.len();
        let busiest = || counts.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        let index = index.unwrap_or_else(|| if counts[turn] > 0.0 { turn } else { busiest() });
        let affected = counts[index] as usize;
        self.count_outcomes(index).await;
        let requests = self.upstream_requests().await;
        let closes: Vec<usize> = self.clients.iter().map(|c| c.inspect(|v| v.closes.len())).collect();
        let mut child = self.replicas[index].child.take().context("a running replica")?;
        let signalled = Instant::now();
        match kind {
            Kind::Kill => child.kill().await?,
            Kind::Term => {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().context("a pid")?)?);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
            }
        }
        let moved = |views: &[&View]| views.iter().zip(&closes).filter(|(v, before)| v.closes.len() > **before).count();
        wait_for_all(&self.clients, STEP, &format!("{affected} clients of replica {} to see it go", index + 1), |views| moved(views) >= affected).await?;
        wait_for_all(&self.clients, STEP, "the moved clients to be synced on another replica", |views| views.iter().zip(&closes).all(|(v, before)| v.closes.len() == *before || v.settled(&IDS)))
            .await?;
        if kind == Kind::Term {
            let status = tokio::time::timeout(STEP, child.wait()).await.context("the replica to exit after SIGTERM")??;
            if !status.success() {
                bail!("replica {} exited with {status} after SIGTERM", index + 1);
            }
        }
        let mut restart = Restart { phase, kind, replica: index, affected, recoveries: Vec::new(), saw_1001: 0, upstream_requests: 0 };
        for (client, before) in self.clients.iter().zip(&closes) {
            client.inspect(|v| {
                let Some((closed, code)) = v.closes.get(*before).copied() else { return };
                let synced = IDS.iter().filter_map(|id| v.synced_after(id, closed)).max().unwrap_or(closed);
                restart.recoveries.push((closed.saturating_duration_since(signalled), synced.saturating_duration_since(signalled)));
                restart.saw_1001 += usize::from(code == Some(1001));
            });
        }
        self.replicas[index].start(self.scenario, self.kubeconfig.path()).await?;
        self.up_in_haproxy(index).await?;
        restart.upstream_requests = self.upstream_requests().await.saturating_sub(requests);
        self.report.restarts.push(restart);
        Ok(())
    }

    /// SIGTERM to each replica in turn; every client must see 1001 at least once.
    async fn rolling(&mut self, phase: Phase) -> anyhow::Result<()> {
        let start = Instant::now();
        for index in 0..self.replicas.len() {
            self.restart(phase, Kind::Term, Some(index)).await?;
        }
        let missing = self.clients.iter().enumerate().filter(|(_, c)| !c.inspect(|v| v.closes.iter().any(|(at, code)| *at > start && *code == Some(1001)))).map(|(n, _)| n).collect();
        self.report.missing_1001.push((phase, missing));
        Ok(())
    }

    /// Waits for every cache to equal the simulator's lists (reporting what differs if one
    /// never does), and gathers the clients' figures.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.settled("every client settled at the end").await?;
        let mut truth = BTreeMap::new();
        for (id, path) in SUBSCRIPTIONS {
            truth.insert(id, list(&self.api, path).await);
        }
        let equal = |views: &[&View]| views.iter().all(|v| IDS.iter().all(|id| differences(v.caches.get(*id), &truth[id]) == (0, 0, 0)));
        // A difference left after the deadline is reported, not waited for.
        let _ = wait_for_all(&self.clients, STEP, "every cache to equal the simulator's lists", equal).await;
        for index in 0..self.replicas.len() {
            self.count_outcomes(index).await;
        }
        let report = &mut self.report;
        report.clients = self.clients.len();
        for (n, client) in self.clients.iter().enumerate() {
            client.inspect(|v| {
                for id in IDS {
                    let (lost, phantom, stale) = differences(v.caches.get(id), &truth[id]);
                    (report.lost, report.phantom, report.stale) = (report.lost + lost, report.phantom + phantom, report.stale + stale);
                }
                report.resumes += v.resumes.values().sum::<usize>();
                report.resets += v.resets.values().sum::<usize>();
                report.synced += v.synced.values().sum::<usize>();
                report.out_of_order.extend(v.out_of_order.iter().map(|(id, version, before)| (n, id.clone(), version.clone(), *before)));
                report.duplicates.extend(v.duplicates.iter().map(|(id, (namespace, name), version)| (n, id.clone(), format!("{namespace}/{name}"), version.clone())));
            });
        }
        Ok(())
    }
}

/// A cache against the simulator's list: (lost, phantom, stale).
fn differences(cache: Option<&BTreeMap<(String, String), Value>>, truth: &BTreeMap<(String, String), Value>) -> (usize, usize, usize) {
    let empty = BTreeMap::new();
    let cache = cache.unwrap_or(&empty);
    let version = |o: &Value| o["metadata"]["resourceVersion"].as_str().map(str::to_owned);
    let lost = truth.keys().filter(|k| !cache.contains_key(*k)).count();
    let phantom = cache.keys().filter(|k| !truth.contains_key(*k)).count();
    let stale = truth.iter().filter(|(k, o)| cache.get(*k).is_some_and(|held| version(held) != version(o))).count();
    (lost, phantom, stale)
}

/// The `status` of `server` in haproxy's stats CSV.
fn server_status(csv: &str, server: &str) -> Option<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let (name, status) = (header.iter().position(|h| *h == "svname")?, header.iter().position(|h| *h == "status")?);
    lines.map(|line| line.split(',').collect::<Vec<_>>()).find(|fields| fields.get(name) == Some(&server)).and_then(|fields| fields.get(status).map(|s| (*s).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_renders_with_every_port_replaced() {
        let text = render(HAPROXY_EXAMPLE, 1, 2, &[3, 4, 5]).unwrap();
        for line in ["bind 127.0.0.1:1", "bind 127.0.0.1:2", "server proxy-1 127.0.0.1:3 check", "server proxy-3 127.0.0.1:5 check", "inter 100ms fall 2 rise 1"] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("808"), "{text}");
        assert!(render("nothing to replace", 1, 2, &[3]).is_err());
    }

    #[test]
    fn stats_csv_status_by_server() {
        let csv = "# pxname,svname,qcur,status\nkubemux-proxies,proxy-1,0,UP\nkubemux-proxies,proxy-2,0,DOWN\n";
        assert_eq!(server_status(csv, "proxy-2").as_deref(), Some("DOWN"));
        assert_eq!(server_status(csv, "proxy-9"), None);
    }
}
