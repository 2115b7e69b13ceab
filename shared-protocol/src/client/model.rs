//! A model of the proxy and API server for one collection, and a harness that wires a
//! [`ClientCore`] to it with a fake clock. The core's property test uses it, and so does the
//! `client_core_schedule` fuzz target (through the `testing` feature); not a public API.
//!
//! The model can act as another proxy replica ([`ModelServer::restart`]): its history starts
//! at the current version, so an older resume point is answered from its store (the
//! `inventory` sequence of `docs/PROTOCOL.md` §4, to clients that ask for it and if the replica
//! offers it) or with a `reset`. Every `synced` the client is given is checked against the
//! state the model had at that version ([`Harness::deliver`]).
//!
//! A watch may ask for the default projection and for deltas (`docs/PROTOCOL.md` §2): the model
//! then sends projected objects, hides a change that touched only what the projection drops (with
//! deltas: sends it as a patch of the version alone), and sends a `MODIFIED` of an object the
//! client holds as a `patch` against the version the model believes it holds (which a test can make wrong, [`ModelServer::forget_base`]), answering a
//! `resync` with `reset` and a snapshot.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Value, json};

use super::{ClientConfig, ClientCore, EventFrame, Output, PatchFrame};
use crate::delta::{Projection, merge_patch};
use crate::frames::{ClientMessage, EventType, ProjectionMode, ResumeMode, ServerMessage};

/// What one subscription asked for, and the version of each object the model believes its
/// client holds.
#[derive(Debug, Default, Clone)]
pub struct SubView {
    pub projection: bool,
    pub deltas: bool,
    pub held: BTreeMap<String, String>,
}

/// An object as a subscription with (or without) the default projection is sent it.
pub fn projected(object: &Value, projection: bool) -> Value {
    let mut object = object.clone();
    if projection {
        Projection::default().apply(&mut object);
    }
    object
}

/// An object as a projecting subscription's cache is compared with the truth: projected, and
/// without its `resourceVersion` (a client keeps the version of the last change it was shown,
/// §2; with the projection off, the whole object).
pub fn comparable(object: &Value, projection: bool) -> Value {
    let mut object = projected(object, projection);
    if projection && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
    object
}

