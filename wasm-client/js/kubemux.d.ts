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
  /** The current objects, as plain objects in namespace/name order. Throws after `close()`. */
  items(): T[];
  /** The subscription's state. Throws after `close()`. */
  state(): SubscriptionState;
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

/** What `init` accepts: the `.wasm` URL, its bytes, or a compiled module. Defaults to the file next to this module. */
export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;

/** Loads the WebAssembly module; await it once before using `Mux`. */
export default function init(moduleOrPath?: { module_or_path: InitInput | Promise<InitInput> } | InitInput | Promise<InitInput>): Promise<unknown>;

/** Synchronous variant of `init` for an already fetched module. */
export function initSync(module: { module: BufferSource | WebAssembly.Module } | BufferSource | WebAssembly.Module): unknown;
