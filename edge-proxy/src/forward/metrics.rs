//! Forward metrics, registered in the proxy's registry by [`crate::metrics::Metrics`]. Labels
//! are forward names (from the operator's config, so bounded by it), states, reasons and
//! directions: never a pod, a user or a token.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::tunnel::Traffic;
use super::worker::{Reason, State};

type Labels = Vec<(&'static str, String)>;

fn recovery_histogram() -> Histogram {
    // 50 ms to about 7 minutes.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

/// Every forward's series.
#[derive(Debug)]
pub struct ForwardMetrics {
    state: Family<Labels, Gauge>,
    reconnects: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    connections: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    recovery: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for ForwardMetrics {
    fn default() -> Self {
        ForwardMetrics {
            state: Family::default(),
            reconnects: Family::default(),
            bytes: Family::default(),
            connections: Family::default(),
            restarts: Family::default(),
            recovery: Family::new_with_constructor(recovery_histogram),
        }
    }
}

impl ForwardMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("forward_state", "1 for each forward's current state (Starting, Active, Degraded, Reconnecting, Failed)", self.state.clone());
        registry.register("forward_reconnects", "Retried dials and resolutions of forwards, by forward and reason", self.reconnects.clone());
        registry.register("forward_bytes", "Bytes carried by forwards, by forward and direction (in: from the pod)", self.bytes.clone());
        registry.register("forward_connections", "Local connections a forward carries now", self.connections.clone());
        registry.register("forward_restarts", "Forward workers the watchdog restarted because they made no progress", self.restarts.clone());
        registry.register("forward_recovery_seconds", "Time from a forward leaving Active to its return", self.recovery.clone());
    }

    /// Counts a watchdog restart.
    pub fn restarted(&self, name: &str) {
        self.restarts.get_or_create(&vec![("forward", name.to_owned())]).inc();
    }

    /// The series of one forward.
    pub fn counters(self: &Arc<Self>, name: &str) -> Arc<ForwardCounters> {
        let label = |extra: &[(&'static str, &str)]| {
            let mut labels: Labels = vec![("forward", name.to_owned())];
            labels.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            labels
        };
        // One statement each: `get_or_create` returns a read guard of the family, and a second
        // call that has to insert would wait on it for ever.
        let open = self.connections.get_or_create(&label(&[])).clone();
        let bytes_in = self.bytes.get_or_create(&label(&[("direction", "in")])).clone();
        let bytes_out = self.bytes.get_or_create(&label(&[("direction", "out")])).clone();
        Arc::new(ForwardCounters { name: name.to_owned(), metrics: self.clone(), open, traffic: Traffic { bytes_in, bytes_out }, left_active: Mutex::new(None) })
    }
}

/// One forward's counters, shared by its worker and its connections.
#[derive(Debug)]
pub struct ForwardCounters {
    name: String,
    metrics: Arc<ForwardMetrics>,
    open: Gauge,
    traffic: Traffic,
    /// When the forward last left `Active`, for the recovery histogram.
    left_active: Mutex<Option<DateTime<Utc>>>,
}

impl ForwardCounters {
    fn labels(&self, key: &'static str, value: &str) -> Labels {
        vec![("forward", self.name.clone()), (key, value.to_owned())]
    }

    /// The state changed from `from` (entered at `since`) to `to`.
    pub fn entered(&self, from: State, to: State) {
        for state in State::ALL {
            self.metrics.state.get_or_create(&self.labels("state", state.as_str())).set(i64::from(state == to));
        }
        let mut left = self.left_active.lock().unwrap_or_else(|p| p.into_inner());
        if from == State::Active && to != State::Active {
            *left = Some(Utc::now());
        } else if to == State::Active
            && let Some(at) = left.take()
        {
            let seconds = (Utc::now() - at).to_std().unwrap_or_default().as_secs_f64();
            self.metrics.recovery.get_or_create(&vec![("forward", self.name.clone())]).observe(seconds);
        }
    }

    /// Counts a retry.
    pub fn reconnect(&self, reason: Reason) {
        self.metrics.reconnects.get_or_create(&self.labels("reason", reason.label())).inc();
    }

    /// Counts a connection as open until the guard drops.
    pub fn open_guard(&self) -> OpenGuard {
        self.open.inc();
        OpenGuard(self.open.clone())
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Bytes from pods.
    pub fn bytes_in(&self) -> u64 {
        self.traffic.bytes_in.get()
    }

    /// Bytes to pods.
    pub fn bytes_out(&self) -> u64 {
        self.traffic.bytes_out.get()
    }

    /// The byte counters, for connections.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The forward was removed: its state series go.
    pub fn remove(&self) {
        for state in State::ALL {
            self.metrics.state.remove(&self.labels("state", state.as_str()));
        }
    }
}

/// Holds one count of `kubemux_forward_connections`.
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
