//! The browser shell around the sans-IO [`ClientCore`]: one `WebSocket` at a time with its
//! handler closures, one `setTimeout` for the core's next deadline, and the application's
//! callbacks. Every input (socket event, timer, API call) goes through [`drive`], which runs the
//! core, performs its IO outputs and only then, with nothing borrowed, calls the application,
//! so a callback may call back into the client.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use base64::Engine as _;
use gloo_events::EventListener;
use js_sys::{Array, Function, Object};
use kubemux_protocol::client::{ClientCore, ConnectionState, Output, SubscriptionState, object_key};
use kubemux_protocol::frames::{EventType, SUBPROTOCOL};
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::js;

/// The shell, shared by the `Mux`, its subscriptions and (weakly) its closures.
pub type Shared = Rc<RefCell<Shell>>;

/// The application's callbacks for one subscription.
#[derive(Default)]
pub struct Handlers {
    pub on_event: Option<Function>,
    pub on_synced: Option<Function>,
    pub on_reset: Option<Function>,
    pub on_error: Option<Function>,
    pub on_change: Option<Function>,
    pub on_state: Option<Function>,
}

/// A subscription as the shell knows it: its callbacks and its last state. The state is kept
/// here as well as in the core because the core forgets a subscription that failed fatally,
/// while the application may still ask.
pub struct SubEntry {
    pub handlers: Handlers,
    pub state: SubscriptionState,
    /// What `getSnapshot()` answers until the next change: the same frozen array, so that an
    /// external store (React's `useSyncExternalStore`) sees nothing changed. `None`: rebuild.
    pub snapshot: Option<JsValue>,
    /// `subscribe()`'s listeners, called with no arguments on every change, with their ids.
    pub listeners: Vec<(u64, Function)>,
    /// Every object already handed to JavaScript, by `namespace/name`, with the
    /// resourceVersion it was made from: an object is converted once per version, however
    /// often the list is read, and an unchanged item is the same JavaScript object in every
    /// snapshot (and in the `onEvent` that brought it).
    objects: HashMap<String, (String, JsValue)>,
}

impl SubEntry {
    /// A subscription just started.
    pub fn new(handlers: Handlers) -> SubEntry {
        SubEntry { handlers, state: SubscriptionState::Syncing, snapshot: None, listeners: Vec::new(), objects: HashMap::new() }
    }

    /// Its objects or its state changed: the snapshot is rebuilt on the next `getSnapshot()`,
    /// and every listener is told.
    fn changed(&mut self, id: &str, notes: &mut Vec<Notification>) {
        self.snapshot = None;
        notes.extend(self.listeners.iter().map(|(_, listener)| (Some(id.to_owned()), listener.clone(), Vec::new())));
    }
}

/// The open (or opening) socket and its listeners. Dropping it closes the socket, and the
/// listeners (gloo's) remove themselves, so a late event of an old socket finds no handler
/// instead of a freed closure.
struct Connection {
    ws: WebSocket,
    _listeners: [EventListener; 3],
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Only 1000 and 3000–4999 may be sent by script; closing a closed socket is a no-op.
        let _ = self.ws.close_with_code(1000);
    }
}

/// The one pending `setTimeout`. The closure is made once and reused for every deadline, so
/// reconnect loops allocate nothing per attempt: gloo's `Timeout` (the terminal's timer) would
/// own a new closure per deadline.
struct Timer {
    callback: Option<Closure<dyn FnMut()>>,
    handle: Option<JsValue>,
    due: Option<u64>,
}

/// Everything behind a `Mux`.
pub struct Shell {
    pub core: ClientCore,
    url: String,
    /// The connection token, kept only to offer it as a subprotocol; never logged.
    token: Option<String>,
    on_state: Option<Function>,
    on_error: Option<Function>,
    pub subs: HashMap<String, SubEntry>,
    pub state: ConnectionState,
    connection: Option<Connection>,
    /// Bumped on every connect, so an event of an older socket is recognised and ignored.
    generation: u64,
    timer: Timer,
    next_id: u64,
    /// The id of the next `subscribe()` listener.
    pub next_listener: u64,
    /// Why the latest `new WebSocket` threw, for the constructor to report.
    pub connect_error: Option<JsValue>,
}

