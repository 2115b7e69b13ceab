//! `Terminal`: a pod shell over the Kubernetes exec protocol, through a kubemux proxy.
//!
//! A thin shell over `kubemux_protocol::terminal::TerminalCore`, which holds every decision
//! (attempts, shell fallback, held-back input, the confirmation timer, the close) and is tested
//! natively. This module owns the sockets and the one timer, reads options, and calls the
//! application's callbacks. All framing is `kubemux_protocol::channel`'s.
//!
//! `close()` closes the socket and types nothing: the proxy's teardown ends the shell with the
//! one plan of `kubemux_protocol::terminal::teardown`, as it does for a socket that just drops.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_events::EventListener;
use gloo_timers::callback::Timeout;
use js_sys::{Array, Function, Object, Uint8Array};
use kubemux_protocol::channel::{TerminalSize, WsPayload};
use kubemux_protocol::terminal::{Failure, Phase, SUBPROTOCOLS, TerminalConfig, TerminalCore, TerminalOutput};
use wasm_bindgen::prelude::*;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::js;

#[wasm_bindgen(typescript_custom_section)]
const TERMINAL_TYPES: &'static str = r#"
/** What `onOpen` receives: the command that started (e.g. `["sh"]` after `bash` was missing). */
export interface TerminalOpenInfo {
  command: string[];
}

/** How a terminal's session ended; `onExit` receives it exactly once, as the last callback. */
export interface TerminalExit {
  /** The process's exit code, or `null` when there is none (refused, failed to start, connection lost). */
  code: number | null;
  /** Why, when there is no exit code. */
  message?: string;
}

/** `new Terminal(proxyUrl, options)`'s options, read by `Terminal::new`. */
export interface TerminalOptions {
  /** A cluster name the proxy knows. */
  cluster: string;
  namespace: string;
  pod: string;
  /** The container; the pod's default container when omitted. */
  container?: string;
  /** The command to run (e.g. `["sh", "-c", "top"]`). Give either `command` or `shells`. */
  command?: string[];
  /**
   * Shells to try in turn (default `["bash", "sh"]`): when the pod lacks one (the server reports
   * `InternalError` 500 before any output), the next starts on a new WebSocket of its own.
   */
  shells?: string[];
  /** Bearer token for the proxy, sent as the `base64url.bearer.authorization.k8s.io.*` subprotocol. */
  token?: string;
  /** Initial size; give both or neither (then the server's default applies until `resize`). */
  cols?: number;
  rows?: number;
  /** The session started, running `info.command`. Input written before this is sent now. */
  onOpen?: (info: TerminalOpenInfo) => void;
  /** Output bytes (UTF-8 as the process wrote it, split anywhere): pass them to xterm.js `term.write`. */
  onData?: (bytes: Uint8Array) => void;
  /** The session ended (exited, refused, or the connection dropped); the last callback, called once. Not called after `close()`. */
  onExit?: (exit: TerminalExit) => void;
  /** Why the session failed, as a Kubernetes `Status` (403, 404, `InternalError` 500, or 503 when the connection was lost); `onExit` follows. */
  onError?: (status: Status) => void;
}
"#;

/// An interactive shell (or command) in a pod's container, through a kubemux proxy
/// (`new Terminal(proxyUrl, { cluster, namespace, pod, … })`), over the Kubernetes exec protocol
/// (`v5.channel.k8s.io`, else `v4`) on a WebSocket of its own. It never reconnects: when the
/// connection drops, `onError` and `onExit` report it, and a new session takes a new `Terminal`.
/// Call `await init()` once before constructing it.
///
/// With xterm.js: `term.onData((s) => t.write(s))`, `onData: (b) => term.write(b)`,
/// `term.onResize(({ cols, rows }) => t.resize(cols, rows))`. Keep a reference while the
/// session should run: freeing the handle (or its garbage collection) ends it as `close()` does.
#[wasm_bindgen]
pub struct Terminal {
    shell: Rc<RefCell<Shell>>,
}

#[derive(Default)]
struct Callbacks {
    on_open: Option<Function>,
    on_data: Option<Function>,
    on_exit: Option<Function>,
    on_error: Option<Function>,
}

/// One attempt's socket. Dropping it closes the socket, and its listeners (gloo's) remove
/// themselves, so a late event of an old socket reaches no one.
struct Socket {
    ws: WebSocket,
    _listeners: [EventListener; 2],
}

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = self.ws.close_with_code(1000);
    }
}

