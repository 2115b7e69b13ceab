//! Open port-forwards and the faults tests inject into them (`/_sim/portforward`): which
//! connections and stream pairs are open, cutting them, black-holing them, an idle timeout,
//! withholding SYN_REPLY (SPDY), refusing a target port.
//!
//! Sessions and relays own their state; this table only holds, per open connection or pair,
//! where it goes and the token that cuts it. Entries leave with their [`Registration`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Which transport a port-forward connection came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The legacy channel protocol over a WebSocket (`v4.channel.k8s.io`): browsers, kube-rs,
    /// the Python client, kubemux's forwards.
    Channel,
    /// The WebSocket tunnel, `SPDY/3.1+portforward.k8s.io` (kubectl's first try).
    WebSocket,
    /// `POST` + `Upgrade: SPDY/3.1` (kubectl's fallback).
    Upgrade,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Channel => "channel",
            Transport::WebSocket => "websocket",
            Transport::Upgrade => "spdy",
        }
    }
}

/// Which open forwards a cut or a refusal is about: every one, a namespace's, or one pod's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this pod.
    pub pod: Option<String>,
}

impl PodFilter {
    fn matches(&self, namespace: &str, pod: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace) && self.pod.as_deref().is_none_or(|p| p == pod)
    }

    fn to_json(&self) -> Value {
        json!({"namespace": self.namespace, "pod": self.pod})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Connection,
    Stream { port: u16, data_stream: u32 },
}

struct Entry {
    /// Who opened it (the authenticated user's name).
    user: String,
    namespace: String,
    pod: String,
    transport: Transport,
    kind: EntryKind,
    cut: CancellationToken,
    blackhole: CancellationToken,
}

#[derive(Default)]
struct Inner {
    entries: BTreeMap<u64, Entry>,
    refused: Vec<(PodFilter, u16)>,
}

/// See the module docs.
pub struct PortForwards {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    /// Connections ever opened (upgrades, of any transport).
    upgrades: AtomicU64,
    withhold_replies: AtomicU32,
    idle_timeout: watch::Sender<Option<Duration>>,
}

impl Default for PortForwards {
    fn default() -> Self {
        PortForwards { inner: Mutex::default(), next_id: AtomicU64::new(0), upgrades: AtomicU64::new(0), withhold_replies: AtomicU32::new(0), idle_timeout: watch::channel(None).0 }
    }
}

/// An open connection or stream pair, listed until this is dropped.
pub(crate) struct Registration {
    table: Arc<PortForwards>,
    id: u64,
    /// Cancelled by a cut.
    pub cut: CancellationToken,
    /// Cancelled by a black hole: the connection stays open but reads and writes nothing.
    pub blackhole: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.table.lock().entries.remove(&self.id);
    }
}

