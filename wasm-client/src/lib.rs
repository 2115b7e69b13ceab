//! `kubemux` for the browser: many live Kubernetes watches over one WebSocket to a kubemux
//! proxy, each with a live list of objects, reconnecting and resuming on its own, and every
//! error delivered to the one watch it concerns; and pod terminals ([`Terminal`]) that never
//! reconnect behind the user's back.
//!
//! This crate is only the browser shell: the protocol, the caches, resume points, backoff and
//! liveness all live in `kubemux_protocol::client::ClientCore`, which this crate drives with a
//! `WebSocket`, `setTimeout` and `Date.now()`; the terminal's channel framing is
//! `kubemux_protocol::channel`'s. The JavaScript API is [`Mux`], [`Subscription`] and
//! [`Terminal`]. Their TypeScript types are wasm-bindgen's, generated from these signatures:
//! each `JsValue` that carries an object names its type (`unchecked_param_type`,
//! `unchecked_return_type`), and the object types are declared in `typescript_custom_section`s
//! beside the code that reads or builds them (here, and in `terminal.rs`).

mod inflate;
mod js;
mod patch;
mod shell;
mod terminal;
mod token;

use std::rc::Rc;

use js_sys::Function;
use kubemux_protocol::client::{ClientConfig, WatchOptions};
use kubemux_protocol::frames::{ProjectionMode, WatchQuery};
use wasm_bindgen::prelude::*;

use shell::{Core, Handlers, Shared, Shell, SubEntry, drive};
pub use terminal::Terminal;

#[wasm_bindgen(typescript_custom_section)]
const MUX_TYPES: &'static str = r#"
/** A Kubernetes object as the API server sends it. Typed loosely on purpose: the package does
 * not ship Kubernetes' API types; pass your own object type as `T` to `watch<T>()`. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** A Kubernetes `Status` object, as carried in error reports. */
export interface Status {
  kind?: "Status";
  apiVersion?: string;
  status?: "Failure" | "Success";
  /** HTTP-style code, e.g. 403. */
  code: number;
  /** Machine-readable reason, e.g. `Forbidden`. */
  reason: string;
  /** Human-readable message. */
  message: string;
  [key: string]: unknown;
}

/** The connection's state, as `onState` receives it and `mux.state` tells. */
export type ConnectionState =
  | { state: "connecting" }
  | { state: "open" }
  /** Waiting `delayMs` milliseconds before the next attempt. */
  | { state: "reconnecting"; delayMs: number }
  /** Closed with `close()`; nothing more happens. */
  | { state: "closed" };

/** Where a subscription stands. */
export type SubscriptionState =
  /** Waiting for the snapshot (or the replay after a reconnect) to complete. */
  | "syncing"
  /** Consistent with the API server. */
  | "synced"
  /** Possibly behind: disconnected, or the server reported a non-fatal error. */
  | "stale"
  /** Ended by a fatal error (e.g. 403); `items()` is empty. */
  | "failed";

/** An error report. */
export interface MuxError {
  /** The subscription it concerns, or `null` for the connection (e.g. a malformed frame). */
  id: string | null;
  /** Whether the subscription ended. */
  fatal: boolean;
  status: Status;
}

/** A change to one object of a subscription. */
export interface WatchEvent<T = KubeObject> {
  type: "ADDED" | "MODIFIED" | "DELETED";
  /** The object (for `DELETED`, its last state). */
  object: T;
}

/** `new Mux(url, options)`'s options, read by `Mux::new`. */
export interface MuxOptions {
  /** Bearer token for the proxy, sent as the `base64url.bearer.authorization.k8s.io.*` subprotocol. */
  token?: string;
  /** Every change of the connection state. */
  onState?: (state: ConnectionState) => void;
  /** Errors that concern no live subscription (`id` null: e.g. a malformed frame). */
  onError?: (error: MuxError) => void;
  /** The first reconnect delay's ceiling (default 500 ms); delays double from there, with jitter. */
  reconnectBaseMs?: number;
  /** The largest reconnect delay (default 30000 ms). */
  reconnectMaxMs?: number;
  /** `"deflate"` (the default): offer the proxy compressed frames (`kubemux.v1+deflate`, about a
   * tenth of the bytes), read with the browser's own `DecompressionStream` where it has one;
   * `"none"`: plain frames. */
  compression?: "deflate" | "none";
}

