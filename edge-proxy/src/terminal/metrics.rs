//! Terminal metrics, registered in the proxy's registry by [`crate::metrics::Metrics`]. Labels
//! are kinds, protocols, triggers and outcomes only: never a pod, a user or a token.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters and gauges of exec and attach sessions.
#[derive(Debug, Default)]
pub struct TerminalMetrics {
    /// Sessions open right now.
    pub open: Gauge,
    sessions: Family<Labels, Counter>,
    ends: Family<Labels, Counter>,
    teardowns: Family<Labels, Counter>,
    dial_failures: Family<Labels, Counter>,
}

impl TerminalMetrics {
    /// Adds every metric to `registry` (under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("terminal_open", "Exec and attach sessions open now", self.open.clone());
        registry.register("terminal_sessions", "Exec and attach sessions accepted, by kind, client protocol and tty", self.sessions.clone());
        registry.register("terminal_ends", "Sessions that ended because the process did, by kind", self.ends.clone());
        registry.register(
            "terminal_teardowns",
            "Teardowns run because the client side went away, by kind, trigger and outcome (status_received, suspected_orphan, detached)",
            self.teardowns.clone(),
        );
        registry.register("terminal_dial_failures", "Upstream exec/attach dials that failed, by HTTP code", self.dial_failures.clone());
    }

    /// Counts an accepted session.
    pub fn session(&self, kind: &str, protocol: &str, tty: bool) {
        self.sessions.get_or_create(&vec![("kind", kind.to_owned()), ("protocol", protocol.to_owned()), ("tty", tty.to_string())]).inc();
    }

    /// Counts a session that ended with its process.
    pub fn ended(&self, kind: &str) {
        self.ends.get_or_create(&vec![("kind", kind.to_owned())]).inc();
    }

    /// Counts a teardown and how it went.
    pub fn teardown(&self, kind: &str, trigger: &str, outcome: &str) {
        self.teardowns
            .get_or_create(&vec![("kind", kind.to_owned()), ("trigger", trigger.to_owned()), ("outcome", outcome.to_owned())])
            .inc();
    }

    /// Counts a failed upstream dial.
    pub fn dial_failure(&self, code: u16) {
        self.dial_failures.get_or_create(&vec![("code", code.to_string())]).inc();
    }
}
