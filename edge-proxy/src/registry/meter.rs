//! The cost meter of one upstream watch: what it asked of the API server, what it received from
//! it, and how many subscriptions share it. A `/mux` client reads it with `stats`
//! (`docs/PROTOCOL.md` §2); `/metrics` has it summed per cluster and resource.
//!
//! The counters are written by the upstream task alone (requests, events, bytes, resets) and
//! read by any session; the subscriber count changes as subscriptions come and go. The
//! `/metrics` series of a watch are created when the API server first answers one of its lists,
//! so a watch of a resource that does not exist adds no label set: the sets are bounded by the
//! resources the clusters serve, whatever clients ask for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{Metrics, UpstreamSeries};

/// One upstream watch's counters (see the module docs).
#[derive(Debug)]
pub struct WatchMeter {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    resets: AtomicU64,
    /// The subscriptions sharing the watch, and the `/metrics` gauge they are added to once the
    /// series exist; under one lock so that the gauge never misses or doubles a change.
    subscribers: Mutex<(u64, Option<Gauge>)>,
    exported: OnceLock<[Counter; 4]>,
    metrics: Arc<Metrics>,
    labels: UpstreamSeries,
}

/// What [`WatchMeter::report`] reads: the `upstream` object of a `stats` frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpstreamStats {
    /// Subscriptions (of every connection) sharing this upstream watch.
    pub subscribers: u64,
    /// Requests made to the API server: list pages, watches and catch-ups.
    pub requests: u64,
    /// Objects received: list items and watch events.
    pub events: u64,
    /// Bytes received: list page bodies and watch lines, as the API server sent them.
    pub bytes: u64,
    /// Relists after the watch's version was lost, mostly to a 410 Expired (each a `reset` to
    /// every subscriber it served).
    pub resets: u64,
}

impl WatchMeter {
    /// A meter for a watch of `resource` (`pods`, `deployments.apps`) on `cluster`.
    pub fn new(metrics: Arc<Metrics>, cluster: &str, resource: String) -> Arc<WatchMeter> {
        Arc::new(WatchMeter {
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            subscribers: Mutex::new((0, None)),
            exported: OnceLock::new(),
            metrics,
            labels: UpstreamSeries { cluster: cluster.to_owned(), resource },
        })
    }

    fn add(&self, counter: &AtomicU64, index: usize, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        if let Some(series) = self.exported.get() {
            series[index].inc_by(n);
        }
    }

    /// A request to the API server.
    pub fn request(&self) {
        self.add(&self.requests, 0, 1);
    }

    /// Objects received: a list page's items, or a watch event.
    pub fn received_objects(&self, objects: u64) {
        self.add(&self.events, 1, objects);
    }

    /// Bytes received: a list page's body, or a watch line.
    pub fn received_bytes(&self, bytes: u64) {
        self.add(&self.bytes, 2, bytes);
    }

    /// A relist: the version was lost (410 Expired, or an event the cache cannot place).
    pub fn reset(&self) {
        self.add(&self.resets, 3, 1);
    }

    /// The API server answered a list: the watch's `/metrics` series exist from now on, with
    /// what was counted so far. Called by the upstream task, the counters' only writer, so
    /// nothing is counted twice or lost.
    pub fn export(&self) {
        if self.exported.get().is_some() {
            return;
        }
        let series = self.metrics.upstream_series(&self.labels);
        for (counter, value) in series.0.iter().zip([&self.requests, &self.events, &self.bytes, &self.resets]) {
            counter.inc_by(value.load(Ordering::Relaxed));
        }
        let mut subscribers = self.subscribers_slot();
        series.1.inc_by(subscribers.0 as i64);
        subscribers.1 = Some(series.1);
        drop(subscribers);
        let _ = self.exported.set(series.0);
    }

    fn subscribers_slot(&self) -> std::sync::MutexGuard<'_, (u64, Option<Gauge>)> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A subscription joined (`1`) or left (`-1`).
    pub fn subscribers_changed(&self, delta: i64) {
        let mut subscribers = self.subscribers_slot();
        subscribers.0 = subscribers.0.saturating_add_signed(delta);
        if let Some(gauge) = &subscribers.1 {
            gauge.inc_by(delta);
        }
    }

    /// The counters now.
    pub fn report(&self) -> UpstreamStats {
        UpstreamStats {
            subscribers: self.subscribers_slot().0,
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }
}

/// The resource a collection path names, as Kubernetes writes it: `pods` for `/api/v1/pods`,
/// `deployments.apps` for `/apis/apps/v1/namespaces/x/deployments`.
pub fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let resource = segments.last().copied().unwrap_or_default();
    match segments.as_slice() {
        ["apis", group, ..] => format!("{resource}.{group}"),
        _ => resource.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_as_kubernetes_names_them() {
        assert_eq!(resource_of("/api/v1/pods"), "pods");
        assert_eq!(resource_of("/api/v1/namespaces/demo/configmaps"), "configmaps");
        assert_eq!(resource_of("/apis/apps/v1/namespaces/demo/deployments"), "deployments.apps");
        assert_eq!(resource_of("/apis/networking.k8s.io/v1/ingresses"), "ingresses.networking.k8s.io");
    }

    /// Nothing reaches `/metrics` before the API server answered a list; then everything counted
    /// so far does, once, and so does every later change.
    #[test]
    fn the_series_appear_at_the_first_list_with_what_was_counted() {
        let metrics = Arc::new(Metrics::default());
        let meter = WatchMeter::new(metrics.clone(), "prod", resource_of("/apis/apps/v1/deployments"));
        meter.subscribers_changed(1);
        meter.request();
        meter.received_bytes(120);
        assert!(!metrics.render().contains("kubemux_upstream_requests"), "{}", metrics.render());
        meter.subscribers_changed(1);
        meter.export();
        meter.request();
        meter.received_objects(3);
        meter.received_bytes(900);
        meter.reset();
        meter.subscribers_changed(-1);
        meter.export();
        let text = metrics.render();
        for line in [
            r#"kubemux_upstream_requests_total{cluster="prod",resource="deployments.apps"} 2"#,
            r#"kubemux_upstream_objects_total{cluster="prod",resource="deployments.apps"} 3"#,
            r#"kubemux_upstream_bytes_total{cluster="prod",resource="deployments.apps"} 1020"#,
            r#"kubemux_upstream_relists_total{cluster="prod",resource="deployments.apps"} 1"#,
            r#"kubemux_upstream_subscribers{cluster="prod",resource="deployments.apps"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(meter.report(), UpstreamStats { subscribers: 1, requests: 2, events: 3, bytes: 1020, resets: 1 });
    }
}
