//! Prometheus metrics (`GET /metrics`). Labels are causes, reasons, and the cluster and resource
//! of an upstream watch (created only once the API server answered its list: see
//! `registry::meter`): never a token, a user, an object name, a namespace or a subscription id.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the proxy exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open `/mux` connections.
    pub connections: Gauge,
    /// Active subscriptions over all connections.
    pub subscriptions: Gauge,
    /// Running upstream list+watch loops.
    pub upstream_watches: Gauge,
    /// Events received from upstream watches.
    pub events_in: Counter,
    /// Event frames sent to clients.
    pub events_out: Counter,
    /// Bytes of frames sent to clients.
    pub bytes_out: Counter,
    /// Bytes of the compressed messages sent to `kubemux.v1+deflate` connections (their frames
    /// are counted, uncompressed, in `bytes_out` too).
    pub deflated_bytes_out: Counter,
    /// Compressed streams open, each holding a compressor (`mux::deflate`).
    pub deflate_streams: Gauge,
    /// Bytes queued for clients right now.
    pub queued_bytes: Gauge,
    /// Subscriptions whose queued events were dropped because their connection's queue was
    /// full (each is reset once its client drains).
    pub overflows: Counter,
    resets: Family<Labels, Counter>,
    resumes: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    task_panics: Family<Labels, Counter>,
    config_reloads: Family<Labels, Counter>,
    /// Per cluster and resource: requests to the API server, objects and bytes received,
    /// relists after an expired version (`registry::meter`).
    upstream_counters: [Family<Labels, Counter>; 4],
    upstream_subscribers: Family<Labels, Gauge>,
    /// The generation of the configuration in force (`/config/status`).
    pub config_generation: Gauge,
    /// Exec and attach sessions and their teardowns.
    pub terminals: crate::terminal::metrics::TerminalMetrics,
    /// Port-forwards through the proxy.
    pub port_forwards: std::sync::Arc<crate::portforward::metrics::PortForwardMetrics>,
    /// The forward manager's forwards.
    pub forwards: std::sync::Arc<crate::forward::metrics::ForwardMetrics>,
}

/// Why a subscription was reset.
#[derive(Debug, Clone, Copy)]
pub enum ResetCause {
    /// The upstream said 410 Expired.
    Expired,
    /// The client's outbound queue overflowed.
    Overflow,
    /// The client resumed from a version the proxy no longer has.
    ResumeUnavailable,
}

impl ResetCause {
    fn as_str(self) -> &'static str {
        match self {
            ResetCause::Expired => "expired",
            ResetCause::Overflow => "overflow",
            ResetCause::ResumeUnavailable => "resume_unavailable",
        }
    }
}

/// How a subscription that came with a resume point was answered (`docs/PROTOCOL.md` §4).
#[derive(Debug, Clone, Copy)]
pub enum ResumeOutcome {
    /// From the upstream watch's history: the events after the version.
    Replay,
    /// From the store: the objects changed since the version, the keys held, `synced`.
    Inventory,
    /// A catch-up watch from the version that reached the hand-over.
    CatchUp,
    /// The client was ahead of the store: `synced` at its version, older events withheld.
    Ahead,
    /// `reset` and a snapshot (including a catch-up that could not confirm its hand-over).
    Reset,
}

impl ResumeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ResumeOutcome::Replay => "replay",
            ResumeOutcome::Inventory => "inventory",
            ResumeOutcome::CatchUp => "catch_up",
            ResumeOutcome::Ahead => "ahead",
            ResumeOutcome::Reset => "reset",
        }
    }
}

/// A kind of proxy task whose panics are contained and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// An upstream list+watch shared by subscribers.
    Upstream,
    /// A resuming subscriber's catch-up watch.
    CatchUp,
    /// One of a terminal session's tasks (its supervisor, a socket's reader or writer).
    Terminal,
    /// A `/mux` connection's session.
    MuxSession,
    /// A forward's worker (restarted by the watchdog, its listener kept).
    Forward,
}

