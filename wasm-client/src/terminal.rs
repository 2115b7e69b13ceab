//! `Terminal`: a pod shell over the Kubernetes exec protocol, through a kubemux proxy.
//!
//! Each attempt is its own WebSocket to `…/pods/{pod}/exec` (never the `Mux` connection),
//! speaking `v5.channel.k8s.io` or `v4.channel.k8s.io`. All framing (channels, resize JSON, the
//! v5 CLOSE signal, the channel-3 status) is `kubemux_protocol::channel`'s; this module only
//! moves bytes between a socket and the application.
//!
//! Lifecycle (`exec-portforward-protocol.md` §3, §6.7, §9):
//! - the server's empty frame says the session is connected: the initial resize goes out then;
//! - with shell candidates, an `InternalError` 500 status before any output means the binary
//!   is missing, and the next candidate gets a new socket; input typed meanwhile is held back
//!   and goes to the shell that starts;
//! - `close()` closes the socket, and the proxy's teardown ends the shell (Ctrl-C, `exit\r` up
//!   to three times, Ctrl-D, then CLOSE of stdin: `edge-proxy/src/terminal/teardown.rs`), as it
//!   does for a socket that just drops. The browser types nothing of its own: a second, shorter
//!   sequence (one `exit\r`, stdin closed at once) lost its `exit\r` to the Ctrl-C when the two
//!   reached the shell together, and its early CLOSE of stdin left the proxy's keystrokes
//!   nowhere to go (a runtime drops stdin after CLOSE), so the shell outlived the terminal;
//! - a dropped socket ends the terminal: it is reported and never reconnected, because a new
//!   connection would be a new process.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use base64::Engine as _;
use js_sys::{Array, Function, Object, Uint8Array};
use kubemux_protocol::channel::{self, ChannelProtocol, Decoded, ExecOutcome, TerminalSize, WsPayload};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::js;

const CLOSED: &str = "kubemux: this Terminal was closed with close(); create a new Terminal to start another session";
const ENDED: &str = "kubemux: this Terminal's session has ended (see onExit); create a new Terminal to start another session";
/// Shells tried in turn when neither `command` nor `shells` is given.
const DEFAULT_SHELLS: [&str; 2] = ["bash", "sh"];
/// Input held back while the session is starting; more than this is refused.
const PENDING_LIMIT: usize = 64 * 1024;
/// With more shells to try, a connected session counts as started once it printed something
/// or after this long without a status (a missing binary is reported at once).
const CONFIRM_MS: f64 = 400.0;

/// An interactive shell (or command) in a pod's container, through a kubemux proxy
/// (`new Terminal(proxyUrl, { cluster, namespace, pod, … })`). Never reconnects on its own.
#[wasm_bindgen]
pub struct Terminal {
    session: Rc<RefCell<Session>>,
}

#[derive(Default)]
struct Callbacks {
    on_open: Option<Function>,
    on_data: Option<Function>,
    on_exit: Option<Function>,
    on_error: Option<Function>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connecting, or connected but not yet known to have started (shell fallback).
    Starting,
    /// Running; `onOpen` was delivered.
    Open,
    /// Over: exited, failed, dropped or closed.
    Ended,
}

/// How frames are encoded and decoded. v5 and v4 frame data identically (binary, the channel
/// byte first; v5 only adds the client's CLOSE signal, which a terminal never sends: the
/// proxy's teardown does, last), and the only protocols offered are these two. Passing one constant to every `channel::encode`/`decode` call also lets the
/// optimiser drop their base64 paths, which would otherwise cost the package about 2 KiB.
const FRAMING: ChannelProtocol = ChannelProtocol::V4;

/// One exec attempt's socket. Dropping it detaches the handlers and closes the socket.
struct Attempt {
    ws: WebSocket,
    connected: bool,
    output_seen: bool,
    sent_size: Option<TerminalSize>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}

impl Attempt {
    fn send(&self, payload: WsPayload) {
        // A failing send means the socket is closing; its close event follows.
        let _ = match payload {
            WsPayload::Binary(bytes) => self.ws.send_with_u8_array(&bytes),
            WsPayload::Text(text) => self.ws.send_with_str(&text),
        };
    }

    fn send_channel(&self, channel: u8, payload: &[u8]) {
        self.send(channel::encode(FRAMING, channel, payload));
    }
}

/// The pending confirmation of a start (shell fallback), the only timer.
struct Timer {
    handle: JsValue,
    _callback: Closure<dyn FnMut()>,
}

impl Drop for Timer {
    fn drop(&mut self) {
        js::clear_timeout(&self.handle);
    }
}