/// The core's pending deadline, armed as gloo's `Timeout`, which clears itself when dropped.
struct Timer {
    at: u64,
    _timeout: Timeout,
}

struct Shell {
    core: TerminalCore,
    /// `ws(s)://…/exec?` with the flags and container, to which the command is appended.
    endpoint: String,
    /// The bearer-token subprotocol to offer; never logged.
    token_protocol: Option<String>,
    socket: Option<Socket>,
    timer: Option<Timer>,
    callbacks: Callbacks,
    /// Calls into the application, made once the shell is no longer borrowed.
    notes: Vec<(Function, JsValue)>,
    /// The shell keeps itself alive until the session has ended: its socket's and timer's
    /// callbacks hold only weak references.
    keep_alive: Option<Rc<RefCell<Shell>>>,
}

type Shared = Rc<RefCell<Shell>>;

#[wasm_bindgen]
impl Terminal {
    /// Opens a terminal. `proxyUrl` is the proxy's base (`https://host`, `wss://host`, with an
    /// optional path prefix). Options: `cluster`, `namespace`, `pod` (required), `container`,
    /// `command` or `shells` (default `["bash", "sh"]`), `token`, `cols` and `rows`, and the
    /// callbacks `onOpen`, `onData`, `onExit`, `onError`.
    #[wasm_bindgen(constructor)]
    pub fn new(proxy_url: String, #[wasm_bindgen(unchecked_param_type = "TerminalOptions")] options: JsValue) -> Result<Terminal, JsValue> {
        let base = websocket_base(&proxy_url)?;
        let what = "new Terminal()";
        js::options_object(&options, what)?;
        let mut endpoint = base;
        for (segment, key) in [("/clusters/", "cluster"), ("/api/v1/namespaces/", "namespace"), ("/pods/", "pod")] {
            endpoint.push_str(segment);
            endpoint.push_str(&encode(&js::required_string(&options, key, what)?));
        }
        endpoint.push_str("/exec?stdin=true&stdout=true&tty=true");
        if let Some(container) = js::string_option(&options, "container", what)? {
            endpoint.push_str("&container=");
            endpoint.push_str(&encode(&container));
        }
        let token_protocol = js::string_option(&options, "token", what)?.map(|token| crate::token::bearer_protocol(&token));
        let candidates = match (js::string_list(&options, "command", what)?, js::string_list(&options, "shells", what)?) {
            (Some(_), Some(_)) => return Err(js::type_error("kubemux: give new Terminal() either `command` or `shells`")),
            (Some(command), None) => Some(vec![command]),
            (None, shells) => shells.map(|shells| shells.into_iter().map(|shell| vec![shell]).collect()),
        };
        let mut config = TerminalConfig::new(candidates);
        config.size = match (js::number_option(&options, "cols", what)?, js::number_option(&options, "rows", what)?) {
            (Some(cols), Some(rows)) => Some(terminal_size(cols, rows)?),
            _ => None,
        };
        let callbacks = Callbacks {
            on_open: js::function_option(&options, "onOpen")?,
            on_data: js::function_option(&options, "onData")?,
            on_exit: js::function_option(&options, "onExit")?,
            on_error: js::function_option(&options, "onError")?,
        };
        let mut core = TerminalCore::new(config);
        let first = core.start();
        let shell = Shell { core, endpoint, token_protocol, socket: None, timer: None, callbacks, notes: Vec::new(), keep_alive: None };
        let shared = Rc::new(RefCell::new(shell));
        let weak = Rc::downgrade(&shared);
        for output in first {
            if let TerminalOutput::Connect { attempt, command } = output
                && let Err(error) = shared.borrow_mut().open(&weak, attempt, &command)
            {
                let message = js_sys::Error::from(error).message();
                return Err(JsError::new(&format!("kubemux: cannot open a WebSocket to this URL: {message}")).into());
            }
        }
        shared.borrow_mut().keep_alive = Some(shared.clone());
        Ok(Terminal { shell: shared })
    }

    /// Sends input to the process: a string (as UTF-8, e.g. from xterm.js `onData`) or bytes.
    /// Input written before the session started is sent when it starts. Throws after `close()`
    /// or once the session has ended.
    pub fn write(&self, #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] data: JsValue) -> Result<(), JsValue> {
        let bytes = if let Some(text) = data.as_string() {
            text.into_bytes()
        } else if let Some(array) = data.dyn_ref::<Uint8Array>() {
            array.to_vec()
        } else {
            return Err(js::type_error("kubemux: Terminal.write() takes a string or a Uint8Array"));
        };
        let outputs = self.shell.borrow_mut().core.write(&bytes).map_err(|refused| JsError::new(refused.message()))?;
        run(&Rc::downgrade(&self.shell), |_| outputs);
        Ok(())
    }

