//! `kubemux-proxy`: the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser};
use kubemux_proxy::auth::AuthMode;
use kubemux_proxy::clusters;
use kubemux_proxy::config::{self, FileConfig};
use kubemux_proxy::live::{Candidate, Loader};
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
    /// Whether a /mux client that offers kubemux.v1+deflate gets its frames compressed.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    deflate: bool,
    /// Seconds a compressed /mux connection may send nothing before it drops its compressor.
    #[arg(long, default_value = "30", value_parser = config::parse_seconds, allow_negative_numbers = true)]
    deflate_idle_release: Duration,
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

/// The proxy's settings: the flags' defaults, the config file's keys over them, and the flags
/// given on the command line over both. One mapping of keys to settings, `FileConfig::apply_to`,
/// serves all three.
fn settings(args: &Args, file: &FileConfig, matches: &ArgMatches) -> ProxySettings {
    let defaults = flags(args, matches, false).apply_to(ProxySettings::default());
    flags(args, matches, true).apply_to(file.apply_to(defaults))
}

/// The flags as config keys: every flag, or only those given on the command line.
fn flags(args: &Args, matches: &ArgMatches, only_given: bool) -> FileConfig {
    let take = |id: &str| !only_given || matches.value_source(id).is_some_and(|source| source != ValueSource::DefaultValue);
    FileConfig {
        listen: take("listen").then_some(args.listen),
        allowed_origins: take("allowed_origins").then(|| args.allowed_origins.clone()),
        auth_mode: take("auth_mode").then_some(args.auth_mode),
        allow_anonymous_remote: take("allow_anonymous_remote").then_some(args.allow_anonymous_remote),
        max_subscriptions: take("max_subscriptions").then_some(args.max_subscriptions),
        max_message_bytes: take("max_message_bytes").then_some(args.max_message_bytes),
        max_queued_bytes: take("max_queued_bytes").then_some(args.max_queued_bytes),
        deflate: take("deflate").then_some(args.deflate),
        deflate_idle_release: take("deflate_idle_release").then_some(args.deflate_idle_release),
        history: take("history").then_some(args.history),
        upstream_idle_timeout: take("upstream_idle_timeout").then(|| Duration::from_secs(args.upstream_idle_timeout)),
        linger: take("linger").then(|| Duration::from_secs(args.linger)),
        terminal_grace: take("terminal_grace").then_some(args.terminal_grace),
        terminal_ping_interval: take("terminal_ping_interval").then_some(args.terminal_ping_interval),
        health_interval: take("health_interval").then_some(args.health_interval),
        drain_period: take("drain_period").then_some(args.drain_period),
        static_dir: take("static_dir").then(|| args.static_dir.clone()).flatten(),
        clusters: None,
        forwards: None,
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
