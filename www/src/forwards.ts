// The Forwards view: the proxy's port-forwards (`forwards:` in its config), live. Each cluster's
// forwards are one watch of `/apis/kubemux.dev/v1/forwards` (docs/PROTOCOL.md §10), so a state
// change (a pod restart: Reconnecting, then Active on the new pod) shows as it happens.
//
// Each row keeps the states it went through (`data-history`, the last HISTORY_LENGTH as
// `state:pod`, separated by `|`), so a reader that looks later than a short-lived state can
// still tell it happened.

import type { KubeObject, Mux } from "kubemux";
import { flash, h, setText } from "./dom";
import { objectKey } from "./format";
import { WatchPanel } from "./panel";

export const FORWARDS_PATH = "/apis/kubemux.dev/v1/forwards";
const HISTORY_LENGTH = 16;

export interface Forward extends KubeObject {
  spec?: { cluster?: string; target?: string; port?: string; bind?: string; localPort?: number; http?: boolean };
  status?: {
    state?: string;
    reason?: string | null;
    message?: string | null;
    pod?: string | null;
    localPort?: number;
    connections?: number;
    bytesIn?: number;
    bytesOut?: number;
    reconnects?: number;
    since?: string;
  };
}

const COLUMNS = ["Name", "Target", "State", "Pod", "Local", "Conns", "In", "Out", "Open"] as const;

const TONES: Record<string, string> = { Active: "good", Starting: "info", Reconnecting: "warn", Degraded: "warn", Failed: "bad" };