/** What to watch: a collection path, optionally filtered (read by `Mux::watch`). */
export interface WatchRequest {
  /** A cluster name the proxy knows. */
  cluster: string;
  /** `/api/v1[/namespaces/{ns}]/{resource}` or `/apis/{group}/{version}[/namespaces/{ns}]/{resource}`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** `"default"`: objects without `metadata.managedFields` and the last-applied annotation, and
   * no event for a change to nothing else (often most of a pod's writes). Such objects keep the
   * `resourceVersion` of their last shown change. Default `"none"`: whole objects, every change. */
  projection?: "default" | "none";
  /** `true`: the proxy may send a change to an object the client holds as a merge patch against
   * it, which the client applies; the application still gets whole objects (a new object that
   * shares every unchanged member with the previous one). Default `false`. */
  deltas?: boolean;
}

/** What `mux.stats()` resolves to: the proxy's counters for this connection, and for each
 * subscription (by its id) and the upstream watch it shares. Bytes are frames' text. */
export interface MuxStats {
  connection: {
    framesIn: number;
    bytesIn: number;
    framesOut: number;
    bytesOut: number;
    /** What went on the wire for them: compressed, when the connection is (`compression`). */
    wireBytesOut: number;
    /** Bytes queued for this connection, not yet sent. */
    queuedBytes: number;
  };
  subscriptions: Record<string, {
    /** `event` frames sent, snapshots included. */
    events: number;
    bytes: number;
    /** `reset`s sent (a slow reader's overflow, an expired version, a lost resume point). */
    resets: number;
    /** Changes its projection hid (`projection: "default"`), not sent. */
    hidden: number;
    /** The upstream watch this subscription shares; `null` for the forwards' collection. */
    upstream: {
      /** Subscriptions, of every connection, sharing it. */
      subscribers: number;
      /** Requests to the API server: list pages, watches, catch-ups. */
      requests: number;
      /** Objects received: list items and watch events. */
      events: number;
      /** Bytes received from the API server. */
      bytes: number;
      /** Relists after the API server expired the watch's version. */
      resets: number;
    } | null;
  }>;
}

/** A watch's callbacks (read by `Mux::watch`). */
export interface WatchHandlers<T = KubeObject> {
  /** Each event, after it was applied to `items()`. */
  onEvent?: (event: WatchEvent<T>) => void;
  /** The snapshot (or the replay after a reconnect) is complete at `resourceVersion`. */
  onSynced?: (resourceVersion: string) => void;
  /** The server restarts this watch from a fresh snapshot; `items()` keeps the old state until `onSynced`. */
  onReset?: () => void;
  /** An error about this watch only. */
  onError?: (error: MuxError) => void;
  /** `items()` changed. */
  onChange?: () => void;
  /** The subscription's state changed. */
  onState?: (state: SubscriptionState) => void;
}
"#;

const CLOSED: &str = "kubemux: this Mux was closed with close(); create a new Mux to connect again";

const SUB_CLOSED: &str = "kubemux: this subscription was closed with close(); call mux.watch() again to watch again";

/// One multiplexed WebSocket to a kubemux proxy (`new Mux("wss://host/mux", options)`).
///
/// It connects at once and keeps reconnecting until `close()`; every watch is re-sent with its
/// resume point after a reconnect, so it carries on where it left off. Call `await init()` once
/// before constructing it.
#[wasm_bindgen]
pub struct Mux {
    shell: Shared,
}

