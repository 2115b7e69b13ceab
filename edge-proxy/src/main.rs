//! `kubemux-proxy`: the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser};
use kubemux_proxy::auth::{AuthMode, AuthSettings};
use kubemux_proxy::clusters;
use kubemux_proxy::config::{self, FileConfig};
use kubemux_proxy::live::{Candidate, Loader};
use kubemux_proxy::mux::MuxSettings;
use kubemux_proxy::registry::RegistrySettings;
use kubemux_proxy::terminal::TerminalSettings;
use kubemux_proxy::{Proxy, ProxySettings};

/// One WebSocket per browser for any number of Kubernetes watches, terminals that leave no
/// shell behind.
#[derive(Parser, Debug)]
#[command(name = "kubemux-proxy", version)]
struct Args {
    /// A YAML (or JSON) config file with a key for every flag (`docs/config.example.yaml`);
    /// flags given on the command line override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// `token`: every request must carry a bearer token. `proxy`: requests without one use the
    /// clusters' credentials (loopback only unless --allow-anonymous-remote).
    #[arg(long, value_enum, default_value_t = AuthMode::Proxy)]
    auth_mode: AuthMode,
    /// Let proxy auth mode listen on a non-loopback address.
    #[arg(long)]
    allow_anonymous_remote: bool,
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
    #[arg(long, default_value = "5", value_parser = config::parse_seconds, allow_negative_numbers = true)]
    terminal_grace: Duration,
    /// Seconds between pings to terminal clients; three missed intervals end the session.
    #[arg(long, default_value = "20", value_parser = config::parse_seconds, allow_negative_numbers = true)]
    terminal_ping_interval: Duration,
    /// Seconds between health checks of every cluster (`/clusters`).
    #[arg(long, default_value = "10", value_parser = config::parse_seconds, allow_negative_numbers = true)]
    health_interval: Duration,
    /// Seconds a shutdown (SIGTERM) keeps serving after /readyz turns 503, before /mux
    /// connections close with 1001: long enough for load balancers to stop sending new ones.
    #[arg(long, default_value = "5", value_parser = config::parse_seconds, allow_negative_numbers = true)]
    drain_period: Duration,
    /// Serve a built web app from this directory at `/` (the demo app: `www/dist`).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
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
    let matches = Args::command().get_matches();
    let args = Args::from_arg_matches(&matches)?;
    let proxy = Proxy::start_live(Box::new(Source { args, matches })).await?;
    println!("kubemux-proxy listening on http://{}", proxy.addr());
    kubemux_proxy::shutdown_signal().await?;
    tracing::info!("shutting down");
    proxy.shutdown().await;
    Ok(())
}

/// The configuration's source: the config file (if any) under the command line's flags, and
/// the clusters it names or else those kubeconfig discovery finds. Read again on every reload,
/// so a flag keeps winning over the file.
struct Source {
    args: Args,
    matches: ArgMatches,
}