struct Session {
    /// `ws(s)://…/exec?` with the flags and container, to which the command is appended.
    endpoint: String,
    /// The bearer-token subprotocol to offer; never logged.
    token_protocol: Option<String>,
    candidates: Vec<Vec<String>>,
    index: usize,
    size: Option<TerminalSize>,
    /// Input written while starting, sent once the session has started.
    pending: Vec<u8>,
    attempt: Option<Attempt>,
    phase: Phase,
    user_closed: bool,
    /// Bumped per attempt, so late events of an old socket are ignored.
    attempt_id: u32,
    /// Bumped per timer, so a replaced timer's late callback is ignored.
    timer_id: u32,
    timer: Option<Timer>,
    callbacks: Callbacks,
    /// Calls into the application, made once the session is no longer borrowed.
    notes: Vec<(Function, JsValue)>,
    /// The session keeps itself alive until it has ended: its socket's and timer's callbacks
    /// hold only weak references.
    keep_alive: Option<Rc<RefCell<Session>>>,
}

type Shared = Rc<RefCell<Session>>;

#[wasm_bindgen]
impl Terminal {
    /// Opens a terminal. `proxyUrl` is the proxy's base (`https://host`, `wss://host`, with an
    /// optional path prefix). Options: `cluster`, `namespace`, `pod` (required), `container`,
    /// `command` or `shells` (default `["bash", "sh"]`), `token`, `cols` and `rows`, and the
    /// callbacks `onOpen`, `onData`, `onExit`, `onError`.
    #[wasm_bindgen(constructor)]
    pub fn new(proxy_url: String, options: JsValue) -> Result<Terminal, JsError> {
        let base = websocket_base(&proxy_url)?;
        let what = "new Terminal()";
        let mut endpoint = base;
        for (segment, key) in [("/clusters/", "cluster"), ("/api/v1/namespaces/", "namespace"), ("/pods/", "pod")] {
            endpoint.push_str(segment);
            endpoint.push_str(&encode(&js::required_string(&options, key, what)?));
        }
        endpoint.push_str("/exec?stdin=true&stdout=true&tty=true");
        if let Some(container) = js::string_option(&options, "container")? {
            endpoint.push_str("&container=");
            endpoint.push_str(&encode(&container));
        }
        let token_protocol = js::string_option(&options, "token")?
            .map(|token| format!("base64url.bearer.authorization.k8s.io.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)));
        let candidates = match (string_list(&options, "command")?, string_list(&options, "shells")?) {
            (Some(_), Some(_)) => return Err(JsError::new("kubemux: give new Terminal() either `command` or `shells`")),
            (Some(command), None) => vec![command],
            (None, shells) => shells.unwrap_or_else(|| DEFAULT_SHELLS.map(str::to_owned).to_vec()).into_iter().map(|shell| vec![shell]).collect(),
        };
        let size = match (js::get(&options, "cols").as_f64(), js::get(&options, "rows").as_f64()) {
            (Some(cols), Some(rows)) => Some(terminal_size(cols, rows)?),
            _ => None,
        };
        let callbacks = Callbacks {
            on_open: js::function_option(&options, "onOpen")?,
            on_data: js::function_option(&options, "onData")?,
            on_exit: js::function_option(&options, "onExit")?,
            on_error: js::function_option(&options, "onError")?,
        };
        let session = Session {
            endpoint,
            token_protocol,
            candidates,
            index: 0,
            size,
            pending: Vec::new(),
            attempt: None,
            phase: Phase::Starting,
            user_closed: false,
            attempt_id: 0,
            timer_id: 0,
            timer: None,
            callbacks,
            notes: Vec::new(),
            keep_alive: None,
        };
        let shared = Rc::new(RefCell::new(session));
        let opened = shared.borrow_mut().open_attempt(&Rc::downgrade(&shared));
        if let Err(error) = opened {
            let message = js_sys::Error::from(error).message();
            return Err(JsError::new(&format!("kubemux: cannot open a WebSocket to this URL: {message}")));
        }
        shared.borrow_mut().keep_alive = Some(shared.clone());
        Ok(Terminal { session: shared })
    }

    /// Sends input to the process: a string (as UTF-8, e.g. from xterm.js `onData`) or bytes.
    /// Input written before the session started is sent when it starts. Throws after `close()`
    /// or once the session has ended.
    pub fn write(&self, data: JsValue) -> Result<(), JsError> {
        let bytes = if let Some(text) = data.as_string() {
            text.into_bytes()
        } else if let Some(array) = data.dyn_ref::<Uint8Array>() {
            array.to_vec()
        } else {
            return Err(JsError::new("kubemux: Terminal.write() takes a string or a Uint8Array"));
        };
        let mut session = self.session.borrow_mut();
        session.ensure_live()?;
        if bytes.is_empty() {
            return Ok(());
        }
        match &session.attempt {
            Some(attempt) if session.phase == Phase::Open && attempt.connected => attempt.send_channel(channel::STDIN, &bytes),
            _ => {
                if session.pending.len() + bytes.len() > PENDING_LIMIT {
                    return Err(JsError::new("kubemux: too much input written before the terminal's session started"));
                }
                session.pending.extend_from_slice(&bytes);
            }
        }
        Ok(())
    }

    /// Sets the terminal size (columns and rows, 1–65535); sent at once when connected,
    /// otherwise as soon as the session connects. Throws after `close()` or once ended.
    pub fn resize(&self, cols: f64, rows: f64) -> Result<(), JsError> {
        let size = terminal_size(cols, rows)?;
        let mut session = self.session.borrow_mut();
        session.ensure_live()?;
        session.size = Some(size);
        session.send_size();
        Ok(())
    }

    /// Ends the session: the socket closes at once, and the proxy ends the shell (Ctrl-C,
    /// `exit`, Ctrl-D, as a user would), whether or not the session had started. No callback is
    /// called afterwards. Closing twice is harmless.
    pub fn close(&self) {
        let keep = {
            let mut session = self.session.borrow_mut();
            if session.user_closed {
                return;
            }
            session.user_closed = true;
            session.callbacks = Callbacks::default();
            session.notes.clear();
            session.pending.clear();
            // Typing `exit` from here would race the proxy's teardown, which already knows how
            // (with pauses the line discipline needs, and retries for nested shells).
            session.finish()
        };
        drop(keep);
    }

    /// The command of the current (or last) attempt, e.g. `["sh"]` after a fallback.
    #[wasm_bindgen(getter)]
    pub fn command(&self) -> Array {
        let session = self.session.borrow();
        session.candidates[session.index].iter().map(|arg| JsValue::from_str(arg)).collect()
    }
}

/// A handle freed (or garbage-collected) while its session runs ends it as `close()` does: a
/// session nobody can write to or close would be an orphan in the making.
impl Drop for Terminal {
    fn drop(&mut self) {
        self.close();
    }
}

impl Session {
    fn ensure_live(&self) -> Result<(), JsError> {
        if self.user_closed {
            Err(JsError::new(CLOSED))
        } else if self.phase == Phase::Ended {
            Err(JsError::new(ENDED))
        } else {
            Ok(())
        }
    }

    /// Opens a socket for the current candidate, in place of any previous one.
    fn open_attempt(&mut self, weak: &Weak<RefCell<Session>>) -> Result<(), JsValue> {
        self.attempt = None;
        self.timer = None;
        self.attempt_id += 1;
        let id = self.attempt_id;
        let mut url = self.endpoint.clone();
        for arg in &self.candidates[self.index] {
            url.push_str("&command=");
            url.push_str(&encode(arg));
        }
        let protocols = Array::new();
        protocols.push(&JsValue::from_str(ChannelProtocol::V5.name()));
        protocols.push(&JsValue::from_str(ChannelProtocol::V4.name()));
        if let Some(token) = &self.token_protocol {
            protocols.push(&JsValue::from_str(token));
        }
        let ws = WebSocket::new_with_str_sequence(&url, &protocols)?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_message = {
            let weak = weak.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
                // Only binary protocols are offered; a text frame (a string) reads as no bytes,
                // which is skipped like any empty message.
                let bytes = Uint8Array::new(&event.data()).to_vec();
                run(&weak, |session, weak| if session.attempt_id == id { session.on_message(weak, &bytes) } else { None });
            })
        };
        let on_close = {
            let weak = weak.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
                let code = event.code();
                run(&weak, |session, _| if session.attempt_id == id { session.on_close(code) } else { None });
            })
        };
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.attempt = Some(Attempt { ws, connected: false, output_seen: false, sent_size: None, _on_message: on_message, _on_close: on_close });
        Ok(())
    }

    fn on_message(&mut self, weak: &Weak<RefCell<Session>>, bytes: &[u8]) -> Option<Shared> {
        let attempt = self.attempt.as_mut()?;
        match channel::decode(FRAMING, bytes) {
            Ok(Decoded::Data { channel: channel::STDOUT | channel::STDERR, payload }) => {
                if !attempt.connected {
                    attempt.connected = true;
                    self.on_connected(weak);
                }
                if payload.is_empty() {
                    return None;
                }
                if let Some(attempt) = self.attempt.as_mut() {
                    attempt.output_seen = true;
                }
                if self.phase == Phase::Starting {
                    self.confirm();
                }
                if let Some(callback) = &self.callbacks.on_data {
                    self.notes.push((callback.clone(), Uint8Array::from(&payload[..]).into()));
                }
                None
            }
            Ok(Decoded::Data { channel: channel::ERROR, payload }) => self.on_status(weak, &payload),
            _ => None,
        }
    }

    /// The server's empty frame: the session is connected.
    fn on_connected(&mut self, weak: &Weak<RefCell<Session>>) {
        self.send_size();
        if self.phase != Phase::Starting {
            return;
        }
        if self.index + 1 == self.candidates.len() {
            self.confirm();
        } else {
            self.arm(weak, CONFIRM_MS);
        }
    }

    /// The session has started: tell the application and send the input held back.
    fn confirm(&mut self) {
        self.phase = Phase::Open;
        self.timer = None;
        if let Some(attempt) = &self.attempt
            && !self.pending.is_empty()
        {
            attempt.send_channel(channel::STDIN, &self.pending);
            self.pending = Vec::new();
        }
        if let Some(callback) = &self.callbacks.on_open {
            let info = Object::new();
            let command: Array = self.candidates[self.index].iter().map(|arg| JsValue::from_str(arg)).collect();
            js::set(&info, "command", &command);
            self.notes.push((callback.clone(), info.into()));
        }
    }

    /// Channel 3: how the process ended (or why it never started).
    fn on_status(&mut self, weak: &Weak<RefCell<Session>>, payload: &[u8]) -> Option<Shared> {
        let output_seen = self.attempt.as_ref().is_some_and(|a| a.output_seen);
        match ExecOutcome::parse(payload) {
            Ok(ExecOutcome::Success) => self.end(Some(0), None),
            Ok(ExecOutcome::ExitCode(code)) => self.end(Some(code), None),
            Ok(ExecOutcome::Failure { message, reason, code }) => {
                let missing = reason.as_deref() == Some("InternalError") && code == Some(500);
                if missing && !output_seen && self.index + 1 < self.candidates.len() {
                    // The binary is missing: try the next shell on a new socket.
                    self.index += 1;
                    self.phase = Phase::Starting;
                    if let Err(error) = self.open_attempt(weak) {
                        let message = format!("cannot open a WebSocket for the next shell: {}", js_sys::Error::from(error).message());
                        return self.fail(synthetic_status(500, "InternalError", &message), &message);
                    }
                    return None;
                }
                let status = std::str::from_utf8(payload).ok().and_then(|text| js_sys::JSON::parse(text).ok()).filter(JsValue::is_object);
                let status = status.unwrap_or_else(|| synthetic_status(code.unwrap_or(500), reason.as_deref().unwrap_or("InternalError"), &message));
                // Every status the application sees has a code and a reason.
                if js::get(&status, "code").is_undefined() {
                    js::set(status.unchecked_ref(), "code", &JsValue::from(code.unwrap_or(500)));
                }
                if js::get(&status, "reason").is_undefined() {
                    js::set(status.unchecked_ref(), "reason", &JsValue::from_str(reason.as_deref().unwrap_or("Unknown")));
                }
                self.fail(status, &message)
            }
            Err(error) => {
                let message = format!("the terminal's status could not be read: {error}");
                self.fail(synthetic_status(502, "BadGateway", &message), &message)
            }
        }
    }

    /// The socket closed.
    fn on_close(&mut self, code: u16) -> Option<Shared> {
        self.attempt.as_ref()?;
        let connected = self.attempt.as_ref().is_some_and(|a| a.connected);
        let what = if connected { "lost; no new session is started" } else { "refused or could not be opened" };
        let message = format!("the terminal's connection was {what} (WebSocket close code {})", u32::from(code));
        let status = synthetic_status(503, "ServiceUnavailable", &message);
        self.fail(status, &message)
    }

    fn fail(&mut self, status: JsValue, message: &str) -> Option<Shared> {
        if let Some(callback) = &self.callbacks.on_error {
            self.notes.push((callback.clone(), status));
        }
        self.end(None, Some(message))
    }

    /// The session is over: `onExit`, then nothing more.
    fn end(&mut self, code: Option<i32>, message: Option<&str>) -> Option<Shared> {
        if let Some(callback) = &self.callbacks.on_exit {
            let exit = Object::new();
            js::set(&exit, "code", &code.map_or(JsValue::NULL, JsValue::from));
            if let Some(message) = message {
                js::set(&exit, "message", &JsValue::from_str(message));
            }
            self.notes.push((callback.clone(), exit.into()));
        }
        self.finish()
    }

    /// Closes the socket and stops every timer; returns the self-reference for the caller to
    /// drop once the session is no longer borrowed.
    fn finish(&mut self) -> Option<Shared> {
        self.phase = Phase::Ended;
        self.attempt = None;
        self.timer = None;
        self.pending = Vec::new();
        self.keep_alive.take()
    }

    fn send_size(&mut self) {
        let Some(size) = self.size else { return };
        if let Some(attempt) = self.attempt.as_mut().filter(|a| a.connected && a.sent_size != Some(size)) {
            // Terminals are always TTY sessions, where resize is meaningful.
            attempt.send_channel(channel::RESIZE, &size.to_payload());
            attempt.sent_size = Some(size);
        }
    }

    /// Replaces the pending timer: after `ms`, a session still starting counts as started.
    fn arm(&mut self, weak: &Weak<RefCell<Session>>, ms: f64) {
        self.timer = None;
        self.timer_id += 1;
        let id = self.timer_id;
        let weak = weak.clone();
        let callback = Closure::<dyn FnMut()>::new(move || {
            run(&weak, |session, _| {
                if session.timer_id != id {
                    return None;
                }
                session.timer = None;
                if session.phase == Phase::Starting {
                    session.confirm();
                }
                None
            });
        });
        let handle = js::set_timeout(callback.as_ref().unchecked_ref(), ms);
        self.timer = Some(Timer { handle, _callback: callback });
    }
}

