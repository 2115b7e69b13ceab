// The plain-JavaScript client the benchmark pages measure the package against: what a developer
// would write instead of using it. One WebSocket speaking kubemux.v1 (docs/PROTOCOL.md),
// `JSON.parse` per frame, a `Map` per subscription keyed by namespace/name, the handlers called
// as the package calls them. No resume, no reconnect: the benchmarks need neither.
export class PlainClient {
  constructor(url) {
    this.subscriptions = new Map();
    this.ws = new WebSocket(url, "kubemux.v1");
    this.opened = new Promise((resolve, reject) => {
      this.ws.addEventListener("open", resolve, { once: true });
      this.ws.addEventListener("error", () => reject(new Error("the plain client's socket failed")), { once: true });
    });
    this.ws.addEventListener("message", (event) => this.onMessage(JSON.parse(event.data)));
  }

  async watch(id, cluster, path, handlers) {
    await this.opened;
    const sub = { items: new Map(), handlers, synced: false };
    this.subscriptions.set(id, sub);
    this.ws.send(JSON.stringify({ op: "watch", id, cluster, path }));
    return sub;
  }

  onMessage(message) {
    const sub = this.subscriptions.get(message.id);
    if (!sub) return;
    switch (message.op) {
      case "event": {
        const meta = message.object.metadata;
        const key = `${meta.namespace ?? ""}/${meta.name}`;
        if (message.type === "DELETED") sub.items.delete(key);
        else sub.items.set(key, message.object);
        sub.handlers.onEvent?.(message);
        sub.handlers.onChange?.();
        break;
      }
      case "reset":
        sub.items.clear();
        sub.synced = false;
        sub.handlers.onReset?.();
        break;
      case "synced":
        sub.synced = true;
        sub.handlers.onSynced?.();
        break;
      case "error":
        sub.handlers.onError?.(message);
        break;
    }
  }

  close() {
    // Its objects go with it (a closing socket's listener would otherwise keep the Map, and the
    // next client's memory would be measured against a baseline that still holds them).
    for (const sub of this.subscriptions.values()) sub.items.clear();
    this.subscriptions.clear();
    this.ws.close();
  }
}
