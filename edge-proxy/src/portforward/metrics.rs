//! Port-forward metrics, registered in the proxy's registry by [`crate::metrics::Metrics`].
//! Labels are transports and HTTP codes only: never a pod, a port, a user or a token.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters and the gauge of port-forwards through the proxy.
#[derive(Debug, Default)]
pub struct PortForwardMetrics {
    open: Gauge,
    opened: Family<Labels, Counter>,
    refused: Family<Labels, Counter>,
}

impl PortForwardMetrics {
    /// Adds every metric to `registry` (under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("portforward_open", "Port-forward connections relayed now", self.open.clone());
        registry.register("portforward_connections", "Port-forward connections upgraded on both sides, by transport (channel, tunnel, spdy)", self.opened.clone());
        registry.register("portforward_refused", "Port-forward requests answered without an upgrade, by transport and HTTP code", self.refused.clone());
    }

    /// Counts a connection upgraded on both sides.
    pub fn opened(&self, transport: &str) {
        self.opened.get_or_create(&vec![("transport", transport.to_owned())]).inc();
    }

    /// Counts a refusal (a bad `ports` list, or the cluster's own answer).
    pub fn refused(&self, transport: &str, code: u16) {
        self.refused.get_or_create(&vec![("transport", transport.to_owned()), ("code", code.to_string())]).inc();
    }

    /// Counts a relay as open until the guard is dropped, however the relay ends.
    pub fn open_guard(self: &Arc<Self>) -> OpenGuard {
        self.open.inc();
        OpenGuard(self.clone())
    }
}

/// Holds one count of `kubemux_portforward_open`.
pub struct OpenGuard(Arc<PortForwardMetrics>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}
