// kubemux demo app: every cluster's pods at a glance over one multiplexed WebSocket, the live
// namespaces and events of the selected cluster, pod terminals in tabs, every cluster's nodes and
// deployments (Restart rolls one out), and the proxy's port-forwards, live.

import init, { Mux, type ConnectionState } from "kubemux";
import "./styles.css";
import { ClusterList, NamespaceList, fetchClusters, type ClusterInfo } from "./clusters";
import { readConfig } from "./config";
import { ConnectionIndicator } from "./connection";
import { h, setText } from "./dom";
import { EventsPanel } from "./events";
import { ForwardsView } from "./forwards";
import { PodsPanel, type PodRef } from "./pods";
import type { TerminalView } from "./terminal";
import { DeploymentsView, NodesView } from "./workloads";

const CLUSTER_REFRESH_MS = 5000;

interface Tab {
  id: string;
  button: HTMLButtonElement;
  panel: HTMLElement;
  terminal?: TerminalView;
}

class App {
  private readonly config = readConfig();
  private readonly connection = new ConnectionIndicator();
  private readonly clusterList = new ClusterList((name) => this.selectCluster(name));
  private readonly namespaceList = new NamespaceList((ns) => this.selectNamespace(ns));
  private readonly events = new EventsPanel();
  private readonly forwards = new ForwardsView(this.config.httpBase);
  private readonly nodes = new NodesView();
  private readonly deployments = new DeploymentsView(this.config.httpBase);
  private readonly podPanels = new Map<string, PodsPanel>();
  private readonly podsColumn = h("div", { class: "pods-column" });
  private readonly grid = h("div", { class: "grid" }, this.podsColumn, this.events.element);
  private readonly scopeLabel = h("p", { class: "scope" });
  private readonly tabList = h("div", { class: "tabs", role: "tablist", "aria-label": "Views" });
  private readonly tabPanels = h("main", { class: "content" });
  private readonly tabs: Tab[] = [];
  private mux!: Mux;
  private clusters: ClusterInfo[] = [];
  private cluster: string | null = null;
  private namespace: string | null = null;
  private open = false;
  private nextTerminal = 1;

  async start(root: HTMLElement): Promise<void> {
    const overview = h(
      "section",
      { class: "overview" },
      h("div", { class: "overview-head" }, h("h1", {}, "Pods across clusters"), this.scopeLabel),
      this.grid,
    );
    this.addTab("overview", "Overview", overview, false);
    this.addTab("nodes", "Nodes", this.nodes.element, false);
    this.addTab("deployments", "Deployments", this.deployments.element, false);
    this.addTab("forwards", "Forwards", this.forwards.element, false);
    root.replaceChildren(
      h(
        "header",
        { class: "topbar" },
        h("a", { class: "brand", href: "./", "aria-label": "kubemux home" }, h("span", { class: "logo", "aria-hidden": "true" }), "kubemux"),
        this.tabList,
        h("span", { class: "spacer" }),
        this.connection.element,
      ),
      h("div", { class: "layout" }, h("aside", { class: "sidebar", "aria-label": "Clusters and namespaces" }, this.clusterList.element, this.namespaceList.element), this.tabPanels),
    );
    this.activate("overview");

    await init();
    this.mux = new Mux(this.config.muxUrl, {
      onState: (state) => this.onConnection(state),
      onError: (error) => console.warn("kubemux:", error.status.message),
    });
    this.clusters = await fetchClusters(this.config.httpBase);
    this.applyClusters();
    this.selectCluster(this.clusters[0]?.name ?? null);
    this.showScope();

    window.setInterval(() => this.pollClusters(), CLUSTER_REFRESH_MS);
    window.setInterval(() => {
      for (const panel of this.podPanels.values()) panel.tick();
      this.events.tick();
    }, 1000);
  }

  private onConnection(state: ConnectionState): void {
    this.connection.set(state);
    const wasOpen = this.open;
    this.open = state.state === "open";
    if (!this.open && wasOpen) this.clusterList.unknown("The proxy is unreachable; cluster health will refresh when it is back.");
    if (this.open && !wasOpen && this.clusters.length) void this.pollClusters();
  }

