//! Which pods a forward reaches, kept current from the registry's shared watches (never
//! polled): for a service or workload target, the owner object (by `metadata.name`) and then
//! the pods its selector picks; for a pod or selector target, the pods directly. The result is
//! published as a [`Resolution`] on a `watch` channel every time it changes.
//!
//! The resolver is a registry subscriber like a `/mux` connection: its own outbox, a sink per
//! subscription, frames decoded as a client would. A reset keeps the old view until the new
//! snapshot is complete, so a relist never leaves a moment with no pods.

use std::sync::Arc;

use kubemux_protocol::client::ObjectCache;
use kubemux_protocol::frames::{ServerMessage, Status, WatchQuery};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Env;
use super::spec::{ForwardSpec, Target, is_ready, selector_of};
use crate::identity::Identity;
use crate::mux::outbox::{Outbox, Outgoing};
use crate::registry::{Sink, Subscription, WatchKey};

/// What a forward can reach now.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    /// Every watch it needs has delivered its first snapshot.
    pub synced: bool,
    /// The service or workload (for those targets), as last seen.
    pub owner: Option<Arc<Value>>,
    /// The Ready pods, by name.
    pub ready: Vec<Arc<Value>>,
    /// Why there is nothing to reach, when that is so: the watch's own error.
    pub problem: Option<Status>,
}

/// The queue limit of a resolver's outbox: far more than the pods of any one target.
const QUEUE_LIMIT: usize = 64 * 1024 * 1024;

/// One watched collection as the resolver sees it.
#[derive(Default)]
struct Collection {
    cache: ObjectCache,
    /// A snapshot being rebuilt after `reset`; the old cache serves until it is complete.
    rebuilding: Option<ObjectCache>,
    synced: bool,
    error: Option<Status>,
}

impl Collection {
    fn apply(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::Event { event_type, object, .. } => {
                self.rebuilding.as_mut().unwrap_or(&mut self.cache).apply(*event_type, object);
            }
            ServerMessage::Reset { .. } => self.rebuilding = Some(ObjectCache::default()),
            ServerMessage::Synced { .. } => {
                if let Some(rebuilt) = self.rebuilding.take() {
                    self.cache = rebuilt;
                }
                self.synced = true;
                self.error = None;
            }
            ServerMessage::Error { status, .. } => self.error = Some(status.clone()),
            // Inventories answer `"resume":"inventory"` and patches `"deltas":true`, which the
            // resolver never sends.
            ServerMessage::Bookmark { .. } | ServerMessage::Inventory { .. } | ServerMessage::Patch { .. } | ServerMessage::Pong { .. } | ServerMessage::Stats { .. } => {}
        }
    }
}

const OWNER: &str = "owner";
const PODS: &str = "pods";

struct Resolver {
    env: Env,
    spec: Arc<ForwardSpec>,
    outbox: Arc<Outbox>,
    owner: Option<(Subscription, Arc<Sink>, Collection)>,
    pods: Option<(Subscription, Arc<Sink>, Collection)>,
    /// The label selector the pod watch runs with (for owner targets).
    selector: Option<String>,
}

impl Resolver {
    fn subscribe(&self, id: &str, path: String, query: WatchQuery) -> Option<(Subscription, Arc<Sink>, Collection)> {
        let cluster = self.env.live.snapshot().clusters.get(&self.spec.cluster)?;
        let id: Arc<str> = Arc::from(id);
        self.outbox.add_subscription(&id);
        let sink = Sink::new(self.outbox.clone(), id, self.env.metrics.clone());
        let key = WatchKey { cluster: self.spec.cluster.clone(), path, query, identity: Identity::Proxy };
        let subscription = self.env.registry.subscribe(key, cluster, sink.clone(), None);
        Some((subscription, sink, Collection::default()))
    }

    fn pods_path(&self) -> String {
        format!("/api/v1/namespaces/{}/pods", self.spec.namespace)
    }

    /// The watches a fresh start needs.
    fn start(&mut self) {
        match &self.spec.target {
            Target::Pod(name) => {
                let query = WatchQuery { label_selector: None, field_selector: Some(format!("metadata.name={name}")) };
                self.pods = self.subscribe(PODS, self.pods_path(), query);
            }
            Target::Selector(selector) => {
                let query = WatchQuery { label_selector: Some(selector.clone()), field_selector: None };
                self.pods = self.subscribe(PODS, self.pods_path(), query);
            }
            target => {
                if let Some((path, name)) = target.owner_collection(&self.spec.namespace) {
                    let query = WatchQuery { label_selector: None, field_selector: Some(format!("metadata.name={name}")) };
                    self.owner = self.subscribe(OWNER, path, query);
                }
            }
        }
    }

    fn stop_pods(&mut self) {
        if let Some((_, sink, _)) = self.pods.take() {
            sink.detach();
            self.outbox.remove_subscription(PODS);
        }
    }

