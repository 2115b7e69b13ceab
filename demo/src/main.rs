//! `kubemux-demo`: `kubemux-proxy` over two embedded simulated clusters, serving the web app.
//! What `cargo xtask demo` runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kubemux_demo::Demo;
use kubemux_proxy::auth::AuthSettings;
use kubemux_proxy::config::FileSource;
use kubemux_proxy::{Proxy, ProxySettings};

/// The kubemux demo: live pod tables, events and terminals over simulated clusters (`demo`,
/// `staging`, and `demo-viewer`, restricted to one namespace), no cluster needed.
#[derive(Parser, Debug)]
#[command(name = "kubemux-demo", version)]
struct Args {
    /// Address to listen on. The demo's terminals run real processes on this machine, so only
    /// loopback unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve the built web app from this directory at `/` (`www/dist`).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Changes per second in the `demo` cluster (`staging` gets half).
    #[arg(long, default_value_t = 2.0)]
    churn: f64,
    /// Let others reach the demo (and run commands on this machine through its terminals).
    #[arg(long)]
    allow_remote: bool,
    /// Where the demo keeps its proxy config (`proxy.yaml`, kept between runs: edit it while
    /// the demo runs to add clusters) and its clusters' kubeconfigs (default:
    /// $HOME/.cache/kubemux/demo).
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kubemux-demo: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    kubemux_proxy::logging::init();
    let args = Args::parse();
    anyhow::ensure!(args.churn.is_finite() && args.churn >= 0.0, "--churn takes a number of changes per second, 0 or more (got {})", args.churn);
    let folder = match args.config_dir.clone() {
        Some(folder) => folder,
        None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow::anyhow!("HOME is not set: give --config-dir"))?).join(".cache/kubemux/demo"),
    };
    let (demo, config) = Demo::start(args.listen, args.allow_remote, args.churn, &folder).await?;
    // The demo's users act with the simulators' admin credentials: proxy mode, which off
    // loopback needs the same explicit yes as above. The demo's flags win over the file.
    let (listen, static_dir, allow_remote) = (args.listen, args.static_dir.clone(), args.allow_remote);
    let base = ProxySettings { listen, static_dir: static_dir.clone(), auth: AuthSettings { allow_anonymous_remote: allow_remote, ..AuthSettings::default() }, ..ProxySettings::default() };
    let pinned = move |mut settings: ProxySettings| {
        settings.listen = listen;
        settings.static_dir.clone_from(&static_dir);
        settings.auth.allow_anonymous_remote = allow_remote;
        settings
    };
    let proxy = Proxy::start_live(Box::new(FileSource { file: config.clone(), base, pinned: Box::new(pinned) })).await?;
    println!("kubemux-proxy listening on http://{}", proxy.addr());
    println!("config: {} (edit it while the demo runs: the proxy reloads it)", config.display());
    kubemux_proxy::shutdown_signal().await?;
    tracing::info!("shutting down");
    proxy.shutdown().await;
    demo.shutdown().await;
    Ok(())
}
