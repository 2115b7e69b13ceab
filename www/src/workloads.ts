// The Nodes and Deployments views: each cluster's `/api/v1/nodes` and `/apis/apps/v1/deployments`,
// live, one panel per cluster. A deployment's Restart button does what `kubectl rollout restart`
// does: a strategic merge PATCH through the proxy's pass-through that stamps the pod template
// with `kubectl.kubernetes.io/restartedAt`, so the Deployment controller rolls its pods.

import type { KubeObject, Mux } from "kubemux";
import { flash, h, setText } from "./dom";
import { objectKey } from "./format";
import { WatchPanel } from "./panel";

export interface Node extends KubeObject {
  status?: {
    capacity?: Record<string, string>;
    allocatable?: Record<string, string>;
    conditions?: { type: string; status: string; reason?: string }[];
  };
}

export interface Deployment extends KubeObject {
  spec?: { replicas?: number; template?: { metadata?: { annotations?: Record<string, string> } } };
  status?: { replicas?: number; readyReplicas?: number; updatedReplicas?: number; availableReplicas?: number; observedGeneration?: number };
}

/** The annotation `kubectl rollout restart` sets on the pod template. */
export const RESTARTED_AT = "kubectl.kubernetes.io/restartedAt";

interface ViewSpec<T extends KubeObject> {
  kind: string;
  path: string;
  scope: string;
  columns: readonly string[];
  /** Writes a row's cells; true when a visible value changed. */
  fill(cells: HTMLTableCellElement[], item: T, row: HTMLTableRowElement): boolean;
  /** Extra content of the last cell (e.g. a button), made once per row. */
  extra?(cluster: string, cell: HTMLTableCellElement, item: T): void;
}

/** One cluster's panel of one resource. */
class ClusterTable<T extends KubeObject> {
  readonly panel: WatchPanel<T>;
  private readonly tbody = h("tbody");
  private readonly rows = new Map<string, { element: HTMLTableRowElement; cells: HTMLTableCellElement[] }>();
  private synced = false;

  constructor(
    readonly cluster: string,
    private readonly spec: ViewSpec<T>,
  ) {
    this.panel = new WatchPanel<T>({ name: `${spec.kind}:${cluster}`, title: cluster, render: (items) => this.render(items) });
    const table = h(
      "table",
      { class: `pods ${spec.kind}` },
      h("thead", {}, h("tr", {}, ...spec.columns.map((name) => h("th", { scope: "col", class: `col-${name.toLowerCase()}` }, name)))),
      this.tbody,
    );
    this.panel.body.append(h("div", { class: "table-wrap" }, table));
  }

  watch(mux: Mux): void {
    this.panel.watch(mux, { cluster: this.cluster, path: this.spec.path }, this.spec.scope);
  }

  stop(): void {
    this.panel.stop();
  }

  private render(items: readonly T[]): void {
    const highlight = this.synced;
    if (this.panel.state() === "synced") this.synced = true;
    const seen = new Set<string>();
    for (const item of [...items].sort((a, b) => objectKey(a).localeCompare(objectKey(b)))) {
      const key = objectKey(item);
      seen.add(key);
      let row = this.rows.get(key);
      if (!row) {
        const cells = this.spec.columns.map((column) => h("td", { class: `col-${column.toLowerCase()}` }));
        const element = h("tr", { "data-key": key, "data-name": item.metadata.name }, ...cells);
        row = { element, cells };
        this.spec.extra?.(this.cluster, cells[cells.length - 1], item);
        this.rows.set(key, row);
        this.tbody.append(element);
      }
      if (this.spec.fill(row.cells, item, row.element) && highlight) flash(row.element);
    }
    for (const [key, row] of this.rows) {
      if (!seen.has(key)) {
        row.element.remove();
        this.rows.delete(key);
      }
    }
    this.panel.setCount(`${items.length} ${items.length === 1 ? this.spec.kind.replace(/s$/, "") : this.spec.kind}`);
  }
}

/** Every cluster's panel of one resource, in the proxy's order. */
class ClusterTablesView<T extends KubeObject> {
  readonly element: HTMLElement;
  private readonly tables = new Map<string, ClusterTable<T>>();
  private readonly column = h("div", { class: "pods-column" });

  constructor(
    private readonly spec: ViewSpec<T>,
    title: string,
    scope: string,
  ) {
    this.element = h("section", { class: "overview", "data-view": spec.kind }, h("div", { class: "overview-head" }, h("h1", {}, title), h("p", { class: "scope" }, scope)), this.column);
  }

  setClusters(mux: Mux, clusters: string[]): void {
    const names = new Set(clusters);
    for (const [name, table] of this.tables) {
      if (!names.has(name)) {
        table.stop();
        this.tables.delete(name);
      }
    }
    for (const name of clusters) {
      if (this.tables.has(name)) continue;
      const table = new ClusterTable<T>(name, this.spec);
      this.tables.set(name, table);
      table.watch(mux);
    }
    this.column.replaceChildren(...[...this.tables.values()].map((t) => t.panel.element));
  }
}