    /// After the owner changed: the pod watch follows its selector.
    fn follow_owner(&mut self) {
        let Some((_, _, owner)) = &self.owner else { return };
        let object = owner.cache.items().next().cloned();
        let selector = object.as_ref().and_then(|o| selector_of(&self.spec.target, o).ok());
        if selector == self.selector {
            return;
        }
        self.stop_pods();
        self.selector = selector.clone();
        if let Some(selector) = selector {
            let query = WatchQuery { label_selector: Some(selector), field_selector: None };
            self.pods = self.subscribe(PODS, self.pods_path(), query);
        }
    }

    fn resolution(&self) -> Resolution {
        let owner_object = self.owner.as_ref().and_then(|(_, _, c)| c.cache.items().next().cloned().map(Arc::new));
        let mut problem = None;
        let mut synced = true;
        if let Some((_, _, owner)) = &self.owner {
            synced &= owner.synced;
            problem = owner.error.clone();
            if owner.synced && owner_object.is_none() && problem.is_none() {
                problem = Some(Status::failure(404, "NotFound", format!("{} not found in namespace {}", self.spec.target, self.spec.namespace)));
            } else if let Some(Err(why)) = owner_object.as_deref().map(|o| selector_of(&self.spec.target, o)) {
                problem = Some(Status::failure(422, "Invalid", why));
            }
        }
        let mut ready = Vec::new();
        match &self.pods {
            Some((_, _, pods)) => {
                synced &= pods.synced;
                problem = problem.or_else(|| pods.error.clone());
                ready = pods.cache.items().filter(|p| is_ready(p)).cloned().map(Arc::new).collect();
            }
            None if self.owner.is_none() => synced = false,
            None => {}
        }
        Resolution { synced, owner: owner_object, ready, problem }
    }

    fn collection(&mut self, id: &str) -> Option<&mut Collection> {
        match id {
            OWNER => self.owner.as_mut().map(|(_, _, c)| c),
            PODS => self.pods.as_mut().map(|(_, _, c)| c),
            _ => None,
        }
    }

    /// Subscriptions a fatal error ended: dropped, to be subscribed again after a delay.
    fn ended(&self) -> bool {
        self.owner.as_ref().is_some_and(|(_, sink, _)| sink.is_ended()) || self.pods.as_ref().is_some_and(|(_, sink, _)| sink.is_ended())
    }
}

/// Keeps `resolution` current until `stop`.
pub async fn run(env: Env, spec: Arc<ForwardSpec>, resolution: watch::Sender<Resolution>, stop: CancellationToken) {
    let mut backoff = super::worker::backoff(&spec, 1);
    loop {
        let outbox = Outbox::new(QUEUE_LIMIT, env.metrics.clone());
        let mut resolver = Resolver { env: env.clone(), spec: spec.clone(), outbox: outbox.clone(), owner: None, pods: None, selector: None };
        resolver.start();
        if resolver.owner.is_none() && resolver.pods.is_none() {
            let status = Status::failure(404, "NotFound", format!("cluster {} not found", spec.cluster));
            resolution.send_replace(Resolution { problem: Some(status), ..Resolution::default() });
        }
        loop {
            let next = tokio::select! {
                next = outbox.next() => next,
                () = outbox.wake_session.notified() => {
                    for id in outbox.take_due_resets() {
                        let subscription = if &*id == OWNER { resolver.owner.as_ref() } else { resolver.pods.as_ref() };
                        if let Some((subscription, _, _)) = subscription {
                            subscription.resync();
                        }
                    }
                    continue;
                }
                () = stop.cancelled() => return,
            };
            let Some(Outgoing::Text(text)) = next else { break };
            let Ok(message) = ServerMessage::decode(&text) else { continue };
            let id = match &message {
                ServerMessage::Event { id, .. } | ServerMessage::Synced { id, .. } | ServerMessage::Reset { id } | ServerMessage::Bookmark { id, .. } => id.clone(),
                ServerMessage::Error { id: Some(id), .. } => id.clone(),
                _ => continue,
            };
            if matches!(message, ServerMessage::Bookmark { .. }) {
                continue;
            }
            let Some(collection) = resolver.collection(&id) else { continue };
            collection.apply(&message);
            if id == OWNER {
                resolver.follow_owner();
            }
            if matches!(message, ServerMessage::Synced { .. }) {
                backoff.reset();
            }
            let next = resolver.resolution();
            resolution.send_if_modified(|current| {
                let changed = current.synced != next.synced || current.problem != next.problem || current.owner != next.owner || current.ready != next.ready;
                if changed {
                    *current = next;
                }
                changed
            });
            if resolver.ended() {
                break;
            }
        }
        // A fatal error (403, the cluster removed) ended a watch: start over after a delay,
        // keeping the last resolution's problem in view.
        let delay = std::time::Duration::from_millis(backoff.next_delay_ms());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}
