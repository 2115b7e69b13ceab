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

/** Above this many pods only the rows in view, and a margin, are in the DOM (a 10k-pod table stays smooth). */
const WINDOW_ABOVE = 500;
/** Rows drawn beyond the visible ones, above and below, when windowed. */
const OVERSCAN = 20;
/** A row's height in pixels until one has been measured. */
const DEFAULT_ROW_PX = 33;

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
  /** The latest list, drawn again (another window of it) on scroll. */
  private pods: readonly Pod[] = [];
  private rowPx = 0;
  private scrollScheduled = false;
  /** Stand-ins for the rows above and below the window, so the scrollbar is the whole list's. */
  private readonly above = PodsPanel.spacer();
  private readonly below = PodsPanel.spacer();

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
    this.panel.body.addEventListener("scroll", () => this.onScroll(), { passive: true });
  }

  private static spacer(): HTMLTableRowElement {
    return h("tr", { class: "spacer", "aria-hidden": "true" }, h("td", { colspan: COLUMNS.length }));
  }

  private onScroll(): void {
    if (this.scrollScheduled || this.pods.length <= WINDOW_ABOVE) return;
    this.scrollScheduled = true;
    requestAnimationFrame(() => {
      this.scrollScheduled = false;
      this.draw(false);
    });
  }

  get element(): HTMLElement {
    return this.panel.element;
  }

  watch(mux: Mux, namespace: string | null): void {
    this.synced = false;
    for (const row of this.rows.values()) row.element.remove();
    this.rows.clear();
    this.pods = [];
    this.changed.clear();
    const path = namespace ? `/api/v1/namespaces/${namespace}/pods` : "/api/v1/pods";
    // The table shows neither managedFields nor the last-applied annotation: the projection leaves
    // them out, and deltas send each change as a patch of what it changed.
    this.panel.watch(mux, { cluster: this.cluster, path, projection: "default", deltas: true }, namespace ? `pods in ${namespace}` : "pods in all namespaces");
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
    this.pods = pods;
    this.draw(highlight);
    this.empty.hidden = pods.length > 0 || state !== "synced";
    this.panel.setCount(state === "failed" ? "" : `${pods.length} ${pods.length === 1 ? "pod" : "pods"}`);
  }

  /** Draws the rows of the window in view (all of them up to WINDOW_ABOVE pods). */
  private draw(highlight: boolean): void {
    const pods = this.pods;
    const windowed = pods.length > WINDOW_ABOVE;
    let start = 0;
    let end = pods.length;
    const rowPx = this.rowPx || DEFAULT_ROW_PX;
    if (windowed) {
      const body = this.panel.body;
      start = Math.min(pods.length, Math.max(0, Math.floor(body.scrollTop / rowPx) - OVERSCAN));
      end = Math.min(pods.length, start + Math.ceil((body.clientHeight || 400) / rowPx) + 2 * OVERSCAN);
      this.above.style.height = `${start * rowPx}px`;
      this.below.style.height = `${(pods.length - end) * rowPx}px`;
      if (this.tbody.firstChild !== this.above) this.tbody.prepend(this.above);
    } else {
      this.above.remove();
      this.below.remove();
    }
    const seen = new Set<string>();
    let previous: HTMLTableRowElement | null = windowed ? this.above : null;
    for (let index = start; index < end; index++) {
      const pod = pods[index];
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
    if (windowed && this.tbody.lastChild !== this.below) this.tbody.append(this.below);
    if (!this.rowPx && previous && previous !== this.above) this.rowPx = previous.getBoundingClientRect().height;
    this.changed.clear();
    this.updateTabStops();
  }

  /** Roving tabindex: Tab enters the table once, on the last row focused (else the first). */
  private updateTabStops(): void {
    if (this.focusKey !== null && !this.rows.has(this.focusKey)) this.focusKey = null;
    const stop = this.focusKey ?? this.tbody.querySelector<HTMLElement>("tr[data-key]")?.dataset.key ?? null;
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
        const rows = this.tbody.querySelectorAll<HTMLElement>("tr[data-key]");
        const next =
          event.key === "ArrowDown" ? element.nextElementSibling
          : event.key === "ArrowUp" ? element.previousElementSibling
          : event.key === "Home" ? rows[0]
          : rows[rows.length - 1];
        // A spacer stands for rows out of view: it takes no focus.
        if (next instanceof HTMLElement && next.dataset.key) next.focus();
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