    /// Sets the terminal size (columns and rows, 1–65535); sent at once when connected,
    /// otherwise as soon as the session connects. Throws after `close()` or once ended.
    pub fn resize(&self, cols: f64, rows: f64) -> Result<(), JsValue> {
        let size = terminal_size(cols, rows)?;
        let outputs = self.shell.borrow_mut().core.resize(size).map_err(|refused| JsError::new(refused.message()))?;
        run(&Rc::downgrade(&self.shell), |_| outputs);
        Ok(())
    }

    /// Ends the session: the socket closes at once, and the proxy ends the shell (Ctrl-C,
    /// `exit`, Ctrl-D, as a user would), whether or not the session had started. No callback is
    /// called afterwards. Closing twice is harmless.
    pub fn close(&self) {
        let keep = {
            let mut shell = self.shell.borrow_mut();
            shell.callbacks = Callbacks::default();
            shell.notes.clear();
            let outputs = shell.core.close();
            let weak = Rc::downgrade(&self.shell);
            shell.perform(&weak, outputs);
            shell.settle(&weak)
        };
        drop(keep);
    }

    /// The command of the current (or last) attempt, e.g. `["sh"]` after a fallback.
    #[wasm_bindgen(getter, unchecked_return_type = "string[]")]
    pub fn command(&self) -> Array {
        self.shell.borrow().core.command().iter().map(|arg| JsValue::from_str(arg)).collect()
    }
}

/// A handle freed (or garbage-collected) while its session runs ends it as `close()` does: a
/// session nobody can write to or close would be an orphan in the making.
impl Drop for Terminal {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shell {
    /// Opens a socket for `command`, in place of any previous one.
    fn open(&mut self, weak: &Weak<RefCell<Shell>>, attempt: u32, command: &[String]) -> Result<(), JsValue> {
        self.socket = None;
        let mut url = self.endpoint.clone();
        for arg in command {
            url.push_str("&command=");
            url.push_str(&encode(arg));
        }
        let protocols: Array = SUBPROTOCOLS.iter().map(|p| JsValue::from_str(p.name())).collect();
        if let Some(token) = &self.token_protocol {
            protocols.push(&JsValue::from_str(token));
        }
        let ws = WebSocket::new_with_str_sequence(&url, &protocols)?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let on_message = {
            let weak = weak.clone();
            EventListener::new(&ws, "message", move |event| {
                // Only binary protocols are offered; a text frame (a string) reads as no bytes,
                // which is skipped like any empty message.
                let bytes = event.dyn_ref::<MessageEvent>().map(|event| Uint8Array::new(&event.data()).to_vec()).unwrap_or_default();
                run(&weak, |core| core.on_message(attempt, &bytes, js::now()));
            })
        };
        let on_close = {
            let weak = weak.clone();
            EventListener::new(&ws, "close", move |event| {
                let code = event.dyn_ref::<CloseEvent>().map_or(1006, CloseEvent::code);
                run(&weak, |core| core.on_close(attempt, code));
            })
        };
        self.socket = Some(Socket { ws, _listeners: [on_message, on_close] });
        Ok(())
    }

    /// Carries out the core's outputs; the application's calls are queued in `notes`.
    fn perform(&mut self, weak: &Weak<RefCell<Shell>>, outputs: Vec<TerminalOutput>) {
        for output in outputs {
            match output {
                TerminalOutput::Connect { attempt, command } => {
                    if let Err(error) = self.open(weak, attempt, &command) {
                        // What the core answers ends the session: no further `Connect`.
                        let failed = self.core.on_connect_error(attempt, &String::from(js_sys::Error::from(error).message()));
                        self.perform(weak, failed);
                    }
                }
                TerminalOutput::Send(payload) => {
                    if let Some(socket) = &self.socket {
                        // A failing send means the socket is closing; its close event follows.
                        let _ = match payload {
                            WsPayload::Binary(bytes) => socket.ws.send_with_u8_array(&bytes),
                            WsPayload::Text(text) => socket.ws.send_with_str(&text),
                        };
                    }
                }
                TerminalOutput::CloseSocket => self.socket = None,
                TerminalOutput::Opened { command } => {
                    if let Some(callback) = &self.callbacks.on_open {
                        let info = Object::new();
                        let command: Array = command.iter().map(|arg| JsValue::from_str(arg)).collect();
                        js::set(&info, "command", &command);
                        self.notes.push((callback.clone(), info.into()));
                    }
                }
                TerminalOutput::Data(bytes) => {
                    if let Some(callback) = &self.callbacks.on_data {
                        self.notes.push((callback.clone(), Uint8Array::from(&bytes[..]).into()));
                    }
                }
                TerminalOutput::Failed(failure) => {
                    if let Some(callback) = &self.callbacks.on_error {
                        self.notes.push((callback.clone(), status_object(&failure)));
                    }
                }
                TerminalOutput::Exited { code, message } => {
                    if let Some(callback) = &self.callbacks.on_exit {
                        let exit = Object::new();
                        js::set(&exit, "code", &code.map_or(JsValue::NULL, JsValue::from));
                        if let Some(message) = message {
                            js::set(&exit, "message", &JsValue::from_str(&message));
                        }
                        self.notes.push((callback.clone(), exit.into()));
                    }
                }
            }
        }
    }

