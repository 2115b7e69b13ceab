//! The forwards as a `/mux` collection (`docs/PROTOCOL.md` §10): a subscription to
//! `/apis/kubemux.dev/v1[/namespaces/{ns}]/forwards` gets the forwards of its cluster as
//! Kubernetes-shaped `Forward` objects, with a snapshot, events, `synced` and resume, like any
//! watch, but from the proxy's own state instead of a cluster.
//!
//! One task per [`Forwards`] ([`Feed`]'s driver) turns the forwards' state into a numbered
//! history: it wakes on every status change and every reload, and on a short tick for the byte
//! and connection counters, which change without telling anyone; a change of the counters alone
//! is published at most once per [`COUNTER_INTERVAL`] per forward. Versions are
//! `{epoch}-{n}`: `epoch` fixed when the feed starts (so once per process), `n` counting
//! changes. The last [`RING`] changes are kept, so a client resuming from a version of this
//! epoch gets what it missed and `synced`; any other version gets `reset` and a snapshot.
//!
//! One task per subscription reads that history, keeps what its scope shows (cluster,
//! namespace, `metadata.name`, and in token mode the namespaces the token may port-forward in:
//! the SelfSubjectAccessReview of `/forwards/{name}/`), and writes to the subscription's
//! [`Sink`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use kubemux_protocol::frames::{EventType, Status, WatchQuery};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{Forwards, access};
use super::spec::{PortRef, Probe};
use super::worker;
use crate::clusters::Cluster;
use crate::identity::Identity;
use crate::registry::Sink;

/// The API group and version of `Forward` objects.
pub const API_VERSION: &str = "kubemux.dev/v1";

/// Changes kept for resumes.
pub const RING: usize = 512;

/// A forward whose counters alone change is published at most this often.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(1);

/// How often the driver looks at the counters.
const COUNTER_TICK: Duration = Duration::from_millis(250);

/// How long a subscriber's access review of a namespace may take (the same 10 s the worker's
/// preflight used before `preflightTimeout`).
const ACCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// Status fields that change with traffic alone.
const COUNTER_FIELDS: [&str; 3] = ["connections", "bytesIn", "bytesOut"];

/// What a forwards subscription shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `/namespaces/{ns}/forwards`: that namespace only.
    pub namespace: Option<String>,
    /// `fieldSelector=metadata.name=X`: that forward only.
    pub name: Option<String>,
}

/// `Some` when `path` is the forwards collection (then the scope, or why the query cannot be
/// served); `None` for any other path.
pub fn scope(path: &str, query: &WatchQuery) -> Option<Result<Scope, Status>> {
    let rest = path.strip_prefix("/apis/kubemux.dev/v1/")?;
    let namespace = match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["forwards"] => None,
        ["namespaces", ns, "forwards"] => Some((*ns).to_owned()),
        _ => return None,
    };
    Some(selectors(query).map(|name| Scope { namespace, name }))
}

/// The forward a query's selectors pick, if any: forwards have no labels, and only
/// `metadata.name` can be selected on.
fn selectors(query: &WatchQuery) -> Result<Option<String>, Status> {
    let bad = |what: String| Status::failure(400, "BadRequest", format!("{what}: forwards can only be selected with fieldSelector=metadata.name=NAME"));
    if query.label_selector.as_deref().is_some_and(|s| !s.trim().is_empty()) {
        return Err(bad("forwards have no labels".to_owned()));
    }
    match query.field_selector.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(selector) => match selector.strip_prefix("metadata.name=").map(|n| n.trim_start_matches('=')) {
            Some(name) if !name.is_empty() && !name.contains(',') => Ok(Some(name.to_owned())),
            _ => Err(bad(format!("unsupported fieldSelector {selector:?}"))),
        },
    }
}

/// One published change.
#[derive(Debug, Clone)]
struct Change {
    n: u64,
    /// The object before (none for an addition).
    prev: Option<Arc<Value>>,
    /// The object after; for a deletion, its last state at the deletion's version.
    object: Arc<Value>,
    deleted: bool,
}