impl TaskKind {
    fn as_str(self) -> &'static str {
        match self {
            TaskKind::Upstream => "upstream",
            TaskKind::CatchUp => "catch_up",
            TaskKind::Terminal => "terminal",
            TaskKind::MuxSession => "mux_session",
            TaskKind::Forward => "forward",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubemux");
        let metrics = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            upstream_watches: Gauge::default(),
            events_in: Counter::default(),
            events_out: Counter::default(),
            bytes_out: Counter::default(),
            deflated_bytes_out: Counter::default(),
            deflate_streams: Gauge::default(),
            queued_bytes: Gauge::default(),
            overflows: Counter::default(),
            resets: Family::default(),
            resumes: Family::default(),
            errors: Family::default(),
            task_panics: Family::default(),
            config_reloads: Family::default(),
            upstream_counters: Default::default(),
            upstream_subscribers: Family::default(),
            config_generation: Gauge::default(),
            terminals: Default::default(),
            port_forwards: Default::default(),
            forwards: Default::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open /mux connections", metrics.connections.clone());
        registry.register("subscriptions", "Active subscriptions", metrics.subscriptions.clone());
        registry.register("upstream_watches", "Running upstream list+watch loops", metrics.upstream_watches.clone());
        registry.register("events_in", "Events received from upstream watches", metrics.events_in.clone());
        registry.register("events_out", "Event frames sent to clients", metrics.events_out.clone());
        registry.register("bytes_out", "Bytes of frames sent to clients", metrics.bytes_out.clone());
        registry.register("deflated_bytes_out", "Bytes of compressed messages sent to kubemux.v1+deflate connections", metrics.deflated_bytes_out.clone());
        registry.register("deflate_streams", "Compressed streams open, each holding its compressor", metrics.deflate_streams.clone());
        registry.register("queued_bytes", "Bytes queued for clients", metrics.queued_bytes.clone());
        registry.register("overflows", "Subscriptions whose queue overflowed", metrics.overflows.clone());
        registry.register("resets", "Subscription resets by cause", metrics.resets.clone());
        registry.register("resumes", "Subscriptions that came with a resume point, by how they were answered (replay, inventory, ahead, catch_up, reset)", metrics.resumes.clone());
        registry.register("errors", "Error frames by reason", metrics.errors.clone());
        registry.register("task_panics", "Panics contained at a task's boundary, by task", metrics.task_panics.clone());
        registry.register("config_reloads", "Config reloads by result (applied, unchanged, rejected)", metrics.config_reloads.clone());
        registry.register("config_generation", "Generation of the configuration in force", metrics.config_generation.clone());
        for (family, (name, help)) in metrics.upstream_counters.iter().zip(UPSTREAM_COUNTERS) {
            registry.register(name, help, family.clone());
        }
        registry.register("upstream_subscribers", "Subscriptions sharing the upstream watches of a cluster and resource", metrics.upstream_subscribers.clone());
        metrics.terminals.register(&mut registry);
        metrics.port_forwards.register(&mut registry);
        metrics.forwards.register(&mut registry);
        Metrics { registry, ..metrics }
    }
}

/// The labels of an upstream watch's series.
#[derive(Debug, Clone)]
pub struct UpstreamSeries {
    /// The cluster's name.
    pub cluster: String,
    /// The resource, `pods` or `deployments.apps`.
    pub resource: String,
}

/// The per cluster and resource counters, in `Metrics::upstream_series`'s order.
const UPSTREAM_COUNTERS: [(&str, &str); 4] = [
    ("upstream_requests", "Requests to the API server (list pages, watches, catch-ups) by cluster and resource"),
    ("upstream_objects", "Objects received from the API server (list items, watch events) by cluster and resource"),
    ("upstream_bytes", "Bytes received from the API server (list bodies, watch lines) by cluster and resource"),
    ("upstream_relists", "Relists after the API server expired a watch's version, by cluster and resource"),
];

impl Metrics {
    /// The series of the upstream watches of `labels`: requests, objects, bytes and relists, and
    /// the subscriber gauge.
    pub fn upstream_series(&self, labels: &UpstreamSeries) -> ([Counter; 4], Gauge) {
        let labels: Labels = vec![("cluster", labels.cluster.clone()), ("resource", labels.resource.clone())];
        let counters = std::array::from_fn(|i| self.upstream_counters[i].get_or_create(&labels).clone());
        (counters, self.upstream_subscribers.get_or_create(&labels).clone())
    }

    /// Counts a reset.
    pub fn reset(&self, cause: ResetCause) {
        self.resets.get_or_create(&vec![("cause", cause.as_str().to_owned())]).inc();
    }

    /// Counts a resume by its outcome.
    pub fn resume(&self, outcome: ResumeOutcome) {
        self.resumes.get_or_create(&vec![("outcome", outcome.as_str().to_owned())]).inc();
    }

    /// Counts an error frame by its Status reason.
    pub fn error(&self, reason: &str) {
        self.errors.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    /// Counts a panic contained at the boundary of a `task`.
    pub fn task_panic(&self, task: TaskKind) {
        self.task_panics.get_or_create(&vec![("task", task.as_str().to_owned())]).inc();
    }

    /// Counts a config reload by its result.
    pub fn config_reload(&self, result: &'static str) {
        self.config_reloads.get_or_create(&vec![("result", result.to_owned())]).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_cause_labels() {
        let m = Metrics::default();
        m.connections.inc();
        m.reset(ResetCause::Overflow);
        m.resume(ResumeOutcome::Inventory);
        m.error("Forbidden");
        m.task_panic(TaskKind::CatchUp);
        let text = m.render();
        assert!(text.contains("kubemux_connections 1"), "{text}");
        assert!(text.contains("kubemux_resets_total{cause=\"overflow\"} 1"), "{text}");
        assert!(text.contains("kubemux_resumes_total{outcome=\"inventory\"} 1"), "{text}");
        assert!(text.contains("kubemux_errors_total{reason=\"Forbidden\"} 1"), "{text}");
        assert!(text.contains("kubemux_task_panics_total{task=\"catch_up\"} 1"), "{text}");
    }
}