export function nodeReady(node: Node): string {
  const ready = node.status?.conditions?.find((c) => c.type === "Ready");
  return ready ? (ready.status === "True" ? "Ready" : ready.status === "False" ? "NotReady" : "Unknown") : "Unknown";
}

/** `15868Mi` or `16375828Ki` as `15.5 GiB`; anything else as given. */
export function formatMemory(quantity: string | undefined): string {
  if (!quantity) return "–";
  const match = /^(\d+)(Ki|Mi|Gi)?$/.exec(quantity);
  if (!match) return quantity;
  const factor = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[match[2] ?? ""] ?? 1;
  return `${((Number(match[1]) * factor) / 1024 ** 3).toFixed(1)} GiB`;
}

export class NodesView extends ClusterTablesView<Node> {
  constructor() {
    super(
      {
        kind: "nodes",
        path: "/api/v1/nodes",
        scope: "nodes, live",
        columns: ["Name", "Status", "CPU", "Memory", "Pods"],
        fill(cells, node, row) {
          const status = nodeReady(node);
          const allocatable = node.status?.allocatable ?? {};
          let changed = setText(cells[0], node.metadata.name);
          changed = setText(cells[1], status) || changed;
          cells[1].dataset.tone = status === "Ready" ? "good" : "bad";
          row.dataset.ready = String(status === "Ready");
          changed = setText(cells[2], allocatable.cpu ?? "–") || changed;
          changed = setText(cells[3], formatMemory(allocatable.memory)) || changed;
          changed = setText(cells[4], allocatable.pods ?? "–") || changed;
          return changed;
        },
      },
      "Nodes",
      "Every cluster's nodes and what they can allocate, live over the same WebSocket",
    );
  }
}

export class DeploymentsView extends ClusterTablesView<Deployment> {
  constructor(httpBase: string) {
    super(
      {
        kind: "deployments",
        path: "/apis/apps/v1/deployments",
        scope: "deployments in every namespace, live",
        columns: ["Name", "Ready", "Up-to-date", "Available", "Restarted", "Actions"],
        fill(cells, deployment, row) {
          const desired = deployment.spec?.replicas ?? 1;
          const status = deployment.status ?? {};
          const ready = status.readyReplicas ?? 0;
          const updated = status.updatedReplicas ?? 0;
          const available = status.availableReplicas ?? 0;
          const name = `${deployment.metadata.namespace ?? ""}/${deployment.metadata.name}`;
          let changed = setText(cells[0], name);
          changed = setText(cells[1], `${ready}/${desired}`) || changed;
          changed = setText(cells[2], `${updated}/${desired}`) || changed;
          changed = setText(cells[3], `${available}/${desired}`) || changed;
          const rolledOut = ready === desired && updated === desired && available === desired && (status.replicas ?? desired) === desired;
          cells[1].dataset.tone = rolledOut ? "good" : "warn";
          row.dataset.rolledOut = String(rolledOut);
          const restarted = deployment.spec?.template?.metadata?.annotations?.[RESTARTED_AT] ?? "";
          row.dataset.restartedAt = restarted;
          changed = setText(cells[4], restarted ? new Date(restarted).toLocaleTimeString() : "–") || changed;
          return changed;
        },
        extra(cluster, cell, deployment) {
          const namespace = deployment.metadata.namespace ?? "default";
          const name = deployment.metadata.name;
          const message = h("span", { class: "restart-error", role: "status" });
          const button = h("button", { type: "button", class: "restart", "aria-label": `Restart ${namespace}/${name}` }, "Restart");
          button.addEventListener("click", () => {
            button.disabled = true;
            setText(message, "");
            delete cell.dataset.error;
            restartDeployment(httpBase, cluster, namespace, name)
              .catch((error: unknown) => {
                const text = error instanceof Error ? error.message : String(error);
                setText(message, text);
                cell.dataset.error = text;
              })
              .finally(() => {
                button.disabled = false;
              });
          });
          cell.append(button, message);
        },
      },
      "Deployments",
      "Restart rolls a deployment out, as kubectl rollout restart does; its pods are replaced one by one",
    );
  }
}

/** `kubectl rollout restart`: a strategic merge PATCH of the pod template's restartedAt annotation. */
export async function restartDeployment(httpBase: string, cluster: string, namespace: string, name: string): Promise<void> {
  const url = `${httpBase}/clusters/${encodeURIComponent(cluster)}/apis/apps/v1/namespaces/${encodeURIComponent(namespace)}/deployments/${encodeURIComponent(name)}`;
  const body = { spec: { template: { metadata: { annotations: { [RESTARTED_AT]: new Date().toISOString() } } } } };
  const response = await fetch(url, { method: "PATCH", headers: { "Content-Type": "application/strategic-merge-patch+json" }, body: JSON.stringify(body) });
  if (response.ok) return;
  let detail = response.statusText;
  try {
    const status = (await response.json()) as { message?: string };
    if (status.message) detail = status.message;
  } catch {
    // Not a Status body.
  }
  throw new Error(`Restart failed: ${response.status} ${detail}`);
}