/// A forward as last published.
#[derive(Debug)]
struct Current {
    /// Without `metadata.resourceVersion`, to compare with.
    bare: Value,
    object: Arc<Value>,
    published: Instant,
}

/// The history: the forwards as last published, and the last changes.
#[derive(Debug, Default)]
struct History {
    n: u64,
    objects: BTreeMap<String, Current>,
    ring: VecDeque<Change>,
}

/// What a subscriber at some version is sent.
#[derive(Debug)]
enum Plan {
    /// The changes since, then nothing else (live) or `synced` (a resume).
    Replay(Vec<Change>, u64),
    /// Everything there is (`reset` first unless it is the first answer).
    Snapshot(Vec<Arc<Value>>, u64),
}

/// `a` and `b` differ in their counters only.
fn counters_only(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
            for field in COUNTER_FIELDS {
                status.remove(field);
            }
        }
        v
    };
    strip(a) == strip(b)
}

fn stamped(bare: &Value, version: &str) -> Value {
    let mut object = bare.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("resourceVersion".to_owned(), Value::String(version.to_owned()));
    }
    object
}

impl History {
    fn push(&mut self, change: Change) {
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back(change);
    }

    /// Publishes what differs between `fresh` (every forward now, without versions) and what
    /// was published: additions, deletions and changes at once, a change of the counters
    /// alone only if the forward's last publication is [`COUNTER_INTERVAL`] old. Whether
    /// anything was published.
    fn update(&mut self, epoch: &str, fresh: BTreeMap<String, Value>, now: Instant) -> bool {
        let before = self.n;
        let gone: Vec<String> = self.objects.keys().filter(|name| !fresh.contains_key(*name)).cloned().collect();
        for name in gone {
            let Some(current) = self.objects.remove(&name) else { continue };
            self.n += 1;
            let object = Arc::new(stamped(&current.bare, &format!("{epoch}-{}", self.n)));
            let n = self.n;
            self.push(Change { n, prev: Some(current.object), object, deleted: true });
        }
        for (name, bare) in fresh {
            let prev = match self.objects.get(&name) {
                Some(current) if current.bare == bare => continue,
                Some(current) if counters_only(&current.bare, &bare) && now.saturating_duration_since(current.published) < COUNTER_INTERVAL => continue,
                Some(current) => Some(current.object.clone()),
                None => None,
            };
            self.n += 1;
            let object = Arc::new(stamped(&bare, &format!("{epoch}-{}", self.n)));
            let n = self.n;
            self.push(Change { n, prev, object: object.clone(), deleted: false });
            self.objects.insert(name, Current { bare, object, published: now });
        }
        self.n != before
    }

    /// What a subscriber at `since` (none: nothing yet) is sent.
    fn plan(&self, since: Option<u64>) -> Plan {
        let oldest = self.n - self.ring.len() as u64;
        match since {
            Some(k) if k <= self.n && k >= oldest => Plan::Replay(self.ring.iter().filter(|c| c.n > k).cloned().collect(), self.n),
            _ => Plan::Snapshot(self.objects.values().map(|c| c.object.clone()).collect(), self.n),
        }
    }
}

/// `n` of a version of `epoch`; `None` for a version of another epoch or not one of ours.
fn parse_version(epoch: &str, version: &str) -> Option<u64> {
    let (e, n) = version.rsplit_once('-')?;
    (e == epoch).then(|| n.parse().ok()).flatten()
}

/// The forwards' published history, shared by every forwards subscription.
#[derive(Debug)]
pub struct Feed {
    epoch: String,
    history: Mutex<History>,
    /// The last `n`, for subscribers to wait on.
    version: watch::Sender<u64>,
}