/// Runs `step` on the session if it is still there, then calls the application with nothing
/// borrowed (so a callback may call back into the terminal).
fn run(weak: &Weak<RefCell<Session>>, step: impl FnOnce(&mut Session, &Weak<RefCell<Session>>) -> Option<Shared>) {
    let Some(shared) = weak.upgrade() else { return };
    let (notes, keep) = {
        let mut session = shared.borrow_mut();
        let keep = step(&mut session, weak);
        (std::mem::take(&mut session.notes), keep)
    };
    drop(keep);
    for (callback, arg) in notes {
        // A callback may have closed the terminal: deliver nothing more.
        if shared.borrow().user_closed {
            break;
        }
        js::call(&callback, &[arg]);
    }
}

/// `http(s)://` or `ws(s)://` base URL → `ws(s)://…` without a trailing slash.
fn websocket_base(url: &str) -> Result<String, JsError> {
    let url = url.trim_end_matches('/');
    let converted = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if url.starts_with("wss://") || url.starts_with("ws://") {
        url.to_owned()
    } else {
        return Err(JsError::new("kubemux: the proxy URL must start with http://, https://, ws:// or wss://"));
    };
    Ok(converted)
}

/// A URL component, percent-encoded by the engine's own `encodeURIComponent`.
fn encode(text: &str) -> String {
    js_sys::encode_uri_component(text).into()
}

