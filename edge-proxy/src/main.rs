//! `kubemux-proxy`: the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubemux_proxy::clusters::Clusters;
use kubemux_proxy::demo::Demo;
use kubemux_proxy::mux::MuxSettings;
use kubemux_proxy::registry::RegistrySettings;
use kubemux_proxy::terminal::TerminalSettings;
use kubemux_proxy::{Proxy, ProxySettings};

/// One WebSocket per browser for any number of Kubernetes watches, terminals that leave no
/// shell behind.
#[derive(Parser, Debug)]
#[command(name = "kubemux-proxy", version)]
struct Args {
    /// Address to listen on. Anything but loopback exposes your clusters: say so explicitly.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Kubeconfig whose contexts become clusters (default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// An Origin allowed to open /mux besides the proxy's own (repeatable; `*` allows any).
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Subscriptions per connection.
    #[arg(long, default_value_t = 512)]
    max_subscriptions: usize,
    /// Largest client message in bytes; larger ones close the connection with 1009.
    #[arg(long, default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// Queued outbound bytes per connection before its heaviest subscriptions are reset.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_queued_bytes: usize,
    /// Recent events kept per upstream watch for resuming clients.
    #[arg(long, default_value_t = 1024)]
    history: usize,
    /// Seconds an upstream watch may send nothing (no event, no bookmark) before it is restarted.
    #[arg(long, default_value_t = 150)]
    upstream_idle_timeout: u64,
    /// Seconds an upstream watch without subscribers lives on.
    #[arg(long, default_value_t = 10)]
    linger: u64,
    /// Seconds live terminals get on shutdown (SIGTERM) to end their shells.
    #[arg(long, default_value_t = 5.0)]
    terminal_grace: f64,
    /// Seconds between pings to terminal clients; three missed intervals end the session.
    #[arg(long, default_value_t = 20.0)]
    terminal_ping_interval: f64,
    /// Serve a built web app from this directory at `/` (the demo app: `www/dist`).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Run with embedded simulated clusters (`demo`, `staging`, and `demo-viewer`, restricted to
    /// one namespace) instead of a kubeconfig. Their terminals run real processes on this
    /// machine, so demo mode only listens on loopback unless `--demo-allow-remote` is given.
    #[arg(long, conflicts_with = "kubeconfig")]
    demo: bool,
    /// Let --demo listen on a non-loopback address.
    #[arg(long, requires = "demo")]
    demo_allow_remote: bool,
    /// Changes per second in the demo clusters.
    #[arg(long, default_value_t = 2.0, requires = "demo")]
    demo_churn: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubemux-proxy: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    kubemux_proxy::logging::init();
    let args = Args::parse();
    let (demo, clusters) = if args.demo {
        let (demo, clusters) = Demo::start(args.listen, args.demo_allow_remote, args.demo_churn).await?;
        (Some(demo), clusters)
    } else {
        (None, Clusters::discover(args.kubeconfig.as_deref()).await?)
    };
    let settings = ProxySettings {
        listen: args.listen,
        allowed_origins: args.allowed_origins,
        mux: MuxSettings { max_subscriptions: args.max_subscriptions, max_message_bytes: args.max_message_bytes, max_queued_bytes: args.max_queued_bytes, ..MuxSettings::default() },
        registry: RegistrySettings {
            history: args.history,
            idle_timeout: Duration::from_secs(args.upstream_idle_timeout),
            linger: Duration::from_secs(args.linger),
            ..RegistrySettings::default()
        },
        terminal: TerminalSettings {
            grace: Duration::from_secs_f64(args.terminal_grace),
            ping_interval: Duration::from_secs_f64(args.terminal_ping_interval),
            dead_after: Duration::from_secs_f64(args.terminal_ping_interval * 3.0),
            ..TerminalSettings::default()
        },
        static_dir: args.static_dir,
        ..ProxySettings::default()
    };
    let proxy = Proxy::start(settings, clusters).await?;
    println!("kubemux-proxy listening on http://{}", proxy.addr());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    proxy.shutdown().await;
    if let Some(demo) = demo {
        demo.shutdown().await;
    }
    Ok(())
}