  /** Asks the proxy for cluster health; skipped while the connection is down (it would only fail). */
  private async pollClusters(): Promise<void> {
    if (!this.open) return;
    try {
      this.clusters = await fetchClusters(this.config.httpBase);
      this.applyClusters();
    } catch (error) {
      this.clusterList.unknown(`Could not read cluster health: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  private applyClusters(): void {
    this.clusterList.update(this.clusters);
    const names = new Set(this.clusters.map((c) => c.name));
    for (const [name, panel] of this.podPanels) {
      if (!names.has(name)) {
        panel.stop();
        panel.element.remove();
        this.podPanels.delete(name);
      }
    }
    for (const cluster of this.clusters) {
      if (this.podPanels.has(cluster.name)) continue;
      const panel = new PodsPanel(cluster.name, (pod) => void this.openTerminal(pod));
      this.podPanels.set(cluster.name, panel);
      if (this.mux) panel.watch(this.mux, this.namespace);
    }
    if (this.mux) {
      const names = this.clusters.map((c) => c.name);
      this.forwards.setClusters(this.mux, names);
      this.nodes.setClusters(this.mux, names);
      this.deployments.setClusters(this.mux, names);
    }
    // Pods panels in the proxy's order; the events of the selected cluster beside them.
    this.podsColumn.replaceChildren(...[...this.podPanels.values()].map((p) => p.element));
  }

  private selectCluster(name: string | null): void {
    if (!name || name === this.cluster) return;
    this.cluster = name;
    this.clusterList.select(name);
    this.namespaceList.watch(this.mux, name);
    this.events.watch(this.mux, name, this.namespace);
    for (const [cluster, panel] of this.podPanels) panel.element.classList.toggle("selected", cluster === name);
  }

  private selectNamespace(namespace: string | null): void {
    if (namespace === this.namespace) return;
    this.namespace = namespace;
    this.namespaceList.select(namespace);
    this.refreshPods();
    if (this.cluster) this.events.watch(this.mux, this.cluster, namespace);
  }

  private refreshPods(): void {
    this.showScope();
    for (const panel of this.podPanels.values()) panel.watch(this.mux, this.namespace);
  }

  private showScope(): void {
    setText(this.scopeLabel, this.namespace ? `Namespace ${this.namespace}, live from every cluster over one WebSocket` : "All namespaces, live from every cluster over one WebSocket");
  }

  private async openTerminal(pod: PodRef): Promise<void> {
    const id = `terminal-${this.nextTerminal++}`;
    // xterm.js is most of the app's weight: load it with the first terminal.
    const { TerminalView } = await import("./terminal");
    const terminal = new TerminalView(pod, this.config.httpBase);
    this.addTab(id, pod.pod, terminal.element, true, terminal);
    this.activate(id);
    terminal.mount();
    terminal.focus();
  }

  private addTab(id: string, label: string, content: HTMLElement, closable: boolean, terminal?: TerminalView): void {
    const button = h("button", { type: "button", role: "tab", class: "tab", id: `tab-${id}`, "aria-controls": `panel-${id}`, "data-tab": id }, closable ? h("span", { class: "tab-icon", "aria-hidden": "true" }, ">_") : null, h("span", {}, label));
    button.addEventListener("click", () => this.activate(id));
    button.addEventListener("keydown", (event) => this.onTabKey(event, id));
    const wrapper = h("span", { class: "tab-wrap" }, button);
    if (closable) {
      const close = h("button", { type: "button", class: "tab-close", "aria-label": `Close terminal ${label}`, title: "Close (ends the shell)", "data-close": id }, "×");
      close.addEventListener("click", () => this.closeTab(id));
      wrapper.append(close);
    }
    this.tabList.append(wrapper);
    const panel = h("div", { role: "tabpanel", class: "tab-panel", id: `panel-${id}`, "aria-labelledby": `tab-${id}`, hidden: true }, content);
    this.tabPanels.append(panel);
    this.tabs.push({ id, button, panel, terminal });
  }

  private onTabKey(event: KeyboardEvent, id: string): void {
    const index = this.tabs.findIndex((t) => t.id === id);
    let next = -1;
    if (event.key === "ArrowRight") next = (index + 1) % this.tabs.length;
    else if (event.key === "ArrowLeft") next = (index - 1 + this.tabs.length) % this.tabs.length;
    else if (event.key === "Delete" && id !== "overview") {
      event.preventDefault();
      this.closeTab(id);
      return;
    }
    if (next >= 0) {
      event.preventDefault();
      this.activate(this.tabs[next].id);
      this.tabs[next].button.focus();
    }
  }

  private activate(id: string): void {
    for (const tab of this.tabs) {
      const active = tab.id === id;
      tab.button.setAttribute("aria-selected", String(active));
      tab.button.tabIndex = active ? 0 : -1;
      tab.panel.hidden = !active;
      if (active) tab.terminal?.focus();
    }
  }

  private closeTab(id: string): void {
    const index = this.tabs.findIndex((t) => t.id === id);
    if (index < 0) return;
    const [tab] = this.tabs.splice(index, 1);
    tab.terminal?.dispose();
    tab.button.parentElement?.remove();
    tab.panel.remove();
    const fallback = this.tabs[Math.max(0, index - 1)];
    this.activate(fallback.id);
    fallback.button.focus();
  }
}

const root = document.getElementById("app");
if (root) {
  new App().start(root).catch((error: unknown) => {
    root.replaceChildren(h("div", { class: "fatal", role: "alert" }, h("h1", {}, "kubemux could not start"), h("p", {}, error instanceof Error ? error.message : String(error))));
    console.warn("kubemux could not start:", error);
  });
}
