//! The browser shell around the sans-IO [`ClientCore`]: one `WebSocket` at a time with its
//! handler closures, one `setTimeout` for the core's next deadline, and the application's
//! callbacks. Every input (socket event, timer, API call) goes through [`drive`], which runs the
//! core, performs its IO outputs and only then, with nothing borrowed, calls the application,
//! so a callback may call back into the client.
//!
//! The data path: the engine's `JSON.parse` builds each frame once, in the socket listener;
//! for an `event` frame the shell reads only its header (id, type, namespace/name,
//! resourceVersion: [`js::event_header`]) and hands the core the parsed object itself, as an
//! opaque `JsValue`. The core's cache is the one cache: per object it keeps the key and that
//! handle. `onEvent`, `getSnapshot()` and `items()` all hand out that same object; nothing is
//! serialised, copied or parsed again on the way. Other frames (synced, bookmarks, inventories,
//! errors, pongs, and any frame of an unusual shape) are rare and take the text path: the core
//! decodes them as natively. On a `kubemux.v1+deflate` connection (offered where the engine has
//! `DecompressionStream`) the frames come out of [`inflate::Inflater`] as text, and go the same way.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};

use gloo_events::EventListener;
use js_sys::{Array, Function, Object};
use kubemux_protocol::client::{ClientCore, ConnectionState, EventFrame, PatchFrame, SubscriptionState, ViewChange};
use kubemux_protocol::frames::{EventType, SUBPROTOCOL, SUBPROTOCOL_DEFLATE};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::inflate::{self, Inflater};
use crate::{js, patch};

/// The core as the browser holds it: objects are the engine's own.
pub type Core = ClientCore<JsValue>;
type Output = kubemux_protocol::client::Output<JsValue>;

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
    /// The array `getSnapshot()` last answered: answered again while the core's cache reports no
    /// change (so an external store such as React's `useSyncExternalStore` sees nothing
    /// changed), and the base the next one is patched from. `None`: none made yet.
    snapshot: Option<JsValue>,
    /// `subscribe()`'s listeners, called with no arguments on every change, with their ids.
    pub listeners: Vec<(u64, Function)>,
}

impl SubEntry {
    /// A subscription just started.
    pub fn new(handlers: Handlers) -> SubEntry {
        SubEntry { handlers, state: SubscriptionState::Syncing, snapshot: None, listeners: Vec::new() }
    }

    /// Its objects or its state changed: every listener is told.
    fn changed(&self, id: &str, notes: &mut Vec<Notification>) {
        notes.extend(self.listeners.iter().map(|(_, listener)| (Some(id.to_owned()), listener.clone(), Vec::new())));
    }
}

/// The open (or opening) socket and its listeners. Dropping it closes the socket, and the
/// listeners (gloo's) remove themselves, so a late event of an old socket finds no handler
/// instead of a freed closure.
struct Connection {
    ws: WebSocket,
    _listeners: [EventListener; 3],
    /// A compressed connection's decompression and the listeners of its frames and its failure.
    inflate: Option<(Inflater, [EventListener; 2])>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Before its listeners go: a stream still being read delivers nothing more.
        if let Some((inflater, _)) = &self.inflate {
            inflater.stop();
        }
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
    pub core: Core,
    url: String,
    /// The connection token, kept only to offer it as a subprotocol; never logged.
    token: Option<String>,
    /// Whether to offer `kubemux.v1+deflate` (`compression`, and the engine can read it).
    deflate: bool,
    on_state: Option<Function>,
    on_error: Option<Function>,
    /// By id. A handful of short ids: a `BTreeMap`'s few comparisons cost less than hashing
    /// the id with SipHash, which three lookups per event would.
    pub subs: BTreeMap<String, SubEntry>,
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
    /// The `event` frame being handled, and its type: `onEvent` is given the frame itself when
    /// the core delivers it as it came (it is an `{ type, object }` already, with `op` and `id`
    /// besides), as a plain client would, instead of a new object built field by field.
    frame: Option<(EventType, JsValue)>,
    /// The id and namespace of the latest event frame.
    recent: js::Recent,
    /// The request number, `resolve` and `reject` of each `stats()` promise the connection has
    /// not answered: a few at most, so a list (a map would cost the package its own code).
    pub stats: Vec<(u64, Function, Function)>,
}