#[wasm_bindgen]
impl Mux {
    /// Connects to `url` (`ws://…/mux` or `wss://…/mux`). Options: `token` (offered as the
    /// Kubernetes bearer-token subprotocol), `onState`, `onError` (errors that concern no
    /// subscription), `reconnectBaseMs`, `reconnectMaxMs`, `compression` (`"deflate"`, the
    /// default, or `"none"`).
    #[wasm_bindgen(constructor)]
    pub fn new(url: String, #[wasm_bindgen(unchecked_param_type = "MuxOptions")] options: JsValue) -> Result<Mux, JsValue> {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(js::type_error("kubemux: the URL must start with ws:// or wss://"));
        }
        let what = "new Mux()";
        js::options_object(&options, what)?;
        let token = js::string_option(&options, "token", what)?;
        let on_state = js::function_option(&options, "onState")?;
        let on_error = js::function_option(&options, "onError")?;
        let deflate = match js::string_option(&options, "compression", what)?.as_deref() {
            None | Some("deflate") => true,
            Some("none") => false,
            Some(_) => return Err(js::type_error("kubemux: new Mux(): `compression` must be \"deflate\" or \"none\"")),
        };
        let mut config = ClientConfig { seed: js::seed(), ..ClientConfig::default() };
        if let Some(base) = js::millis_option(&options, "reconnectBaseMs", what)? {
            config.backoff.base_ms = base.max(1);
        }
        if let Some(cap) = js::millis_option(&options, "reconnectMaxMs", what)? {
            config.backoff.cap_ms = cap.max(config.backoff.base_ms);
        }
        let shell = Shell::new(Core::with_payload(config, patch::patched), url, token, deflate, on_state, on_error);
        drive(&shell, |shell, now| shell.core.start(now));
        // The first `new WebSocket` runs synchronously here: if it threw (a malformed URL),
        // the caller learns it now rather than through endless reconnects.
        let error = shell.borrow_mut().connect_error.take();
        if let Some(error) = error {
            drive(&shell, |shell, _| shell.core.close());
            let message = js_sys::Error::from(error).message();
            return Err(JsError::new(&format!("kubemux: cannot open a WebSocket to this URL: {message}")).into());
        }
        Ok(Mux { shell })
    }

    /// Starts watching a collection: `{ cluster, path, labelSelector?, fieldSelector? }`, with
    /// optional callbacks `{ onEvent, onSynced, onReset, onError, onChange, onState }`.
    // `cargo xtask wasm` adds what wasm-bindgen cannot express: the method's `<T = KubeObject>`
    // (it has no generic exports) and that `handlers` may be omitted (as `options` above).
    #[wasm_bindgen(unchecked_return_type = "Subscription<T>")]
    pub fn watch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "WatchRequest")] request: JsValue,
        #[wasm_bindgen(unchecked_param_type = "WatchHandlers<T>")] handlers: JsValue,
    ) -> Result<Subscription, JsValue> {
        self.ensure_open()?;
        let what = "watch()";
        js::options_object(&request, what)?;
        let cluster = js::required_string(&request, "cluster", what)?;
        let path = js::required_string(&request, "path", what)?;
        let query = WatchQuery { label_selector: js::string_option(&request, "labelSelector", what)?, field_selector: js::string_option(&request, "fieldSelector", what)? };
        let projection = match js::string_option(&request, "projection", what)?.as_deref() {
            None | Some("none") => None,
            Some("default") => Some(ProjectionMode::Default),
            Some(_) => return Err(js::type_error("kubemux: watch(): `projection` must be \"default\" or \"none\"")),
        };
        let deltas = js::get(&request, "deltas");
        let deltas = match deltas.as_bool() {
            Some(deltas) => deltas,
            None if deltas.is_undefined() || deltas.is_null() => false,
            None => return Err(js::type_error("kubemux: watch(): `deltas` must be a boolean")),
        };
        let handlers = Handlers {
            on_event: js::function_option(&handlers, "onEvent")?,
            on_synced: js::function_option(&handlers, "onSynced")?,
            on_reset: js::function_option(&handlers, "onReset")?,
            on_error: js::function_option(&handlers, "onError")?,
            on_change: js::function_option(&handlers, "onChange")?,
            on_state: js::function_option(&handlers, "onState")?,
        };
        let id = self.shell.borrow_mut().fresh_id();
        let mut refused = None;
        drive(&self.shell, |shell, _| match shell.core.watch_with(&id, &cluster, &path, Some(query), WatchOptions { projection, deltas }) {
            Ok(outputs) => {
                shell.subs.insert(id.clone(), SubEntry::new(handlers));
                outputs
            }
            Err(error) => {
                refused = Some(error);
                Vec::new()
            }
        });
        if let Some(error) = refused {
            return Err(JsError::new(&format!("kubemux: watch() refused: {error}")).into());
        }
        Ok(Subscription { shell: self.shell.clone(), id })
    }

    /// Sets or replaces the bearer token used for `cluster` (in-band refresh); re-sent after
    /// every reconnect.
    pub fn auth(&self, cluster: String, token: String) -> Result<(), JsError> {
        self.ensure_open()?;
        let mut refused = None;
        drive(&self.shell, |shell, _| {
            shell.core.auth(&cluster, &token).unwrap_or_else(|error| {
                refused = Some(error);
                Vec::new()
            })
        });
        match refused {
            Some(error) => Err(JsError::new(&format!("kubemux: {error}"))),
            None => Ok(()),
        }
    }

    /// What this connection and each of its subscriptions have cost so far, as the proxy
    /// counts it (its `stats` frame): frames and bytes each way, resets, and for each
    /// subscription the upstream watch it shares (how many share it, requests made, objects and
    /// bytes received). Rejects when the connection is not open or closes before the answer.
    #[wasm_bindgen(unchecked_return_type = "Promise<MuxStats>")]
    pub fn stats(&self) -> js_sys::Promise {
        let shell = self.shell.clone();
        js_sys::Promise::new(&mut |resolve, reject| {
            let mut refused = None;
            drive(&shell, |shell, _| match shell.core.stats() {
                Ok((request, out)) => {
                    shell.stats.push((request, resolve.clone(), reject.clone()));
                    out
                }
                Err(error) => {
                    refused = Some(error);
                    Vec::new()
                }
            });
            if let Some(error) = refused {
                let _ = reject.call1(&JsValue::NULL, &js_sys::Error::new(&format!("kubemux: {error}")).into());
            }
        })
    }

    /// Closes the connection for good; nothing more is delivered. Closing twice is harmless.
    pub fn close(&self) {
        drive(&self.shell, |shell, _| shell.core.close());
    }

    /// The current connection state: `{ state: "connecting" | "open" | "reconnecting" |
    /// "closed", delayMs? }`.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> JsValue {
        shell::state_object(&self.shell.borrow().state)
    }

    fn ensure_open(&self) -> Result<(), JsError> {
        if self.shell.borrow().core.is_closed() { Err(JsError::new(CLOSED)) } else { Ok(()) }
    }
}