/// A call to make into the application once the shell is no longer borrowed, and the
/// subscription it is for (none: the connection's own callbacks).
type Notification = (Option<String>, Function, Vec<JsValue>);

impl Shell {
    /// A shell that has not connected yet.
    pub fn new(core: ClientCore, url: String, token: Option<String>, on_state: Option<Function>, on_error: Option<Function>) -> Shared {
        let shell = Shell {
            core,
            url,
            token,
            on_state,
            on_error,
            subs: HashMap::new(),
            state: ConnectionState::Connecting,
            connection: None,
            generation: 0,
            timer: Timer { callback: None, handle: None, due: None },
            next_id: 0,
            next_listener: 0,
            connect_error: None,
        };
        let shared = Rc::new(RefCell::new(shell));
        let weak = Rc::downgrade(&shared);
        let tick = Closure::<dyn FnMut()>::new(move || {
            let Some(shared) = weak.upgrade() else { return };
            {
                let mut shell = shared.borrow_mut();
                shell.timer.handle = None;
                shell.timer.due = None;
            }
            drive(&shared, |shell, now| shell.core.on_tick(now));
        });
        shared.borrow_mut().timer.callback = Some(tick);
        shared
    }

    /// A fresh subscription id, unique for this client's lifetime.
    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("w{}", self.next_id)
    }

    /// Opens a new socket in place of the current one.
    fn connect(&mut self, weak: &Weak<RefCell<Shell>>) -> Result<(), JsValue> {
        self.connection = None;
        self.generation += 1;
        let generation = self.generation;
        let protocols = Array::new();
        protocols.push(&JsValue::from_str(SUBPROTOCOL));
        if let Some(token) = &self.token {
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
            protocols.push(&JsValue::from_str(&format!("base64url.bearer.authorization.k8s.io.{encoded}")));
        }
        let ws = WebSocket::new_with_str_sequence(&self.url, &protocols)?;

        let on_open = {
            let weak = weak.clone();
            EventListener::new(&ws, "open", move |_| on_socket(&weak, generation, |shell, now| shell.core.on_open(now)))
        };
        let on_message = {
            let weak = weak.clone();
            EventListener::new(&ws, "message", move |event| {
                // The protocol is text frames only; a binary frame is not ours to interpret.
                if let Some(text) = event.dyn_ref::<MessageEvent>().and_then(|event| event.data().as_string()) {
                    on_socket(&weak, generation, |shell, now| shell.core.on_message(now, &text));
                }
            })
        };
        let on_close = {
            let weak = weak.clone();
            EventListener::new(&ws, "close", move |event| {
                let code = event.dyn_ref::<CloseEvent>().map(CloseEvent::code);
                on_socket(&weak, generation, |shell, now| {
                    shell.connection = None;
                    shell.core.on_close(now, code)
                });
            })
        };
        self.connection = Some(Connection { ws, _listeners: [on_open, on_message, on_close] });
        Ok(())
    }

    /// Performs the core's outputs; returns the application calls they imply, in order.
    fn perform(&mut self, weak: &Weak<RefCell<Shell>>, outputs: Vec<Output>, now: u64) -> Vec<Notification> {
        let mut queue: VecDeque<Output> = outputs.into();
        let mut notes = Vec::new();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Connect => {
                    if let Err(error) = self.connect(weak) {
                        // `new WebSocket` threw (a bad URL, a blocked port): treat it as a
                        // failed attempt, so the core schedules the next one.
                        self.connect_error = Some(error);
                        queue.extend(self.core.on_close(now, None));
                    }
                }
                Output::Send(text) => {
                    if let Some(connection) = &self.connection {
                        // A failing send means the socket is closing; its close event follows.
                        let _ = connection.ws.send_with_str(&text);
                    }
                }
                Output::CloseSocket => self.connection = None,
                Output::State(state) => {
                    if state == ConnectionState::Closed {
                        self.connection = None;
                    }
                    if let Some(callback) = &self.on_state {
                        notes.push((None, callback.clone(), vec![state_object(&state)]));
                    }
                    if state == ConnectionState::Closed {
                        // Nothing is delivered after close(); dropping the callbacks also breaks
                        // the reference cycles an app makes by closing over its subscriptions.
                        self.on_state = None;
                        self.on_error = None;
                        for entry in self.subs.values_mut() {
                            entry.handlers = Handlers::default();
                            entry.listeners.clear();
                        }
                    }
                    self.state = state;
                }
                Output::Event { id, event_type, object } => {
                    if let Some(callback) = self.handler(&id, |h| &h.on_event) {
                        let event = Object::new();
                        let converted = js::to_js(&object);
                        js::set(&event, "type", &JsValue::from_str(event_type.as_str()));
                        js::set(&event, "object", &converted);
                        // The list reuses it: the application sees one object per version.
                        if event_type != EventType::Deleted
                            && let (Some(entry), Some((key, version))) = (self.subs.get_mut(&id), identity(&object))
                        {
                            entry.objects.insert(key, (version.to_owned(), converted));
                        }
                        notes.push((Some(id), callback, vec![event.into()]));
                    }
                }
                Output::Synced { id, resource_version } => {
                    if let Some(callback) = self.handler(&id, |h| &h.on_synced) {
                        notes.push((Some(id), callback, vec![JsValue::from_str(&resource_version)]));
                    }
                }
                Output::Reset { id } => {
                    if let Some(callback) = self.handler(&id, |h| &h.on_reset) {
                        notes.push((Some(id), callback, Vec::new()));
                    }
                }
                Output::Error { id, fatal, status } => {
                    let error = js::error_object(id.as_deref(), fatal, &status);
                    // An error about a live subscription goes to it alone; one about the
                    // connection (id null) or an id no longer ours goes to the Mux's onError.
                    let own = id.as_deref().filter(|id| self.subs.contains_key(*id));
                    let callback = match own {
                        Some(id) => self.handler(id, |h| &h.on_error),
                        None => self.on_error.clone(),
                    };
                    if let Some(callback) = callback {
                        notes.push((own.map(str::to_owned), callback, vec![error]));
                    }
                }
                Output::Changed { id } => {
                    if let Some(callback) = self.handler(&id, |h| &h.on_change) {
                        notes.push((Some(id.clone()), callback, Vec::new()));
                    }
                    if let Some(entry) = self.subs.get_mut(&id) {
                        entry.changed(&id, &mut notes);
                    }
                }
                Output::SubscriptionState { id, state } => {
                    if let Some(entry) = self.subs.get_mut(&id) {
                        entry.state = state;
                        if let Some(callback) = &entry.handlers.on_state {
                            notes.push((Some(id.clone()), callback.clone(), vec![JsValue::from_str(subscription_state_name(state))]));
                        }
                        entry.changed(&id, &mut notes);
                    }
                }
            }
        }
        self.reschedule(now);
        notes
    }

    /// The subscription's objects as a new JavaScript array, in the core's order. Objects
    /// already converted at their current version are reused; the others are converted together
    /// in one `JSON.parse`. What is no longer listed is forgotten.
    pub fn objects_array(&mut self, id: &str) -> Array {
        let (Some(items), Some(entry)) = (self.core.items(id), self.subs.get_mut(id)) else { return Array::new() };
        let array = Array::new_with_length(items.len() as u32);
        let mut known = std::mem::take(&mut entry.objects);
        let mut fresh = HashMap::with_capacity(items.len());
        let mut missing = Vec::new();
        for (index, value) in items.enumerate() {
            let Some((key, version)) = identity(value) else {
                missing.push((index as u32, None, value));
                continue;
            };
            match known.remove(&key) {
                Some((known_version, object)) if known_version == version => {
                    array.set(index as u32, object.clone());
                    fresh.insert(key, (known_version, object));
                }
                _ => missing.push((index as u32, Some((key, version.to_owned())), value)),
            }
        }
        if !missing.is_empty() {
            let converted: Array = js::array_of(missing.iter().map(|(_, _, value)| *value)).unchecked_into();
            for (position, (index, identity, _)) in missing.into_iter().enumerate() {
                let object = converted.get(position as u32);
                array.set(index, object.clone());
                if let Some((key, version)) = identity {
                    fresh.insert(key, (version, object));
                }
            }
        }
        entry.objects = fresh;
        array
    }

    fn handler(&self, id: &str, pick: impl FnOnce(&Handlers) -> &Option<Function>) -> Option<Function> {
        self.subs.get(id).and_then(|entry| pick(&entry.handlers).clone())
    }

    /// Keeps exactly one `setTimeout` pending, for the core's next deadline.
    fn reschedule(&mut self, now: u64) {
        let due = if self.state == ConnectionState::Closed { None } else { self.core.next_deadline() };
        if due == self.timer.due && (due.is_none() || self.timer.handle.is_some()) {
            return;
        }
        if let Some(handle) = self.timer.handle.take() {
            js::clear_timeout(&handle);
        }
        self.timer.due = due;
        if let (Some(due), Some(callback)) = (due, &self.timer.callback) {
            let delay = due.saturating_sub(now) as f64;
            self.timer.handle = Some(js::set_timeout(callback.as_ref().unchecked_ref(), delay));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Some(handle) = self.timer.handle.take() {
            js::clear_timeout(&handle);
        }
    }
}