impl Feed {
    fn new() -> Feed {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        Feed { epoch: nanos.to_string(), history: Mutex::new(History::default()), version: watch::Sender::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn version_of(&self, n: u64) -> String {
        format!("{}-{n}", self.epoch)
    }

    fn update(&self, fresh: BTreeMap<String, Value>) {
        let published = {
            let mut history = self.lock();
            history.update(&self.epoch, fresh, Instant::now()).then_some(history.n)
        };
        if let Some(n) = published {
            self.version.send_replace(n);
        }
    }

    /// Serves one subscription until it is dropped: the forwards of `cluster` in `scope`, as
    /// `identity` may see them, resuming from `resume`.
    pub fn subscribe(self: &Arc<Self>, subscriber: Subscriber, sink: Arc<Sink>) -> FeedSubscription {
        let resync = Arc::new(Notify::new());
        let task = tokio::spawn(serve(self.clone(), subscriber, sink, resync.clone())).abort_handle();
        FeedSubscription { task, resync }
    }
}

/// Who subscribes, to what.
pub struct Subscriber {
    /// The subscription's cluster: the forwards of that cluster are shown.
    pub cluster: Arc<Cluster>,
    /// As whom: in token mode, the forwards of namespaces the token may port-forward in.
    pub identity: Identity,
    /// Which forwards.
    pub scope: Scope,
    /// The version the client holds.
    pub resume: Option<String>,
}

/// A live forwards subscription; dropping it ends it.
#[derive(Debug)]
pub struct FeedSubscription {
    task: tokio::task::AbortHandle,
    resync: Arc<Notify>,
}

impl FeedSubscription {
    /// Asks for `reset` and a snapshot (the connection's queue overflowed and drained).
    pub fn resync(&self) {
        self.resync.notify_one();
    }
}

impl Drop for FeedSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Which namespaces a subscriber may see, asked once each.
struct Access {
    cluster: Arc<Cluster>,
    identity: Identity,
    known: HashMap<String, bool>,
}

impl Access {
    /// Asks about every namespace of `objects` not asked about yet; a namespace whose check
    /// gets no answer stays hidden (and is asked again next time), with a non-fatal error.
    async fn learn(&mut self, objects: Vec<Arc<Value>>, sink: &Sink) {
        if self.identity == Identity::Proxy {
            return;
        }
        let mut missing = Vec::new();
        for object in &objects {
            if let Some(namespace) = object.pointer("/metadata/namespace").and_then(Value::as_str)
                && !self.known.contains_key(namespace)
                && !missing.iter().any(|m| m == namespace)
            {
                missing.push(namespace.to_owned());
            }
        }
        for namespace in missing {
            match self.check(&namespace).await {
                Ok(allowed) => {
                    self.known.insert(namespace, allowed);
                }
                Err(why) => sink.error(false, &Status::failure(503, "ServiceUnavailable", format!("the forwards of namespace {namespace:?} are hidden: {why}"))),
            }
        }
    }

    async fn check(&self, namespace: &str) -> Result<bool, String> {
        let client = self.cluster.client(&self.identity).map_err(|e| format!("no client for cluster {:?}: {e}", self.cluster.name))?;
        // The one access review of `forward::access`, as `/forwards/{name}/…` asks it.
        match access::review(&client, &self.cluster.name, namespace, &[access::PORT_FORWARD], ACCESS_TIMEOUT).await {
            access::Verdict::Allowed => Ok(true),
            access::Verdict::Denied(_) => Ok(false),
            access::Verdict::Unanswered(why) => Err(why),
        }
    }

    fn allows(&self, namespace: &str) -> bool {
        self.identity == Identity::Proxy || self.known.get(namespace).copied().unwrap_or(false)
    }
}

struct View {
    cluster: String,
    scope: Scope,
    access: Access,
}

impl View {
    fn shows(&self, object: &Value) -> bool {
        let field = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
        let namespace = field("/metadata/namespace");
        field("/spec/cluster") == self.cluster
            && self.scope.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.scope.name.as_deref().is_none_or(|name| name == field("/metadata/name"))
            && self.access.allows(namespace)
    }

    /// The event a change is to this view, if any: an object can come into or leave the view.
    fn event(&self, change: &Change) -> Option<EventType> {
        let was = change.prev.as_deref().is_some_and(|prev| self.shows(prev));
        let is = !change.deleted && self.shows(&change.object);
        match (was, is) {
            (false, true) => Some(EventType::Added),
            (true, true) => Some(EventType::Modified),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        }
    }
}

fn encoded(object: &Value) -> Arc<str> {
    Arc::from(object.to_string())
}

/// How a plan is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The first answer to a `watch` without a version.
    First,
    /// The first answer to a `watch` with a version.
    Resume,
    /// Later changes.
    Live,
    /// After an overflow.
    Resync,
}

async fn serve(feed: Arc<Feed>, subscriber: Subscriber, sink: Arc<Sink>, resync: Arc<Notify>) {
    let Subscriber { cluster, identity, scope, resume } = subscriber;
    let mut view = View { cluster: cluster.name.clone(), scope, access: Access { cluster, identity, known: HashMap::new() } };
    if let Some(namespace) = view.scope.namespace.clone()
        && view.access.identity != Identity::Proxy
    {
        match view.access.check(&namespace).await {
            Ok(true) => {
                view.access.known.insert(namespace, true);
            }
            Ok(false) => {
                let message = format!("this token may not create pods/portforward in namespace {namespace:?} of cluster {:?}, so it may not see its forwards", view.cluster);
                return sink.error(true, &Status::failure(403, "Forbidden", message));
            }
            Err(why) => return sink.error(true, &Status::failure(503, "ServiceUnavailable", format!("could not check this token's permissions: {why}"))),
        }
    }
    let mut version = feed.version.subscribe();
    let (mut answer, mut since) = match resume.as_deref() {
        None => (Answer::First, None),
        Some(v) => (Answer::Resume, Some(parse_version(&feed.epoch, v).unwrap_or(u64::MAX))),
    };
    loop {
        version.mark_unchanged();
        let plan = feed.lock().plan(since);
        since = Some(send(&feed, &mut view, &sink, plan, answer).await);
        tokio::select! {
            changed = version.changed() => {
                if changed.is_err() {
                    return;
                }
                answer = Answer::Live;
            }
            () = resync.notified() => {
                answer = Answer::Resync;
                since = None;
            }
        }
    }
}

/// Sends `plan` as `answer` says; the version the subscriber is at after it.
async fn send(feed: &Feed, view: &mut View, sink: &Sink, plan: Plan, answer: Answer) -> u64 {
    match plan {
        Plan::Replay(changes, n) => {
            view.access.learn(changes.iter().flat_map(|c| c.prev.iter().chain([&c.object])).cloned().collect(), sink).await;
            for change in &changes {
                if let Some(event_type) = view.event(change) {
                    sink.event(event_type, &change.object.to_string(), Some(&feed.version_of(change.n)));
                }
            }
            if answer != Answer::Live {
                sink.synced(&feed.version_of(n));
            }
            n
        }
        Plan::Snapshot(objects, n) => {
            view.access.learn(objects.clone(), sink).await;
            let shown = objects.iter().filter(|o| view.shows(o)).map(|o| encoded(o)).collect();
            if answer == Answer::First {
                sink.snapshot(shown, &feed.version_of(n));
            } else {
                sink.reset_with_snapshot(shown, &feed.version_of(n));
            }
            n
        }
    }
}

/// Whether the forward's target looks like a web app: an HTTP probe, or a port named or
/// numbered as HTTP ports usually are. The web app shows an "open" link for those.
fn looks_http(probe: Option<&Probe>, port: &PortRef) -> bool {
    match (probe, port) {
        (Some(Probe::Http { .. }), _) => true,
        (_, PortRef::Name(name)) => name.starts_with("http") || name == "web",
        (_, PortRef::Number(n)) => matches!(n, 80 | 443 | 3000 | 8000 | 8080 | 8443 | 9090),
    }
}

impl Forwards {
    /// The forwards' feed, started on first use.
    pub fn feed(self: &Arc<Self>) -> Arc<Feed> {
        self.feed
            .get_or_init(|| {
                let feed = Arc::new(Feed::new());
                // Subscribers from the first one see the forwards there are.
                feed.update(self.objects());
                tokio::spawn(drive(feed.clone(), Arc::downgrade(self), self.roster.subscribe()));
                feed
            })
            .clone()
    }