    /// Arms the timer for the core's next deadline (or clears it), and once the session has
    /// ended, returns the self-reference for the caller to drop when nothing is borrowed.
    fn settle(&mut self, weak: &Weak<RefCell<Shell>>) -> Option<Shared> {
        if self.core.phase() == Phase::Ended {
            self.socket = None;
            self.timer = None;
            return self.keep_alive.take();
        }
        match self.core.next_deadline() {
            None => self.timer = None,
            Some(at) if self.timer.as_ref().is_some_and(|timer| timer.at == at) => {}
            Some(at) => {
                let weak = weak.clone();
                let ms = u32::try_from(at.saturating_sub(js::now())).unwrap_or(u32::MAX);
                let timeout = Timeout::new(ms, move || run(&weak, |core| core.on_tick(js::now())));
                self.timer = Some(Timer { at, _timeout: timeout });
            }
        }
        None
    }
}

/// Feeds the core (if the shell is still there), carries out what it returns, then calls the
/// application with nothing borrowed (so a callback may call back into the terminal).
fn run(weak: &Weak<RefCell<Shell>>, step: impl FnOnce(&mut TerminalCore) -> Vec<TerminalOutput>) {
    let Some(shared) = weak.upgrade() else { return };
    let (notes, keep) = {
        let mut shell = shared.borrow_mut();
        let outputs = step(&mut shell.core);
        shell.perform(weak, outputs);
        let keep = shell.settle(weak);
        (std::mem::take(&mut shell.notes), keep)
    };
    drop(keep);
    for (callback, arg) in notes {
        // A callback may have closed the terminal: deliver nothing more.
        if shared.borrow().core.is_closed() {
            break;
        }
        js::call(&callback, &[arg]);
    }
}

/// The `Status` the application's `onError` gets: the server's own object when it sent one,
/// with a code and a reason always present, or one made from what the core saw.
fn status_object(failure: &Failure) -> JsValue {
    let parsed = failure.status.as_deref().and_then(|text| js_sys::JSON::parse(text).ok()).filter(JsValue::is_object);
    let Some(status) = parsed else { return synthetic_status(failure.code, &failure.reason, &failure.message) };
    if js::get(&status, "code").is_undefined() {
        js::set(status.unchecked_ref(), "code", &JsValue::from(failure.code));
    }
    if js::get(&status, "reason").is_undefined() {
        js::set(status.unchecked_ref(), "reason", &JsValue::from_str(&failure.reason));
    }
    status
}

/// `http(s)://` or `ws(s)://` base URL → `ws(s)://…` without a trailing slash.
fn websocket_base(url: &str) -> Result<String, JsValue> {
    let url = url.trim_end_matches('/');
    let converted = if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if url.starts_with("wss://") || url.starts_with("ws://") {
        url.to_owned()
    } else {
        return Err(js::type_error("kubemux: the proxy URL must start with http://, https://, ws:// or wss://"));
    };
    Ok(converted)
}

/// A URL component, percent-encoded by the engine's own `encodeURIComponent`.
fn encode(text: &str) -> String {
    js_sys::encode_uri_component(text).into()
}

fn terminal_size(cols: f64, rows: f64) -> Result<TerminalSize, JsValue> {
    let valid = |n: f64| n.fract() == 0.0 && (1.0..=65535.0).contains(&n);
    if !(valid(cols) && valid(rows)) {
        return Err(js_sys::RangeError::new("kubemux: terminal columns and rows must be whole numbers from 1 to 65535").into());
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