/// A model of the proxy plus API server for one collection: objects, a bounded history, and
/// one connection's in-flight frames.
#[derive(Debug, Default)]
pub struct ModelServer {
    pub objects: BTreeMap<String, Value>,
    pub rv: u64,
    /// The oldest version a resume can start from.
    pub floor: u64,
    pub history: Vec<(u64, EventType, Value)>,
    /// Active subscription ids on the current connection.
    pub active: Vec<String>,
    /// Frames in flight to the client; lost when the connection drops.
    pub in_flight: VecDeque<String>,
    pub connected: bool,
    /// Whether this replica answers a resume it has no history for with an inventory (to a
    /// client that asked for one); otherwise with a `reset`.
    pub inventory: bool,
    /// The objects at every version since the start (the truth each `synced` is checked
    /// against).
    pub states: BTreeMap<u64, BTreeMap<String, Value>>,
    /// What each subscription of the current connection asked for, and holds.
    pub views: BTreeMap<String, SubView>,
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

fn version_of(object: &Value) -> String {
    object["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned()
}

impl ModelServer {
    pub fn send(&mut self, message: ServerMessage) {
        self.in_flight.push_back(message.encode());
    }

    /// Sends `object` whole to subscription `id`, as it asked for it.
    pub fn send_object(&mut self, id: &str, event_type: EventType, object: &Value) {
        let view = self.views.entry(id.to_owned()).or_default();
        let object = projected(object, view.projection);
        if event_type == EventType::Deleted {
            view.held.remove(&name_of(&object));
        } else {
            view.held.insert(name_of(&object), version_of(&object));
        }
        self.send(ServerMessage::Event { id: id.into(), event_type, object });
    }

    pub fn snapshot(&mut self, id: &str) {
        let objects: Vec<Value> = self.objects.values().cloned().collect();
        self.views.entry(id.to_owned()).or_default().held.clear();
        for object in objects {
            self.send_object(id, EventType::Added, &object);
        }
        self.send(ServerMessage::Synced { id: id.into(), resource_version: self.rv.to_string() });
    }

    /// The model forgets which version subscription `id` holds of `obj-{key}`: its next patch
    /// of it names a base the client does not hold, and the client must `resync`.
    pub fn forget_base(&mut self, id: &str, key: u8) {
        if let Some(held) = self.views.get_mut(id).and_then(|view| view.held.get_mut(&format!("obj-{key}"))) {
            *held = "1".to_owned();
        }
    }

    /// One live change as subscription `id` is sent it: hidden by its projection, a patch
    /// against what it holds, or whole.
    fn live(&mut self, id: &str, event_type: EventType, previous: Option<&Value>, object: &Value) {
        let view = self.views.entry(id.to_owned()).or_default().clone();
        if let (EventType::Modified, Some(previous)) = (event_type, previous) {
            let (old, new) = (projected(previous, view.projection), projected(object, view.projection));
            let hidden = view.projection && comparable(&old, true) == comparable(&new, true);
            if hidden && !view.deltas {
                return;
            }
            // With deltas, a hidden change is a patch of the version alone.
            let patch = if hidden { Ok(Some(json!({"metadata": {"resourceVersion": version_of(object)}}))) } else { merge_patch(&old, &new) };
            if let (true, Some(base), Ok(Some(patch))) = (view.deltas, view.held.get(&name_of(object)), patch) {
                let message = ServerMessage::Patch { id: id.into(), base: base.clone(), namespace: Some("ns".into()), name: name_of(object), resource_version: version_of(object), patch };
                self.views.entry(id.to_owned()).or_default().held.insert(name_of(object), version_of(object));
                return self.send(message);
            }
        }
        self.send_object(id, event_type, object);
    }

    /// A replica that started at the current version: no history before it.
    pub fn restart(&mut self, inventory: bool) {
        self.floor = self.rv;
        self.history.clear();
        self.inventory = inventory;
    }

    /// The state at `rv`: the latest recorded at or before it.
    pub fn state_at(&self, rv: u64) -> BTreeMap<String, Value> {
        self.states.range(..=rv).next_back().map(|(_, objects)| objects.clone()).unwrap_or_default()
    }

    /// `§4`'s inventory answer to a resume from `rv`: every object changed after it, in key
    /// order (not version order), as `MODIFIED`; the keys held; `synced`.
    fn inventory(&mut self, id: &str, rv: u64) {
        let version = |object: &Value| object["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
        let changed: Vec<Value> = self.objects.values().filter(|object| version(object) > rv).cloned().collect();
        for object in changed {
            self.send_object(id, EventType::Modified, &object);
        }
        let names = self.objects.keys().cloned().collect();
        self.send(ServerMessage::Inventory { id: id.into(), keys: BTreeMap::from([("ns".to_owned(), names)]) });
        self.send(ServerMessage::Synced { id: id.into(), resource_version: self.rv.to_string() });
    }

    pub fn handle_client(&mut self, text: &str) {
        match ClientMessage::decode(text).expect("the client sends valid frames") {
            ClientMessage::Watch(watch) => {
                self.active.push(watch.id.clone());
                let resume = watch.resource_version.map(|rv| rv.parse::<u64>().unwrap());
                // What the client holds, as far as the model can tell: the state at its version.
                let held = resume.map(|rv| self.state_at(rv).into_iter().map(|(name, object)| (name, version_of(&object))).collect()).unwrap_or_default();
                self.views.insert(watch.id.clone(), SubView { projection: watch.projection == Some(ProjectionMode::Default), deltas: watch.deltas, held });
                match resume {
                    None => self.snapshot(&watch.id),
                    Some(rv) if rv >= self.floor => {
                        let replay: Vec<_> = self.history.iter().filter(|(v, _, _)| *v > rv).cloned().collect();
                        for (_, event_type, object) in replay {
                            self.send_object(&watch.id, event_type, &object);
                        }
                        self.send(ServerMessage::Synced { id: watch.id, resource_version: self.rv.to_string() });
                    }
                    Some(rv) if self.inventory && watch.resume == Some(ResumeMode::Inventory) => self.inventory(&watch.id, rv),
                    Some(_) => {
                        self.send(ServerMessage::Reset { id: watch.id.clone() });
                        self.snapshot(&watch.id);
                    }
                }
            }
            ClientMessage::Unwatch { id } => self.active.retain(|a| *a != id),
            ClientMessage::Resync { id } => {
                if self.active.contains(&id) {
                    self.send(ServerMessage::Reset { id: id.clone() });
                    self.snapshot(&id);
                }
            }
            ClientMessage::Ping { data } => self.send(ServerMessage::Pong { data }),
            ClientMessage::Stats { data } => {
                // The model meters nothing: every active subscription, with an empty report.
                let subscriptions = self.active.iter().map(|id| (id.clone(), json!({}))).collect();
                self.send(ServerMessage::Stats { data, connection: json!({}), subscriptions: Value::Object(subscriptions) });
            }
            ClientMessage::Auth { .. } => {}
        }
    }

    /// A change of `obj-{key}`: deleted, or written; a write with `managed_only` of an object
    /// that exists changes nothing but what the projection drops (and the version).
    pub fn change(&mut self, key: u8, delete: bool, managed_only: bool) {
        self.rv += 1;
        let name = format!("obj-{key}");
        let previous = self.objects.get(&name).cloned();
        let (event_type, object) = if delete {
            let Some(mut last) = self.objects.remove(&name) else {
                self.rv -= 1;
                return;
            };
            last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            (EventType::Deleted, last)
        } else {
            let event_type = if self.objects.contains_key(&name) { EventType::Modified } else { EventType::Added };
            let data = match &previous {
                Some(previous) if managed_only => previous["data"].clone(),
                _ => json!(self.rv),
            };
            let object = json!({"metadata": {"namespace": "ns", "name": name, "resourceVersion": self.rv.to_string(), "managedFields": [{"manager": "m", "time": self.rv}]}, "data": data});
            self.objects.insert(name, object.clone());
            (event_type, object)
        };
        self.history.push((self.rv, event_type, object.clone()));
        self.states.insert(self.rv, self.objects.clone());
        // A bounded history: the oldest events fall off.
        if self.history.len() > 8 {
            self.floor = self.history.remove(0).0;
        }
        if self.connected {
            for id in self.active.clone() {
                self.live(&id, event_type, previous.as_ref(), &object);
            }
        }
    }
}

/// An `event` or `patch` frame, read the way the browser shell reads them; `None` for every
/// other frame.
fn header(frame: &str) -> Option<ServerMessage> {
    ServerMessage::decode(frame).ok().filter(|message| matches!(message, ServerMessage::Event { .. } | ServerMessage::Patch { .. }))
}

/// The client and the model, wired together with a fake clock.
pub struct Harness {
    pub core: ClientCore,
    pub server: ModelServer,
    pub now: u64,
    /// Deliver `event` frames as the browser shell does: the header read outside the core,
    /// through [`ClientCore::on_event`], instead of the text through `on_message`.
    pub headers: bool,
}

impl Harness {
    pub fn new(seed: u64) -> Self {
        Harness::with_config(ClientConfig { seed, ..ClientConfig::default() })
    }

    /// A harness whose client has `config`, against a model replica that offers inventories.
    pub fn with_config(config: ClientConfig) -> Self {
        let server = ModelServer { rv: 100, floor: 100, inventory: true, ..ModelServer::default() };
        let mut h = Harness { core: ClientCore::new(config), server, now: 0, headers: false };
        let out = h.core.start(0);
        h.perform(out);
        h
    }

    pub fn perform(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Connect => {
                    self.server.connected = true;
                    self.server.active.clear();
                    self.server.views.clear();
                    self.server.in_flight.clear();
                    let out = self.core.on_open(self.now);
                    self.perform(out);
                }
                Output::Send(text) if self.server.connected => self.server.handle_client(&text),
                Output::CloseSocket => self.drop_connection(),
                _ => {}
            }
        }
    }

    pub fn drop_connection(&mut self) {
        if self.server.connected {
            self.server.connected = false;
            self.server.active.clear();
            self.server.in_flight.clear();
            let out = self.core.on_close(self.now, None);
            self.perform(out);
        }
    }

    pub fn deliver(&mut self, n: usize) {
        for _ in 0..n {
            let Some(frame) = self.server.in_flight.pop_front() else { return };
            let out = match self.headers.then(|| header(&frame)).flatten() {
                Some(ServerMessage::Event { id, event_type, object }) => {
                    let meta = &object["metadata"];
                    let key = meta["name"].as_str().map(|name| (meta["namespace"].as_str().unwrap_or_default(), name));
                    let frame = EventFrame { id: &id, event_type, key, resource_version: meta["resourceVersion"].as_str(), object: object.clone() };
                    self.core.on_event(self.now, frame)
                }
                Some(ServerMessage::Patch { id, base, namespace, name, resource_version, patch }) => {
                    let frame = PatchFrame { id: &id, key: (namespace.as_deref().unwrap_or_default(), &name), base: &base, resource_version: &resource_version, patch };
                    self.core.on_patch(self.now, frame)
                }
                _ => self.core.on_message(self.now, &frame),
            };
            for output in &out {
                if let Output::Synced { id, resource_version } = output {
                    // Invariant 2, at the version the client was told.
                    let rv = resource_version.parse::<u64>().expect("the model's versions are integers");
                    assert_eq!(self.client_view(id), self.server_view(id, rv), "{id}: the cache at `synced` {rv} is the state at {rv}");
                }
            }
            self.perform(out);
        }
    }

    /// Runs timers until connected, then delivers everything.
    pub fn settle(&mut self) {
        for _ in 0..100 {
            if self.server.connected && self.server.in_flight.is_empty() {
                return;
            }
            self.deliver(usize::MAX);
            if let Some(deadline) = self.core.next_deadline() {
                if !self.server.connected {
                    self.now = self.now.max(deadline);
                }
                let out = self.core.on_tick(self.now);
                self.perform(out);
            }
        }
        panic!("the client never settled");
    }

    /// Whether subscription `id` asked for the default projection (as the model last saw it).
    fn projects(&self, id: &str) -> bool {
        self.server.views.get(id).is_some_and(|view| view.projection)
    }

    /// The client's objects of `id`, as they are compared with the truth ([`comparable`]).
    pub fn client_view(&self, id: &str) -> BTreeMap<String, Value> {
        let projection = self.projects(id);
        self.client_objects(id).into_iter().map(|(name, object)| (name, comparable(&object, projection))).collect()
    }

    /// The model's state at `rv` as subscription `id` is to hold it ([`comparable`]).
    pub fn server_view(&self, id: &str, rv: u64) -> BTreeMap<String, Value> {
        let projection = self.projects(id);
        self.server.state_at(rv).into_iter().map(|(name, object)| (name, comparable(&object, projection))).collect()
    }

    pub fn client_objects(&self, id: &str) -> BTreeMap<String, Value> {
        self.core.items(id).unwrap().map(|o| (o["metadata"]["name"].as_str().unwrap().to_owned(), o.clone())).collect()
    }
}