/// Runs `step` on the shell, performs the core's outputs, then calls the application.
pub fn drive(shared: &Shared, step: impl FnOnce(&mut Shell, u64) -> Vec<Output>) {
    let weak = Rc::downgrade(shared);
    let (notes, closed_before) = {
        let mut shell = shared.borrow_mut();
        let closed_before = shell.core.is_closed();
        let now = js::now();
        let outputs = step(&mut shell, now);
        (shell.perform(&weak, outputs, now), closed_before)
    };
    for (sub, callback, args) in notes {
        // A callback may have closed the Mux or a subscription: deliver nothing more to them.
        {
            let shell = shared.borrow();
            if shell.core.is_closed() && !closed_before {
                // Only this drive's own `closed` notice may still go out.
                if !(sub.is_none() && shell.state == ConnectionState::Closed && is_closed_notice(&args)) {
                    continue;
                }
            }
            if sub.is_some_and(|id| !shell.subs.contains_key(&id)) {
                continue;
            }
        }
        js::call(&callback, &args);
    }
}

fn is_closed_notice(args: &[JsValue]) -> bool {
    args.first().is_some_and(|state| js_sys::Reflect::get(state, &JsValue::from_str("state")).ok().and_then(|s| s.as_string()).as_deref() == Some("closed"))
}