/** `1.2 MiB`. */
export function formatBytes(bytes: number | undefined): string {
  let value = bytes ?? 0;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

interface Row {
  element: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  state: HTMLElement;
  reason: HTMLElement;
  link: HTMLAnchorElement;
  history: string[];
}

/** One cluster's forwards. */
class ClusterForwards {
  readonly panel: WatchPanel<Forward>;
  private readonly tbody = h("tbody");
  private readonly rows = new Map<string, Row>();
  private synced = false;
  count = 0;

  constructor(
    readonly cluster: string,
    private readonly httpBase: string,
    private readonly onRender: () => void,
  ) {
    this.panel = new WatchPanel<Forward>({ name: `forwards:${cluster}`, title: cluster, render: (items) => this.render(items) });
    const table = h(
      "table",
      { class: "pods forwards" },
      h("thead", {}, h("tr", {}, ...COLUMNS.map((name) => h("th", { scope: "col", class: `col-${name.toLowerCase()}` }, name)))),
      this.tbody,
    );
    this.panel.body.append(h("div", { class: "table-wrap" }, table));
    this.panel.element.classList.add("forwards-panel");
    this.panel.element.hidden = true;
  }

  watch(mux: Mux): void {
    this.panel.watch(mux, { cluster: this.cluster, path: FORWARDS_PATH }, "port-forwards kept by the proxy");
  }

  stop(): void {
    this.panel.stop();
  }

  private render(forwards: readonly Forward[]): void {
    const state = this.panel.state();
    const highlight = this.synced;
    if (state === "synced") this.synced = true;
    const seen = new Set<string>();
    for (const forward of forwards) {
      const key = objectKey(forward);
      seen.add(key);
      let row = this.rows.get(key);
      if (!row) {
        row = this.createRow(forward);
        this.rows.set(key, row);
        this.tbody.append(row.element);
      }
      if (this.fill(row, forward) && highlight) flash(row.element);
    }
    for (const [key, row] of this.rows) {
      if (!seen.has(key)) {
        row.element.remove();
        this.rows.delete(key);
      }
    }
    this.count = forwards.length;
    // A cluster with no forwards takes no room; one whose watch failed shows why.
    this.panel.element.hidden = forwards.length === 0 && state !== "failed" && this.panel.error() === null;
    this.panel.setCount(`${forwards.length} ${forwards.length === 1 ? "forward" : "forwards"}`);
    this.onRender();
  }

  private createRow(forward: Forward): Row {
    const cells = COLUMNS.map((column) => h("td", { class: `col-${column.toLowerCase()}` }));
    const state = h("span", { class: "fwd-state" });
    const reason = h("span", { class: "fwd-reason" });
    cells[2].append(state, reason);
    const link = h("a", { class: "fwd-open", target: "_blank", rel: "noopener" }, "open");
    cells[8].append(link);
    const element = h("tr", { "data-forward": forward.metadata.name, "data-key": objectKey(forward) }, ...cells);
    return { element, cells, state, reason, link, history: [] };
  }

  /** Writes the row; true when the state or pod changed. */
  private fill(row: Row, forward: Forward): boolean {
    const status = forward.status ?? {};
    const spec = forward.spec ?? {};
    const stateName = status.state ?? "Unknown";
    const pod = status.pod ?? "";
    const name = forward.metadata.namespace ? `${forward.metadata.namespace}/${forward.metadata.name}` : forward.metadata.name;
    setText(row.cells[0], name);
    setText(row.cells[1], `${spec.target ?? ""}:${spec.port ?? ""}`);
    const changed = setText(row.state, stateName) || row.element.dataset.pod !== pod;
    row.state.dataset.tone = TONES[stateName] ?? "warn";
    row.element.dataset.state = stateName;
    row.element.dataset.pod = pod;
    setText(row.reason, status.reason ? status.reason : "");
    row.reason.title = status.message ?? "";
    setText(row.cells[3], pod || "–");
    setText(row.cells[4], status.localPort ? `${spec.bind ?? "127.0.0.1"}:${status.localPort}` : "–");
    setText(row.cells[5], String(status.connections ?? 0));
    setText(row.cells[6], formatBytes(status.bytesIn));
    setText(row.cells[7], formatBytes(status.bytesOut));
    // The app in the pod, through the proxy (`/forwards/{name}/`): no local port needed.
    row.link.hidden = !spec.http;
    row.link.href = `${this.httpBase}/forwards/${encodeURIComponent(forward.metadata.name)}/`;
    const entry = `${stateName}:${pod}`;
    if (row.history[row.history.length - 1] !== entry) {
      row.history.push(entry);
      if (row.history.length > HISTORY_LENGTH) row.history.shift();
      row.element.dataset.history = row.history.join("|");
    }
    return changed;
  }
}

/** Every cluster's forwards, one panel each; clusters without forwards are hidden. */
export class ForwardsView {
  readonly element: HTMLElement;
  private readonly panels = new Map<string, ClusterForwards>();
  private readonly column = h("div", { class: "pods-column" });
  private readonly empty = h("p", { class: "empty" }, "No port-forwards: add a forwards: entry to the proxy's config file and they appear here, live.");

  constructor(private readonly httpBase: string) {
    this.element = h(
      "section",
      { class: "overview", "data-view": "forwards" },
      h("div", { class: "overview-head" }, h("h1", {}, "Port-forwards"), h("p", { class: "scope" }, "Kept by the proxy through pod restarts and rollouts; live over the same WebSocket")),
      this.empty,
      this.column,
    );
  }

  /** Follows the proxy's clusters: a watch for each new one, none for those gone. */
  setClusters(mux: Mux, clusters: string[]): void {
    const names = new Set(clusters);
    for (const [name, panel] of this.panels) {
      if (!names.has(name)) {
        panel.stop();
        this.panels.delete(name);
      }
    }
    for (const name of clusters) {
      if (this.panels.has(name)) continue;
      const panel = new ClusterForwards(name, this.httpBase, () => this.showEmpty());
      this.panels.set(name, panel);
      panel.watch(mux);
    }
    this.column.replaceChildren(...[...this.panels.values()].map((p) => p.panel.element));
    this.showEmpty();
  }

  private showEmpty(): void {
    this.empty.hidden = [...this.panels.values()].some((p) => p.count > 0 || !p.panel.element.hidden);
  }
}