impl PortForwards {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change is one insert or remove: a poisoned table is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>, user: &str, namespace: &str, pod: &str, transport: Transport, kind: EntryKind) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (cut, blackhole) = (CancellationToken::new(), CancellationToken::new());
        let entry = Entry { user: user.to_owned(), namespace: namespace.to_owned(), pod: pod.to_owned(), transport, kind, cut: cut.clone(), blackhole: blackhole.clone() };
        self.lock().entries.insert(id, entry);
        Registration { table: self.clone(), id, cut, blackhole }
    }

    /// Lists a connection by `user` to `namespace/pod` (an upgrade, counted).
    pub(crate) fn register_connection(self: &Arc<Self>, user: &str, namespace: &str, pod: &str, transport: Transport) -> Registration {
        self.upgrades.fetch_add(1, Ordering::Relaxed);
        self.register(user, namespace, pod, transport, EntryKind::Connection)
    }

    /// Lists one forwarded stream pair.
    pub(crate) fn register_stream(self: &Arc<Self>, user: &str, namespace: &str, pod: &str, transport: Transport, port: u16, data_stream: u32) -> Registration {
        self.register(user, namespace, pod, transport, EntryKind::Stream { port, data_stream })
    }

    /// For `/_sim/stats`: `{"portForwards": open connections, "portForwardsByUser": {user:
    /// open connections}, "portForwardUpgradesTotal": connections ever opened}`, so a test can
    /// tell that no client left an upstream port-forward behind.
    pub fn stats(&self) -> Value {
        let table = self.lock();
        let mut by_user: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in table.entries.values().filter(|e| e.kind == EntryKind::Connection) {
            *by_user.entry(entry.user.as_str()).or_default() += 1;
        }
        json!({
            "portForwards": by_user.values().sum::<u64>(),
            "portForwardsByUser": by_user,
            "portForwardUpgradesTotal": self.upgrades.load(Ordering::Relaxed),
        })
    }

    fn cut(&self, filter: &PodFilter, connections: bool) -> usize {
        let table = self.lock();
        let mut count = 0;
        for entry in table.entries.values() {
            if (entry.kind == EntryKind::Connection) == connections && filter.matches(&entry.namespace, &entry.pod) {
                entry.cut.cancel();
                count += 1;
            }
        }
        count
    }

    /// Resets the matching open stream pairs (RST_STREAM on both, the pod connection closed),
    /// as a kubelet whose copy failed does. Returns how many.
    pub fn cut_streams(&self, filter: &PodFilter) -> usize {
        self.cut(filter, false)
    }

    /// Drops the matching SPDY connections without a word (no GOAWAY, no close frame), as a
    /// load balancer does. Returns how many.
    pub fn cut_connections(&self, filter: &PodFilter) -> usize {
        self.cut(filter, true)
    }

    /// The matching open connections go silent (channel-protocol WebSockets): kept open, but
    /// nothing read (no pong either) and nothing written, as behind a load balancer that lost
    /// its state or a network partition. New connections are not affected. Returns how many.
    pub fn blackhole(&self, filter: &PodFilter) -> usize {
        let table = self.lock();
        let matching: Vec<&Entry> = table.entries.values().filter(|e| e.kind == EntryKind::Connection && filter.matches(&e.namespace, &e.pod)).collect();
        for entry in &matching {
            entry.blackhole.cancel();
        }
        matching.len()
    }

    /// Stream pairs (and channel-protocol connections) that carry no byte either way for
    /// `timeout` are reset; `None` turns it off.
    /// Applies to open pairs at once.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.idle_timeout.send_replace(timeout);
    }

    /// Follows the idle timeout.
    pub(crate) fn idle_timeout(&self) -> watch::Receiver<Option<Duration>> {
        self.idle_timeout.subscribe()
    }

    /// The next `count` SYN_STREAMs get no SYN_REPLY (kubectl gives up after 30 s with
    /// "Timeout occurred"); replaces an earlier count.
    pub fn withhold_replies(&self, count: u32) {
        self.withhold_replies.store(count, Ordering::Relaxed);
    }

    /// Whether this SYN_STREAM's reply is withheld (using up one of the count).
    pub(crate) fn take_withheld(&self) -> bool {
        self.withhold_replies.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// Connections to `port` of the matching pods are refused, as when nothing listens there.
    pub fn refuse(&self, filter: PodFilter, port: u16) {
        self.lock().refused.push((filter, port));
    }

    /// Lifts every refusal.
    pub fn clear_refusals(&self) {
        self.lock().refused.clear();
    }

    /// Whether `port` of `namespace/pod` is refused by a hook.
    pub(crate) fn is_refused(&self, namespace: &str, pod: &str, port: u16) -> bool {
        self.lock().refused.iter().any(|(filter, p)| *p == port && filter.matches(namespace, pod))
    }

    /// For `GET /_sim/portforward`: `{"connections": [{namespace, pod, transport}],
    /// "streams": [{namespace, pod, transport, port, dataStream}], "idleTimeoutSeconds",
    /// "withheldReplies", "refused": [{namespace, pod, port}]}`.
    pub fn to_json(&self) -> Value {
        let table = self.lock();
        let mut connections = Vec::new();
        let mut streams = Vec::new();
        for entry in table.entries.values() {
            let mut v = json!({"namespace": entry.namespace, "pod": entry.pod, "transport": entry.transport.name()});
            match entry.kind {
                EntryKind::Connection => connections.push(v),
                EntryKind::Stream { port, data_stream } => {
                    v["port"] = json!(port);
                    v["dataStream"] = json!(data_stream);
                    streams.push(v);
                }
            }
        }
        let refused: Vec<Value> = table
            .refused
            .iter()
            .map(|(filter, port)| {
                let mut v = filter.to_json();
                v["port"] = json!(port);
                v
            })
            .collect();
        json!({
            "connections": connections,
            "streams": streams,
            "idleTimeoutSeconds": self.idle_timeout.borrow().map(|d| d.as_secs_f64()),
            "withheldReplies": self.withhold_replies.load(Ordering::Relaxed),
            "refused": refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_reach_only_what_they_name_and_entries_leave_with_their_registration() {
        let table = Arc::new(PortForwards::default());
        let conn = table.register_connection("alice", "ns", "a", Transport::Upgrade);
        let other = table.register_connection("bob", "ns", "b", Transport::Channel);
        let a = table.register_stream("alice", "ns", "a", Transport::Upgrade, 80, 3);
        let b = table.register_stream("alice", "ns", "b", Transport::WebSocket, 80, 3);
        assert_eq!(table.stats(), json!({"portForwards": 2, "portForwardsByUser": {"alice": 1, "bob": 1}, "portForwardUpgradesTotal": 2}));
        let pod_a = PodFilter { namespace: Some("ns".into()), pod: Some("a".into()) };
        assert_eq!(table.cut_streams(&pod_a), 1);
        assert!(a.cut.is_cancelled() && !b.cut.is_cancelled() && !conn.cut.is_cancelled());
        assert_eq!(table.cut_connections(&PodFilter::default()), 2);
        assert!(conn.cut.is_cancelled());
        drop((a, conn, other));
        assert_eq!(table.stats(), json!({"portForwards": 0, "portForwardsByUser": {}, "portForwardUpgradesTotal": 2}));
        let listed = table.to_json();
        assert_eq!(listed["streams"], json!([{"namespace": "ns", "pod": "b", "transport": "websocket", "port": 80, "dataStream": 3}]));
        assert_eq!(listed["connections"], json!([]));
    }

    #[test]
    fn withheld_replies_count_down_and_refusals_match_pods() {
        let table = PortForwards::default();
        table.withhold_replies(2);
        assert!(table.take_withheld() && table.take_withheld() && !table.take_withheld());
        table.refuse(PodFilter { namespace: None, pod: Some("a".into()) }, 80);
        assert!(table.is_refused("x", "a", 80) && !table.is_refused("x", "b", 80) && !table.is_refused("x", "a", 81));
        table.clear_refusals();
        assert!(!table.is_refused("x", "a", 80));
    }
}
