// The live pods table: one row per pod, updated in place; a row that changes lights up briefly.

import type { Mux } from "kubemux";
import { flash, h, setText } from "./dom";
import { type Pod, age, objectKey, podReady, podRestarts, podStatus, statusTone } from "./format";
import { WatchPanel } from "./panel";

export interface PodRef {
  cluster: string;
  namespace: string;
  pod: string;
  containers: string[];
}

const COLUMNS = ["Name", "Ready", "Status", "Restarts", "Age", "Node"] as const;

interface Row {
  element: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  namespace: HTMLElement;
  name: HTMLElement;
  pod: Pod;
}

export class PodsPanel {
  readonly panel: WatchPanel<Pod>;
  private readonly tbody: HTMLTableSectionElement;
  private readonly empty: HTMLElement;
  private readonly rows = new Map<string, Row>();
  /** Keys changed by events since the last render: these rows flash. */
  private readonly changed = new Set<string>();
  private synced = false;
  /** The row that takes Tab focus (one per table; arrows move between rows). */
  private focusKey: string | null = null;

  constructor(
    readonly cluster: string,
    private readonly onOpen: (pod: PodRef) => void,
  ) {
    this.panel = new WatchPanel<Pod>({
      name: `pods:${cluster}`,
      title: cluster,
      render: (items) => this.render(items),
      onEvent: (event) => this.changed.add(objectKey(event.object)),
    });
    this.tbody = h("tbody");
    this.empty = h("p", { class: "empty", hidden: true }, "No pods.");
    const table = h(
      "table",
      { class: "pods" },
      h("thead", {}, h("tr", {}, ...COLUMNS.map((name) => h("th", { scope: "col", class: `col-${name.toLowerCase()}` }, name)))),
      this.tbody,
    );
    this.panel.body.append(h("div", { class: "table-wrap" }, table), this.empty);
    this.panel.element.classList.add("pods-panel");
  }

  get element(): HTMLElement {
    return this.panel.element;
  }

  watch(mux: Mux, namespace: string | null): void {
    this.synced = false;
    for (const row of this.rows.values()) row.element.remove();
    this.rows.clear();
    this.changed.clear();
    const path = namespace ? `/api/v1/namespaces/${namespace}/pods` : "/api/v1/pods";
    this.panel.watch(mux, { cluster: this.cluster, path }, namespace ? `pods in ${namespace}` : "pods in all namespaces");
  }

  stop(): void {
    this.panel.stop();
  }

  /** Ages move on without events: refresh that one column. */
  tick(): void {
    for (const row of this.rows.values()) setText(row.cells[4], age(row.pod.metadata.creationTimestamp));
  }

  private render(pods: readonly Pod[]): void {
    const state = this.panel.state();
    // The first snapshot does not flash; changes after it do.
    const highlight = this.synced;
    if (state === "synced") this.synced = true;
    const seen = new Set<string>();
    let previous: HTMLTableRowElement | null = null;
    for (const pod of pods) {
      const key = objectKey(pod);
      seen.add(key);
      let row = this.rows.get(key);
      const isNew = !row;
      if (!row) {
        row = this.createRow(pod);
        this.rows.set(key, row);
      }
      // An unchanged pod is the same object in every snapshot: nothing to fill.
      const updated = !isNew && row.pod === pod ? false : this.fill(row, pod);
      row.pod = pod;
      // Keep DOM order equal to the list order (namespace/name), moving only what is out of place.
      const expected: ChildNode | null = previous ? previous.nextSibling : this.tbody.firstChild;
      if (expected !== row.element) this.tbody.insertBefore(row.element, expected);
      previous = row.element;
      if (highlight && (isNew || updated || this.changed.has(key))) flash(row.element);
    }
    for (const [key, row] of this.rows) {
      if (!seen.has(key)) {
        row.element.remove();
        this.rows.delete(key);
      }
    }
    this.changed.clear();
    this.updateTabStops();
    this.empty.hidden = pods.length > 0 || state !== "synced";
    this.panel.setCount(state === "failed" ? "" : `${pods.length} ${pods.length === 1 ? "pod" : "pods"}`);
  }

  /** Roving tabindex: Tab enters the table once, on the last row focused (else the first). */
  private updateTabStops(): void {
    if (this.focusKey !== null && !this.rows.has(this.focusKey)) this.focusKey = null;
    const stop = this.focusKey ?? (this.tbody.firstElementChild as HTMLElement | null)?.dataset.key ?? null;
    for (const [key, row] of this.rows) row.element.tabIndex = key === stop ? 0 : -1;
  }

  private createRow(pod: Pod): Row {
    const name = h("span", { class: "pod-name" });
    const namespace = h("span", { class: "pod-namespace" });
    const cells = COLUMNS.map((column) => h("td", { class: `col-${column.toLowerCase()}` }));
    cells[0].append(namespace, name);
    const element = h("tr", { tabindex: -1, "data-key": objectKey(pod), title: "Enter: open a terminal in this pod" }, ...cells);
    element.addEventListener("focus", () => {
      this.focusKey = objectKey(pod);
      this.updateTabStops();
    });
    const open = () => {
      const current = this.rows.get(objectKey(pod))?.pod ?? pod;
      this.onOpen({
        cluster: this.cluster,
        namespace: current.metadata.namespace ?? "default",
        pod: current.metadata.name,
        containers: (current.spec?.containers ?? []).map((c) => c.name),
      });
    };
    element.addEventListener("click", open);
    element.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        open();
      } else if (["ArrowDown", "ArrowUp", "Home", "End"].includes(event.key)) {
        event.preventDefault();
        const next =
          event.key === "ArrowDown" ? element.nextElementSibling
          : event.key === "ArrowUp" ? element.previousElementSibling
          : event.key === "Home" ? this.tbody.firstElementChild
          : this.tbody.lastElementChild;
        (next as HTMLElement | null)?.focus();
      }
    });
    return { element, cells, name, namespace, pod };
  }

  /** Writes the row's cells; true when a visible value changed. */
  private fill(row: Row, pod: Pod): boolean {
    const status = podStatus(pod);
    let changed = false;
    changed = setText(row.name, pod.metadata.name) || changed;
    changed = setText(row.namespace, pod.metadata.namespace ?? "") || changed;
    changed = setText(row.cells[1], podReady(pod)) || changed;
    changed = setText(row.cells[2], status) || changed;
    row.cells[2].dataset.tone = statusTone(status);
    changed = setText(row.cells[3], String(podRestarts(pod))) || changed;
    setText(row.cells[4], age(pod.metadata.creationTimestamp));
    changed = setText(row.cells[5], pod.spec?.nodeName ?? "–") || changed;
    return changed;
  }
}