/// A socket event: ignored when the socket is no longer the current one.
fn on_socket(weak: &Weak<RefCell<Shell>>, generation: u64, step: impl FnOnce(&mut Shell, u64) -> Vec<Output>) {
    let Some(shared) = weak.upgrade() else { return };
    if shared.borrow().generation != generation {
        return;
    }
    drive(&shared, step);
}

/// `{ state: "connecting" | "open" | "reconnecting" | "closed", delayMs? }`.
pub fn state_object(state: &ConnectionState) -> JsValue {
    let object = Object::new();
    let name = match state {
        ConnectionState::Connecting => "connecting",
        ConnectionState::Open => "open",
        ConnectionState::Reconnecting { delay_ms } => {
            js::set(&object, "delayMs", &JsValue::from_f64(*delay_ms as f64));
            "reconnecting"
        }
        ConnectionState::Closed => "closed",
    };
    js::set(&object, "state", &JsValue::from_str(name));
    object.into()
}

/// An object's `namespace/name` (the cache's key) and resourceVersion, when it has both (an
/// object without a version is converted on every read: nothing says it is unchanged).
fn identity(object: &serde_json::Value) -> Option<(String, &str)> {
    let version = object.get("metadata")?.get("resourceVersion")?.as_str().filter(|v| !v.is_empty())?;
    let (namespace, name) = object_key(object)?;
    Some((format!("{namespace}/{name}"), version))
}

/// The name JavaScript sees for a subscription state.
pub fn subscription_state_name(state: SubscriptionState) -> &'static str {
    match state {
        SubscriptionState::Syncing => "syncing",
        SubscriptionState::Synced => "synced",
        SubscriptionState::Stale => "stale",
        SubscriptionState::Failed => "failed",
    }
}
