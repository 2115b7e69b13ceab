//! The proxy's log filter: `RUST_LOG` as operators write it, except that the libraries that log
//! what passes through them never get below a level where they print payloads.
//!
//! tungstenite traces every frame it reads or writes (text and hex), which carries `auth`
//! frames with their tokens and every keystroke typed into a terminal; hyper, h2 and rustls
//! trace headers and bytes. Invariant 7 says no token or keystroke reaches a log at any level,
//! so those targets are capped here whatever `RUST_LOG` asks for, including a more specific
//! directive such as `tungstenite::protocol=trace`, which would otherwise win over the cap.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{Directive, LevelFilter};

/// The level the proxy logs at when `RUST_LOG` is unset or empty.
pub const DEFAULT_LEVEL: &str = "info";

/// Libraries that log what flows through them, and the most they may log: `info`, where none
/// of them prints data (kube's client logs response headers and bodies at `trace` and error
/// bodies at `debug`). `EnvFilter` matches targets by prefix, so no name here may be a prefix
/// of the proxy's own (`kube` would silence `kubemux_proxy`).
pub const CAPPED: &[(&str, LevelFilter)] = &[
    ("tungstenite", LevelFilter::INFO),
    ("tokio_tungstenite", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("tokio_rustls", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
    ("axum", LevelFilter::INFO),
    ("kube_client", LevelFilter::INFO),
];

/// A filter for `spec` (the value of `RUST_LOG`): its directives for everything but the capped
/// libraries, then the caps. Directives that do not parse are reported on stderr and left out,
/// as `EnvFilter` does, and the rest still apply.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_LEVEL);
    let kept: Vec<&str> = spec.split(',').map(str::trim).filter(|d| !d.is_empty() && !names_capped(d)).collect();
    // What the capped libraries would get from RUST_LOG: its last bare level (`warn`, `trace`),
    // or the default. A cap only ever lowers that, so `RUST_LOG=warn` keeps them at warn.
    let global = kept.iter().rev().find_map(|d| d.parse::<LevelFilter>().ok()).unwrap_or(LevelFilter::INFO);
    let mut filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).parse_lossy(kept.join(","));
    for (target, cap) in CAPPED {
        let level = std::cmp::min(global, *cap);
        let directive: Directive = format!("{target}={level}").parse().unwrap_or_else(|_| LevelFilter::OFF.into());
        filter = filter.add_directive(directive);
    }
    filter
}

/// The filter for this process, from `RUST_LOG`.
pub fn from_env() -> EnvFilter {
    filter(std::env::var("RUST_LOG").ok().as_deref())
}

/// Installs the process's subscriber (stderr, [`from_env`]) and a panic hook that logs a panic
/// as one `error` line with its location, instead of the default hook's message and backtrace
/// on stderr: a panic is contained where it happens (the registry's tasks turn it into errors
/// for their subscribers), and a client that can cause one must not be able to flood the log.
pub fn init() {
    tracing_subscriber::fmt().with_env_filter(from_env()).with_writer(std::io::stderr).init();
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = panic_message(info.payload());
        tracing::error!(target: "kubemux_proxy::panic", %location, "panic: {message}");
    }));
}

/// What a panic said (its `&str` or `String` payload), for the one line it gets in the log.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}

/// Whether a directive (`target[span{field}]=level`, or a bare level) names a capped library or
/// one of its modules.
fn names_capped(directive: &str) -> bool {
    // A span filter with no target (`[{field}]=trace`) would reach into the capped libraries'
    // events inside matching spans too: it is left out as well.
    if directive.starts_with('[') {
        return true;
    }
    let target = directive.split(['=', '[']).next().unwrap_or_default().trim();
    CAPPED.iter().any(|(name, _)| target == *name || target.strip_prefix(name).is_some_and(|rest| rest.starts_with("::")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing::subscriber::with_default;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Whether an event at `level` for `target` gets through `filter(spec)`.
    fn enabled(spec: &str, target: &'static str, level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(filter(Some(spec)));
        with_default(subscriber, || match (target, level) {
            ("tungstenite::protocol", Level::TRACE) => tracing::enabled!(target: "tungstenite::protocol", Level::TRACE),
            ("tungstenite::protocol", Level::INFO) => tracing::enabled!(target: "tungstenite::protocol", Level::INFO),
            ("hyper::proto::h1", Level::TRACE) => tracing::enabled!(target: "hyper::proto::h1", Level::TRACE),
            ("kubemux_proxy::mux", Level::TRACE) => tracing::enabled!(target: "kubemux_proxy::mux", Level::TRACE),
            ("kubemux_proxy::mux", Level::DEBUG) => tracing::enabled!(target: "kubemux_proxy::mux", Level::DEBUG),
            ("kube_client", Level::TRACE) => tracing::enabled!(target: "kube_client", Level::TRACE),
            ("kube_client", Level::DEBUG) => tracing::enabled!(target: "kube_client", Level::DEBUG),
            ("kube_client", Level::WARN) => tracing::enabled!(target: "kube_client", Level::WARN),
            _ => unreachable!("a case the test names"),
        })
    }

    #[test]
    fn payload_tracing_stays_off_whatever_rust_log_says() {
        for spec in ["trace", "tungstenite=trace", "tungstenite::protocol=trace", "info,tungstenite::protocol[x]=trace", "trace,hyper=trace", "info,[{token}]=trace"] {
            assert!(!enabled(spec, "tungstenite::protocol", Level::TRACE), "{spec}");
            assert!(!enabled(spec, "hyper::proto::h1", Level::TRACE), "{spec}");
            assert!(!enabled(spec, "kube_client", Level::TRACE), "{spec}");
        }
        // What the capped libraries say at info (connection errors) still comes through.
        assert!(enabled("trace", "tungstenite::protocol", Level::INFO));
        // A cap only lowers: a quieter RUST_LOG keeps them quieter.
        assert!(!enabled("debug", "kube_client", Level::DEBUG));
        assert!(enabled("warn", "kube_client", Level::WARN));
    }

    #[test]
    fn the_proxys_own_levels_follow_rust_log() {
        assert!(enabled("trace", "kubemux_proxy::mux", Level::TRACE));
        assert!(enabled("kubemux_proxy=debug", "kubemux_proxy::mux", Level::DEBUG));
        assert!(!enabled("", "kubemux_proxy::mux", Level::DEBUG), "info by default");
        assert!(!enabled("not a directive=", "kubemux_proxy::mux", Level::DEBUG));
    }
}
