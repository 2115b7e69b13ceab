//! `kubemux-demo`: `kubemux-proxy` over two embedded simulated clusters, serving the web app.
//! What `cargo xtask demo` runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use kubemux_demo::Demo;
use kubemux_proxy::auth::AuthSettings;
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
    let (demo, clusters) = Demo::start(args.listen, args.allow_remote, args.churn).await?;
    // The demo's users act with the simulators' admin credentials: proxy mode, which off
    // loopback needs the same explicit yes as above.
    let settings = ProxySettings {
        listen: args.listen,
        static_dir: args.static_dir,
        auth: AuthSettings { allow_anonymous_remote: args.allow_remote, ..AuthSettings::default() },
        ..ProxySettings::default()
    };
    settings.auth.check_listen(settings.listen).map_err(anyhow::Error::msg)?;
    let proxy = Proxy::start(settings, clusters).await?;
    println!("kubemux-proxy listening on http://{}", proxy.addr());
    kubemux_proxy::shutdown_signal().await?;
    tracing::info!("shutting down");
    proxy.shutdown().await;
    demo.shutdown().await;
    Ok(())
}