/// An optional array-of-strings option, which must not be empty.
fn string_list(options: &JsValue, key: &str) -> Result<Option<Vec<String>>, JsError> {
    let value = js::get(options, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let mut list = Vec::new();
    if Array::is_array(&value) {
        for item in Array::from(&value).iter() {
            match item.as_string() {
                Some(item) if !item.is_empty() => list.push(item),
                _ => return Err(JsError::new(&format!("kubemux: `{key}` must be an array of non-empty strings"))),
            }
        }
    }
    if list.is_empty() {
        return Err(JsError::new(&format!("kubemux: `{key}` must be an array of non-empty strings")));
    }
    Ok(Some(list))
}

fn terminal_size(cols: f64, rows: f64) -> Result<TerminalSize, JsError> {
    let valid = |n: f64| n.fract() == 0.0 && (1.0..=65535.0).contains(&n);
    if !(valid(cols) && valid(rows)) {
        return Err(JsError::new("kubemux: terminal columns and rows must be whole numbers from 1 to 65535"));
    }
    Ok(TerminalSize { width: cols as u16, height: rows as u16 })
}

/// A `Status` for a failure the client saw itself (the socket dropped, an unreadable status).
fn synthetic_status(code: u16, reason: &str, message: &str) -> JsValue {
    let status = Object::new();
    for (key, value) in [("kind", "Status"), ("apiVersion", "v1"), ("status", "Failure"), ("message", message), ("reason", reason)] {
        js::set(&status, key, &JsValue::from_str(value));
    }
    js::set(&status, "code", &JsValue::from(code));
    status.into()
}