/// One watch on a `Mux`, with its live list of objects (from `mux.watch()`).
#[wasm_bindgen]
pub struct Subscription {
    shell: Shared,
    id: String,
}

#[wasm_bindgen]
impl Subscription {
    /// The id this subscription has on the wire (unique within its `Mux`).
    #[wasm_bindgen(getter)]
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The current objects, as plain JavaScript objects, in namespace/name order, in a new array
    /// (the objects themselves are shared with `getSnapshot()` and `onEvent`: one per version,
    /// to be read, not changed). Empty after a fatal error.
    #[wasm_bindgen(unchecked_return_type = "T[]")]
    pub fn items(&self) -> Result<JsValue, JsError> {
        self.ensure_live()?;
        let snapshot = self.shell.borrow_mut().snapshot(&self.id);
        // A copy of the snapshot's array, in the engine: the same objects.
        Ok(snapshot.unchecked_into::<js_sys::Array>().slice(0, u32::MAX).into())
    }

    /// The external-store contract (React's `useSyncExternalStore`, a Svelte store, a Vue
    /// `shallowRef`): `listener` is called, with no arguments, whenever `getSnapshot()` or
    /// `state()` would answer differently. Returns the function that removes it (calling it
    /// twice is harmless). Listeners end with the subscription.
    #[wasm_bindgen(unchecked_return_type = "() => void")]
    pub fn subscribe(&self, #[wasm_bindgen(unchecked_param_type = "() => void")] listener: Function) -> JsValue {
        let listener_id = {
            let mut shell = self.shell.borrow_mut();
            shell.next_listener += 1;
            let listener_id = shell.next_listener;
            if let Some(entry) = shell.subs.get_mut(&self.id) {
                entry.listeners.push((listener_id, listener));
            }
            listener_id
        };
        let weak = Rc::downgrade(&self.shell);
        let id = self.id.clone();
        let unsubscribe = move || {
            if let Some(shell) = weak.upgrade()
                && let Some(entry) = shell.borrow_mut().subs.get_mut(&id)
            {
                entry.listeners.retain(|(other, _)| *other != listener_id);
            }
        };
        Closure::<dyn FnMut()>::new(unsubscribe).into_js_value()
    }

    /// The current objects as an array (to be read, not changed: the type is `readonly T[]`),
    /// the same array on every call until something changes (then `subscribe()`'s listeners are
    /// called): what `useSyncExternalStore` and its kin need. A closed subscription answers an empty array, always the same one.
    #[wasm_bindgen(js_name = getSnapshot, unchecked_return_type = "readonly T[]")]
    pub fn get_snapshot(&self) -> JsValue {
        let mut shell = self.shell.borrow_mut();
        if shell.core.is_closed() {
            return shell::empty_array();
        }
        // The same array until the core's cache changes, then one patched from it.
        shell.snapshot(&self.id)
    }

    /// `"syncing"`, `"synced"`, `"stale"` or `"failed"`.
    #[wasm_bindgen(unchecked_return_type = "SubscriptionState")]
    pub fn state(&self) -> Result<String, JsError> {
        self.ensure_live()?;
        let shell = self.shell.borrow();
        Ok(shell.subs.get(&self.id).map_or("failed", |entry| shell::subscription_state_name(entry.state)).to_owned())
    }

    /// Stops watching; no callback of this subscription is called afterwards. Closing twice,
    /// or after the `Mux` was closed, is harmless.
    pub fn close(&self) {
        let closed = self.shell.borrow().core.is_closed();
        drive(&self.shell, |shell, _| {
            shell.subs.remove(&self.id);
            if closed { Vec::new() } else { shell.core.unwatch(&self.id).unwrap_or_default() }
        });
    }

    fn ensure_live(&self) -> Result<(), JsError> {
        let shell = self.shell.borrow();
        if shell.core.is_closed() {
            return Err(JsError::new(CLOSED));
        }
        if !shell.subs.contains_key(&self.id) {
            return Err(JsError::new(SUB_CLOSED));
        }
        Ok(())
    }
}
