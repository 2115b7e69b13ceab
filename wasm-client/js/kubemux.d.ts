// Hand-written types for the `kubemux` package (the Rust sources are in wasm-client/src).
// Kubernetes objects are plain JSON objects, typed loosely on purpose: the package does not
// ship Kubernetes' own API types; pass your own object type as `T` to `watch`.

/** A Kubernetes object as the API server sends it. */
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
}

/** What to watch: a collection path, optionally filtered. */
export interface WatchRequest {
  /** A cluster name the proxy knows. */
  cluster: string;
  /** `/api/v1[/namespaces/{ns}]/{resource}` or `/apis/{group}/{version}[/namespaces/{ns}]/{resource}`. */
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
}

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

/** One watch, with its live list of objects. */
export class Subscription<T = KubeObject> {
  private constructor();
  /** The id this watch has on the wire. */
  readonly id: string;
  /**
   * The current objects, as plain objects in namespace/name order, in a new array. The objects
   * are shared with `getSnapshot()` and `onEvent` (one per resourceVersion, the same object
   * while it is unchanged): read them, do not change them. Throws after `close()`.
   */
  items(): T[];
  /** The subscription's state. Throws after `close()`. */
  state(): SubscriptionState;
  /**
   * The external-store contract (React's `useSyncExternalStore`, a Svelte store, a Vue
   * `shallowRef`): `listener` is called with no arguments whenever `getSnapshot()` or `state()`
   * would answer differently. Returns the function that removes it.
   */
  subscribe(listener: () => void): () => void;
  /**
   * The current objects as a frozen array: the same array on every call until something
   * changes. After `close()`, one empty array, always the same.
   */
  getSnapshot(): readonly T[];
  /** Stops watching; no callback of this watch is called afterwards. Idempotent. */
  close(): void;
  /** Frees the wasm-side handle; `close()` first if the watch should end. */
  free(): void;
}

/**
 * One multiplexed WebSocket to a kubemux proxy. Connects at once, reconnects on its own and
 * resumes every watch where it left off. Call `await init()` once before constructing it.
 */
export class Mux {
  /** @param url `ws://host/mux` or `wss://host/mux`. Throws on a malformed URL. */
  constructor(url: string, options?: MuxOptions);
  /** Starts a watch. Throws after `close()` and on an invalid request. */
  watch<T = KubeObject>(request: WatchRequest, handlers?: WatchHandlers<T>): Subscription<T>;
  /** Sets or replaces the token the proxy uses for `cluster` (in-band refresh). Throws after `close()`. */
  auth(cluster: string, token: string): void;
  /** Closes for good. Idempotent. */
  close(): void;
  /** The current connection state. */
  readonly state: ConnectionState;
  /** Frees the wasm-side handle (closing the connection). */
  free(): void;
}

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

/**
 * An interactive TTY session in a pod's container, through a kubemux proxy's Kubernetes-compatible
 * exec endpoint (`v5.channel.k8s.io`, else `v4.channel.k8s.io`), on a WebSocket of its own. It
 * never reconnects: when the connection drops, `onError` and `onExit` report it, and a new
 * session takes a new `Terminal`. Call `await init()` once before constructing it.
 *
 * With xterm.js: `term.onData((s) => t.write(s))`, `onData: (b) => term.write(b)`,
 * `term.onResize(({ cols, rows }) => t.resize(cols, rows))`.
 */
export class Terminal {
  /**
   * @param proxyUrl The proxy's base URL: `https://host`, `http://host`, `wss://host` or `ws://host`,
   *   with an optional path prefix. Throws on a malformed URL or invalid options.
   */
  constructor(proxyUrl: string, options: TerminalOptions);
  /**
   * Sends input: a string (sent as UTF-8, as xterm.js `onData` gives it) or bytes (for xterm.js
   * `onBinary` strings: `Uint8Array.from(s, (c) => c.charCodeAt(0))`). Input written before the
   * session started is sent when it starts. Throws after `close()` or once the session ended.
   */
  write(data: string | Uint8Array): void;
  /** Sets the terminal size (whole numbers, 1–65535). Throws after `close()` or once the session ended. */
  resize(cols: number, rows: number): void;
  /**
   * Ends the session: the socket closes at once, and the proxy ends the shell (Ctrl-C, then
   * `exit` up to three times and Ctrl-D, as a user would). No callback is called afterwards.
   * Idempotent.
   */
  close(): void;
  /** The command of the current (or last) attempt, e.g. `["sh"]` after a fallback. */
  readonly command: string[];
  /** Frees the wasm-side handle, ending the session as `close()` does (so does garbage collection of the handle: keep a reference while the session should run). */
  free(): void;
}

/** What `init` accepts: the `.wasm` URL, its bytes, or a compiled module. Defaults to the file next to this module. */
export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

/** Loads the WebAssembly module; await it once before using `Mux` or `Terminal`. */
export default function init(moduleOrPath?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>): Promise<unknown>;

/** Synchronous variant of `init` for an already fetched module. */
export function initSync(module: { module: BufferSource | WebAssembly.Module } | BufferSource | WebAssembly.Module): unknown;
