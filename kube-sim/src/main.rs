//! `kube-sim`: runs the simulated Kubernetes API server until SIGINT or SIGTERM.
//!
//! The first line on stdout is exactly `kube-sim listening on http://127.0.0.1:PORT` (`https://`
//! with `--tls`), so a parent process (`cargo xtask demo`, tests) can learn the port; logs go to
//! stderr.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use kube_sim::tls::TlsConfig;
use kube_sim::{Seed, Sim, SimConfig, User};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// A simulated Kubernetes API server that kubectl and kube-rs accept.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Objects to start with.
    #[arg(long, value_enum, default_value_t = SeedArg::Demo)]
    seed: SeedArg,
    /// About this many changes per second to the demo objects; 0 disables churn.
    #[arg(long, value_name = "N", default_value_t = 0.0, value_parser = parse_rate)]
    churn: f64,
    /// Seconds between bookmarks on watches that ask for them.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    bookmark_interval: u64,
    /// How many change events are kept for watches to resume from; older ones get 410 Expired.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    history: usize,
    /// A user and its bearer token, with the namespaces it may use (comma list, or `*` for all);
    /// repeatable. Without any, anonymous requests have full access.
    #[arg(long = "user", value_name = "NAME:TOKEN:NAMESPACES", value_parser = User::parse)]
    users: Vec<User>,
    /// Watch timeout in seconds when the client sends no `timeoutSeconds`.
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    watch_timeout: u64,
    /// Write a kubeconfig for this simulator to PATH (mode 0600) before announcing the URL.
    /// For plain HTTP it says `insecure-skip-tls-verify: true`; with `--tls` it carries the
    /// generated CA as `certificate-authority-data`.
    #[arg(long, value_name = "PATH")]
    write_kubeconfig: Option<PathBuf>,
    /// Serve HTTPS: a CA and a server certificate are generated at start (new on every start;
    /// the CA's key never leaves the process). The certificate is valid for localhost,
    /// 127.0.0.1, ::1, kubernetes.default.svc (and its shorter and longer forms), the listen
    /// address and every --tls-name.
    #[arg(long)]
    tls: bool,
    /// Another DNS name or IP address the server certificate is valid for; repeatable. Needs --tls.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    tls_names: Vec<String>,
    /// Write the generated CA's certificate (PEM, mode 0644) to PATH before announcing the URL.
    /// Default with --tls and --write-kubeconfig K: K.ca.crt, next to the kubeconfig. Needs --tls.
    #[arg(long, value_name = "PATH", requires = "tls")]
    ca_out: Option<PathBuf>,
}

/// `--seed` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum SeedArg {
    /// Namespaces default, kube-system and demo with pods, deployments, services and more.
    Demo,
    /// Only the namespaces every cluster has.
    Empty,
}

impl From<SeedArg> for Seed {
    fn from(seed: SeedArg) -> Seed {
        match seed {
            SeedArg::Demo => Seed::Demo,
            SeedArg::Empty => Seed::Empty,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a non-negative number")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(args));
    // A blocking read on a process's terminal can outlive the processes themselves; don't let it
    // keep the binary alive after the simulator has shut down.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Listen for signals before announcing ourselves, so a parent that stops us right after
    // reading the first line never hits the default (abrupt) signal action.
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let config = SimConfig {
        listen: args.listen,
        seed: args.seed.into(),
        churn_per_second: args.churn,
        bookmark_interval: Duration::from_secs(args.bookmark_interval),
        history: args.history,
        users: args.users.clone(),
        default_watch_timeout: Duration::from_secs(args.watch_timeout),
        tls: args.tls.then(|| TlsConfig { extra_names: args.tls_names.clone() }),
        ..SimConfig::default()
    };
    let sim = Sim::start(config).await?;
    // The kubeconfig and the CA exist before the URL is announced: whoever reads the line may
    // use them.
    if let Err(error) = write_files(&args, &sim) {
        sim.shutdown().await;
        return Err(error);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "kube-sim listening on {}", sim.url())?;
    stdout.flush()?;
    drop(stdout);

    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal, "shutting down");
    sim.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The kubeconfig (`--write-kubeconfig`) and the CA (`--ca-out`, or next to the kubeconfig).
fn write_files(args: &Args, sim: &Sim) -> anyhow::Result<()> {
    if let Some(path) = &args.write_kubeconfig {
        write_private(path, &sim.kubeconfig())?;
        tracing::info!(path = %path.display(), "kubeconfig written");
    }
    let ca_out = args.ca_out.clone().or_else(|| {
        let mut beside = args.write_kubeconfig.clone()?.into_os_string();
        beside.push(".ca.crt");
        Some(PathBuf::from(beside))
    });
    if let (Some(pem), Some(path)) = (sim.ca_pem(), ca_out) {
        // A certificate is public: readable by all, like a cluster's ca.crt.
        std::fs::write(&path, pem).with_context(|| format!("writing the CA to {}", path.display()))?;
        tracing::info!(path = %path.display(), "CA certificate written");
    }
    Ok(())
}

/// Writes `contents` to `path` readable by the owner only: it may hold a bearer token.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing the kubeconfig to {}", path.display()))?;
    // `mode` only applies to a new file; an existing one may have been wider.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