impl Loader for Source {
    fn load(&self) -> Result<Candidate, String> {
        let file = match &self.args.config {
            Some(path) => config::load(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        let kubeconfig_given = self.matches.value_source("kubeconfig").is_some_and(|source| source != ValueSource::DefaultValue);
        let sources = match file.clusters.clone() {
            Some(sources) if !kubeconfig_given => sources,
            _ => clusters::discover(self.args.kubeconfig.as_deref()).map_err(|e| e.to_string())?,
        };
        Ok(Candidate { settings: settings(&self.args, &file, &self.matches), sources })
    }

    fn file(&self) -> Option<PathBuf> {
        self.args.config.clone()
    }

    fn files(&self) -> Vec<PathBuf> {
        self.args.config.iter().cloned().collect()
    }
}

/// The proxy's settings: each from its flag when given on the command line, else from the
/// config file, else the flag's default.
fn settings(args: &Args, file: &FileConfig, matches: &ArgMatches) -> ProxySettings {
    fn pick<T>(matches: &ArgMatches, id: &str, flag: T, from_file: Option<T>) -> T {
        let given = matches.value_source(id).is_some_and(|source| source != ValueSource::DefaultValue);
        if given { flag } else { from_file.unwrap_or(flag) }
    }
    let ping_interval = pick(matches, "terminal_ping_interval", args.terminal_ping_interval, file.terminal_ping_interval);
    ProxySettings {
        listen: pick(matches, "listen", args.listen, file.listen),
        allowed_origins: pick(matches, "allowed_origins", args.allowed_origins.clone(), file.allowed_origins.clone()),
        mux: MuxSettings {
            max_subscriptions: pick(matches, "max_subscriptions", args.max_subscriptions, file.max_subscriptions),
            max_message_bytes: pick(matches, "max_message_bytes", args.max_message_bytes, file.max_message_bytes),
            max_queued_bytes: pick(matches, "max_queued_bytes", args.max_queued_bytes, file.max_queued_bytes),
            ..MuxSettings::default()
        },
        registry: RegistrySettings {
            history: pick(matches, "history", args.history, file.history),
            idle_timeout: pick(matches, "upstream_idle_timeout", Duration::from_secs(args.upstream_idle_timeout), file.upstream_idle_timeout),
            linger: pick(matches, "linger", Duration::from_secs(args.linger), file.linger),
            ..RegistrySettings::default()
        },
        terminal: TerminalSettings {
            grace: pick(matches, "terminal_grace", args.terminal_grace, file.terminal_grace),
            ping_interval,
            dead_after: ping_interval.saturating_mul(3),
            ..TerminalSettings::default()
        },
        health_interval: pick(matches, "health_interval", args.health_interval, file.health_interval),
        drain: pick(matches, "drain_period", args.drain_period, file.drain_period),
        static_dir: pick(matches, "static_dir", args.static_dir.clone(), file.static_dir.clone().map(Some)),
        auth: AuthSettings {
            mode: pick(matches, "auth_mode", args.auth_mode, file.auth_mode),
            allow_anonymous_remote: pick(matches, "allow_anonymous_remote", args.allow_anonymous_remote, file.allow_anonymous_remote),
        },
        ..ProxySettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_from(argv: &[&str], file: &FileConfig) -> ProxySettings {
        let matches = Args::command().try_get_matches_from(argv).unwrap();
        let args = Args::from_arg_matches(&matches).unwrap();
        settings(&args, file, &matches)
    }

    #[test]
    fn flags_given_on_the_command_line_win_over_the_file_and_the_file_over_defaults() {
        let file = FileConfig { linger: Some(Duration::from_secs(7)), history: Some(5), auth_mode: Some(AuthMode::Token), ..FileConfig::default() };
        let settings = settings_from(&["kubemux-proxy", "--linger", "3", "--max-subscriptions", "512"], &file);
        assert_eq!(settings.registry.linger, Duration::from_secs(3), "the flag wins");
        assert_eq!(settings.registry.history, 5, "the file wins over the flag's default");
        assert_eq!(settings.auth.mode, AuthMode::Token);
        assert_eq!(settings.mux.max_subscriptions, 512, "a flag given with its default value still counts as given");
        let defaults = settings_from(&["kubemux-proxy"], &FileConfig::default());
        assert_eq!((defaults.registry.history, defaults.terminal.grace, defaults.auth.mode), (1024, Duration::from_secs(5), AuthMode::Proxy));
        assert_eq!(defaults.terminal.dead_after, Duration::from_secs(60));
    }

    #[test]
    fn durations_on_the_command_line_are_refused_not_panicked_on() {
        for value in ["-1", "NaN", "inf", "1e300"] {
            let error = Args::command().try_get_matches_from(["kubemux-proxy", "--terminal-grace", value]).unwrap_err().to_string();
            assert!(error.contains("finite number of seconds") || error.contains("too long"), "{value}: {error}");
        }
    }
}