    /// Every forward as a `Forward` object without its version.
    fn objects(&self) -> BTreeMap<String, Value> {
        let running = self.lock();
        running
            .iter()
            .map(|(name, r)| {
                let spec = &r.spec;
                let mut status = r.status.borrow().to_json(spec, &r.counters);
                if let Some(status) = status.as_object_mut() {
                    for moved in ["name", "cluster", "namespace", "target", "port", "bind"] {
                        status.remove(moved);
                    }
                }
                let object = json!({
                    "apiVersion": API_VERSION,
                    "kind": "Forward",
                    "metadata": {"name": name, "namespace": spec.namespace},
                    "spec": {
                        "cluster": spec.cluster,
                        "target": spec.target.to_string(),
                        "port": spec.port.to_string(),
                        "bind": spec.bind.to_string(),
                        "localPort": spec.local_port,
                        "http": looks_http(spec.probe.as_ref(), &spec.port),
                    },
                    "status": status,
                });
                (name.clone(), object)
            })
            .collect()
    }

    fn status_receivers(&self) -> Vec<watch::Receiver<worker::ForwardStatus>> {
        self.lock().values().map(|r| r.status.subscribe()).collect()
    }
}

/// Publishes the forwards' changes until the manager goes.
async fn drive(feed: Arc<Feed>, forwards: Weak<Forwards>, mut roster: watch::Receiver<u64>) {
    let changed = Arc::new(Notify::new());
    let mut watchers = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(COUNTER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resubscribe = true;
    loop {
        {
            let Some(forwards) = forwards.upgrade() else { return };
            if resubscribe {
                watchers.abort_all();
                for mut status in forwards.status_receivers() {
                    let changed = changed.clone();
                    watchers.spawn(async move {
                        while status.changed().await.is_ok() {
                            changed.notify_one();
                        }
                    });
                }
            }
            feed.update(forwards.objects());
        }
        resubscribe = false;
        tokio::select! {
            moved = roster.changed() => {
                if moved.is_err() {
                    return;
                }
                resubscribe = true;
            }
            () = changed.notified() => {}
            _ = tick.tick() => {}
            Some(_) = watchers.join_next() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(name: &str, state: &str, bytes: u64) -> Value {
        json!({"apiVersion": API_VERSION, "kind": "Forward", "metadata": {"name": name, "namespace": "demo"},
            "spec": {"cluster": "demo"}, "status": {"state": state, "bytesIn": bytes, "connections": 0}})
    }

    fn all(forwards: &[Value]) -> BTreeMap<String, Value> {
        forwards.iter().map(|f| (f["metadata"]["name"].as_str().unwrap_or_default().to_owned(), f.clone())).collect()
    }

    fn kinds(plan: &Plan) -> Vec<(u64, bool, bool)> {
        match plan {
            Plan::Replay(changes, _) => changes.iter().map(|c| (c.n, c.prev.is_some(), c.deleted)).collect(),
            Plan::Snapshot(..) => panic!("expected a replay, got {plan:?}"),
        }
    }

    #[test]
    fn counter_changes_alone_are_published_at_most_once_a_second() {
        let mut history = History::default();
        let t0 = Instant::now();
        assert!(history.update("e", all(&[forward("web", "Active", 0)]), t0));
        // Bytes flowing: nothing within the second, once after it.
        for ms in [10, 300, 600, 999] {
            assert!(!history.update("e", all(&[forward("web", "Active", ms)]), t0 + Duration::from_millis(ms)), "published at {ms} ms");
        }
        assert!(history.update("e", all(&[forward("web", "Active", 1000)]), t0 + Duration::from_millis(1000)));
        assert!(!history.update("e", all(&[forward("web", "Active", 1001)]), t0 + Duration::from_millis(1100)));
        // A state change goes out at once, with the counters of the moment.
        assert!(history.update("e", all(&[forward("web", "Reconnecting", 1002)]), t0 + Duration::from_millis(1200)));
        assert_eq!(history.n, 3);
        assert_eq!(history.objects["web"].object["status"]["bytesIn"], 1002);
        assert_eq!(history.objects["web"].object["metadata"]["resourceVersion"], "e-3");
        // Nothing changed: nothing published.
        assert!(!history.update("e", all(&[forward("web", "Reconnecting", 1002)]), t0 + Duration::from_secs(5)));
    }

    #[test]
    fn versions_count_changes_and_resumes_replay_what_was_missed() {
        let mut history = History::default();
        let t = Instant::now();
        history.update("e", all(&[forward("web", "Starting", 0)]), t);
        history.update("e", all(&[forward("web", "Active", 0), forward("db", "Starting", 0)]), t);
        history.update("e", all(&[forward("db", "Starting", 0)]), t);
        assert_eq!(history.n, 4);
        // At the current version: nothing to replay.
        assert!(matches!(history.plan(Some(4)), Plan::Replay(ref c, 4) if c.is_empty()));
        // From 1: db ADDED (2), web MODIFIED (3), web DELETED (4) with its last state.
        assert_eq!(kinds(&history.plan(Some(1))), vec![(2, false, false), (3, true, false), (4, true, true)]);
        let Plan::Replay(changes, _) = history.plan(Some(3)) else { panic!("expected a replay") };
        assert_eq!(changes[0].object["metadata"]["resourceVersion"], "e-4");
        assert_eq!(changes[0].object["status"]["state"], "Active");
        // Ahead of the feed (another process's numbers): a snapshot.
        assert!(matches!(history.plan(Some(9)), Plan::Snapshot(ref o, 4) if o.len() == 1));
        assert!(matches!(history.plan(None), Plan::Snapshot(..)));
    }

    #[test]
    fn a_subscriber_behind_the_ring_gets_a_snapshot() {
        let mut history = History::default();
        let t = Instant::now();
        for i in 0..RING as u64 + 10 {
            history.update("e", all(&[forward("web", if i % 2 == 0 { "Active" } else { "Degraded" }, 0)]), t);
        }
        let n = history.n;
        assert!(matches!(history.plan(Some(n - RING as u64)), Plan::Replay(ref c, _) if c.len() == RING));
        assert!(matches!(history.plan(Some(n - RING as u64 - 1)), Plan::Snapshot(..)));
    }

    #[test]
    fn versions_of_another_epoch_are_not_resumed() {
        assert_eq!(parse_version("17", "17-4"), Some(4));
        assert_eq!(parse_version("17", "18-4"), None);
        assert_eq!(parse_version("17", "1042"), None);
        assert_eq!(parse_version("17", "17-x"), None);
    }

    #[test]
    fn the_collection_paths_and_their_selectors() {
        let none = WatchQuery::default();
        assert_eq!(scope("/apis/kubemux.dev/v1/forwards", &none), Some(Ok(Scope { namespace: None, name: None })));
        assert_eq!(scope("/apis/kubemux.dev/v1/namespaces/demo/forwards", &none), Some(Ok(Scope { namespace: Some("demo".into()), name: None })));
        assert_eq!(scope("/api/v1/pods", &none), None);
        assert_eq!(scope("/apis/kubemux.dev/v1/widgets", &none), None);
        let by_name = WatchQuery { label_selector: None, field_selector: Some("metadata.name=web".into()) };
        assert_eq!(scope("/apis/kubemux.dev/v1/forwards", &by_name), Some(Ok(Scope { namespace: None, name: Some("web".into()) })));
        let labels = WatchQuery { label_selector: Some("app=web".into()), field_selector: None };
        assert!(matches!(scope("/apis/kubemux.dev/v1/forwards", &labels), Some(Err(status)) if status.code == 400));
    }
}
