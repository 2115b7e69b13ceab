// The clusters list (health from GET /clusters, refreshed) and the live namespaces of the
// selected cluster: both in the sidebar, both keyboard-operable buttons.

import type { KubeObject, Mux } from "kubemux";
import { h, setText } from "./dom";
import { WatchPanel } from "./panel";

export interface ClusterInfo {
  name: string;
  status: "ok" | "unreachable" | "unauthorized" | "unknown" | string;
  version?: string | null;
}

const STATUS_TEXT: Record<string, string> = { ok: "healthy", unreachable: "unreachable", unauthorized: "unauthorized", unknown: "checking" };

export async function fetchClusters(httpBase: string): Promise<ClusterInfo[]> {
  const response = await fetch(`${httpBase}/clusters`, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`GET /clusters: ${response.status} ${response.statusText}`);
  return (await response.json()) as ClusterInfo[];
}

export class ClusterList {
  readonly element: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly note: HTMLElement;
  private readonly buttons = new Map<string, { button: HTMLButtonElement; status: HTMLElement; version: HTMLElement }>();
  private selected: string | null = null;

  constructor(private readonly onSelect: (cluster: string) => void) {
    this.list = h("ul", { class: "nav-list" });
    this.note = h("p", { class: "nav-note", hidden: true });
    this.element = h("section", { class: "nav-section", "data-panel": "clusters", "aria-labelledby": "clusters-heading" }, h("h2", { id: "clusters-heading" }, "Clusters"), this.list, this.note);
  }

  update(clusters: ClusterInfo[]): void {
    this.note.hidden = true;
    const names = new Set(clusters.map((c) => c.name));
    for (const [name, entry] of this.buttons) {
      if (!names.has(name)) {
        entry.button.parentElement?.remove();
        this.buttons.delete(name);
      }
    }
    for (const cluster of clusters) {
      let entry = this.buttons.get(cluster.name);
      if (!entry) {
        const status = h("span", { class: "health" });
        const version = h("span", { class: "nav-meta" });
        const button = h(
          "button",
          { type: "button", class: "nav-item two-line", "data-cluster": cluster.name },
          status,
          h("span", { class: "nav-text" }, h("span", { class: "nav-name" }, cluster.name), version),
        );
        button.addEventListener("click", () => this.onSelect(cluster.name));
        entry = { button, status, version };
        this.buttons.set(cluster.name, entry);
        this.list.append(h("li", {}, button));
      }
      entry.status.dataset.status = cluster.status;
      entry.button.dataset.status = cluster.status;
      entry.button.title = `${cluster.name}: ${STATUS_TEXT[cluster.status] ?? cluster.status}`;
      const health = STATUS_TEXT[cluster.status] ?? cluster.status;
      setText(entry.version, cluster.status === "ok" && cluster.version ? `${health} · ${cluster.version}` : health);
    }
    this.select(this.selected);
  }

  /** Shown while the proxy cannot be asked (the connection is down). */
  unknown(reason: string): void {
    for (const entry of this.buttons.values()) {
      entry.status.dataset.status = "unknown";
      setText(entry.version, "unknown");
    }
    this.note.hidden = false;
    setText(this.note, reason);
  }

  select(name: string | null): void {
    this.selected = name;
    for (const [cluster, entry] of this.buttons) entry.button.setAttribute("aria-pressed", String(cluster === name));
  }
}

export class NamespaceList {
  readonly panel: WatchPanel<KubeObject>;
  private readonly list: HTMLUListElement;
  private selected: string | null = null;

  constructor(private readonly onSelect: (namespace: string | null) => void) {
    this.list = h("ul", { class: "nav-list" });
    this.panel = new WatchPanel<KubeObject>({ name: "namespaces", title: "Namespaces", render: (items) => this.render(items) });
    this.panel.element.classList.add("nav-section", "namespaces-panel");
    this.panel.body.append(this.list);
  }

  get element(): HTMLElement {
    return this.panel.element;
  }

  watch(mux: Mux, cluster: string): void {
    this.panel.watch(mux, { cluster, path: "/api/v1/namespaces" }, cluster);
  }

  select(namespace: string | null): void {
    this.selected = namespace;
    for (const button of this.list.querySelectorAll<HTMLButtonElement>("button")) {
      button.setAttribute("aria-pressed", String((button.dataset.namespace || null) === namespace));
    }
  }

  private render(items: readonly KubeObject[]): void {
    const names = [null, ...items.map((ns) => ns.metadata.name)];
    // Keep focus where it was when the list re-renders.
    const focused = (document.activeElement as HTMLElement | null)?.dataset?.namespace;
    this.list.replaceChildren(
      ...names.map((name) => {
        const button = h("button", { type: "button", class: "nav-item", "data-namespace": name ?? "" }, h("span", { class: "nav-name" }, name ?? "All namespaces"));
        button.addEventListener("click", () => this.onSelect(name));
        return h("li", {}, button);
      }),
    );
    this.select(this.selected);
    if (focused !== undefined) this.list.querySelector<HTMLButtonElement>(`button[data-namespace="${CSS.escape(focused)}"]`)?.focus();
    this.panel.setCount(items.length ? String(items.length) : "");
  }
}