/// A call to make into the application once the shell is no longer borrowed, and the
/// subscription it is for (none: the connection's own callbacks).
type Notification = (Option<String>, Function, Vec<JsValue>);

impl Shell {
    /// A shell that has not connected yet.
    pub fn new(core: Core, url: String, token: Option<String>, deflate: bool, on_state: Option<Function>, on_error: Option<Function>) -> Shared {
        let shell = Shell {
            core,
            url,
            token,
            deflate: deflate && inflate::can_inflate(),
            on_state,
            on_error,
            subs: BTreeMap::new(),
            frame: None,
            recent: js::Recent::default(),
            stats: Vec::new(),
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
        if self.deflate {
            protocols.push(&JsValue::from_str(SUBPROTOCOL_DEFLATE));
        }
        protocols.push(&JsValue::from_str(SUBPROTOCOL));
        if let Some(token) = &self.token {
            protocols.push(&JsValue::from_str(&crate::token::bearer_protocol(token)));
        }
        let ws = WebSocket::new_with_str_sequence(&self.url, &protocols)?;
        let inflater = self.deflate.then(|| {
            ws.set_binary_type(BinaryType::Arraybuffer);
            Inflater::new()
        });
        let inflate = inflater.clone().map(|inflater| {
            let on_frame = {
                let weak = weak.clone();
                EventListener::new(&inflater, "message", move |event| {
                    let data = event.unchecked_ref::<MessageEvent>().data();
                    on_socket(&weak, generation, |shell, now| shell.receive(now, &data));
                })
            };
            let on_broken = {
                let weak = weak.clone();
                EventListener::new(&inflater, "error", move |_| {
                    on_socket(&weak, generation, |shell, now| {
                        shell.connection = None;
                        shell.core.on_close(now, None)
                    })
                })
            };
            (inflater, [on_frame, on_broken])
        });

        let on_open = {
            let weak = weak.clone();
            EventListener::new(&ws, "open", move |_| on_socket(&weak, generation, |shell, now| shell.core.on_open(now)))
        };
        let on_message = {
            let weak = weak.clone();
            EventListener::new(&ws, "message", move |event| {
                // A "message" event of a WebSocket is a MessageEvent (no `instanceof` needed); a
                // binary frame's data is no text, and is not the protocol's.
                let data = event.unchecked_ref::<MessageEvent>().data();
                match &inflater {
                    // A compressed connection's binary message: its frames come through `deliver`.
                    Some(inflater) if !data.is_string() => inflater.push(&data),
                    _ => on_socket(&weak, generation, |shell, now| shell.receive(now, &data)),
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
        self.connection = Some(Connection { ws, _listeners: [on_open, on_message, on_close], inflate });
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
                    let frame = self.frame.take();
                    if let Some(callback) = self.handler(&id, |h| &h.on_event) {
                        // The object is the one the list holds (and the frame's parse made).
                        let event = match frame {
                            Some((frame_type, frame)) if frame_type == event_type => frame,
                            _ => js::event_object(event_type, &object),
                        };
                        notes.push((Some(id), callback, vec![event]));
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
                    // One lookup per event: `onChange`, then the `subscribe()` listeners.
                    if let Some(entry) = self.subs.get(&id) {
                        if let Some(callback) = &entry.handlers.on_change {
                            notes.push((Some(id.clone()), callback.clone(), Vec::new()));
                        }
                        entry.changed(&id, &mut notes);
                    }
                }
                Output::Stats { request, report } => {
                    // Settling a promise runs no application code now (its reactions are
                    // microtasks), so it needs no deferring, and it is done even after close().
                    if let Some(at) = self.stats.iter().position(|(pending, ..)| *pending == request) {
                        let (_, resolve, reject) = self.stats.swap_remove(at);
                        let _ = match report {
                            Some(report) => resolve.call1(&JsValue::NULL, &js::to_js(&report)),
                            None => reject.call1(&JsValue::NULL, &js_sys::Error::new("kubemux: the connection closed before the proxy answered stats()").into()),
                        };
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
        self.frame = None;
        self.reschedule(now);
        notes
    }

    /// A frame from the socket. The engine parses it once; an `event` frame of the usual shape
    /// goes to the core as its header and the parsed object, a `patch` frame as its header and
    /// the parsed patch; anything else (rare) goes as text,
    /// decoded by the core. Binary frames are not the protocol's: parsing fails and they have no
    /// text.
    fn receive(&mut self, now: u64, data: &JsValue) -> Vec<Output> {
        let parsed = js::parse_data(data).ok();
        if let Some(header) = parsed.as_ref().and_then(|frame| js::event_header(frame, &mut self.recent)) {
            let js::EventHeader { event_type, name, resource_version, object } = header;
            self.frame = parsed.map(|frame| (event_type, frame));
            let recent = &self.recent;
            let frame = EventFrame { id: recent.id(), event_type, key: Some((recent.namespace(), &name)), resource_version: resource_version.as_deref(), object };
            return self.core.on_event(now, frame);
        }
        if let Some(header) = parsed.as_ref().and_then(patch::header) {
            // `onEvent` gets `{ type: "MODIFIED", object }` of the patched object.
            self.frame = None;
            let patch::Header { id, base, namespace, name, resource_version, patch } = header;
            return self.core.on_patch(now, PatchFrame { id: &id, key: (&namespace, &name), base: &base, resource_version: &resource_version, patch });
        }
        match data.as_string() {
            Some(text) => self.core.on_message_with(now, &text, |object| js::to_js(&object)),
            None => Vec::new(),
        }
    }

    /// The subscription's objects as an array, in the core's order: the previous one while
    /// nothing changed; when only some objects were replaced, a copy of the previous one
    /// (`slice`, in the engine) with just those slots set; when the membership changed, a new
    /// array of the handles the core holds. No object is ever converted: each is the one its
    /// frame's parse made. The empty array when the core no longer knows the subscription (a
    /// fatal error).
    ///
    /// Not frozen: the type is `readonly T[]`, and V8 copies a frozen array element by element
    /// (`slice` of a frozen 10,000-entry array took 0.29 ms in Chromium 156, of a plain one
    /// 0.01 ms), which made every frame of a burst and every `items()` pay for it.
    pub fn snapshot(&mut self, id: &str) -> JsValue {
        let (Some(entry), Some(change)) = (self.subs.get_mut(id), self.core.take_view_change(id)) else { return empty_array() };
        let array = match (change, entry.snapshot.take()) {
            (ViewChange::Unchanged, Some(previous)) => return entry.snapshot.insert(previous).clone(),
            (ViewChange::Patch(replaced), Some(previous)) => {
                let array = previous.unchecked_into::<Array>().slice(0, u32::MAX);
                for (index, object) in replaced {
                    js::set_ref(&array, index as u32, &object);
                }
                array
            }
            (ViewChange::Rebuild(objects), _) => whole(objects),
            // No previous array to patch (cannot happen: the first look at a cache rebuilds).
            (ViewChange::Unchanged | ViewChange::Patch(_), None) => whole(self.core.items(id).map(Iterator::collect).unwrap_or_default()),
        };
        let array: JsValue = array.into();
        entry.snapshot = Some(array.clone());
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
    let now = js::now();
    let (outputs, closed_before) = {
        let mut shell = shared.borrow_mut();
        let closed_before = shell.core.is_closed();
        (step(&mut shell, now), closed_before)
    };
    finish(shared, outputs, now, closed_before);
}

/// The part of [`drive`] that does not depend on the step: one copy in the package, not one per
/// caller (`drive` has a score of callers, and each copy cost some 800 bytes of wasm).
#[inline(never)]
fn finish(shared: &Shared, outputs: Vec<Output>, now: u64, closed_before: bool) {
    let weak = Rc::downgrade(shared);
    let notes = shared.borrow_mut().perform(&weak, outputs, now);
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

/// A new array of these objects (the handles pushed one by one: a packed array, which the
/// application iterates fastest).
fn whole(objects: Vec<&JsValue>) -> Array {
    let array = Array::new();
    for object in objects {
        array.push(object);
    }
    array
}

thread_local! {
    /// The one empty array a closed or failed subscription's `getSnapshot()` answers.
    static EMPTY: JsValue = Object::freeze(&Array::new()).into();
}

/// The one frozen empty array.
pub fn empty_array() -> JsValue {
    EMPTY.with(JsValue::clone)
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
