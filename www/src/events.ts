// The live events list of one cluster: newest first, new ones highlighted.

import type { Mux } from "kubemux";
import { flash, h, setText } from "./dom";
import { type KubeEvent, age, compareVersions, eventTime, objectKey } from "./format";
import { WatchPanel } from "./panel";

const SHOWN = 60;

export class EventsPanel {
  readonly panel: WatchPanel<KubeEvent>;
  private readonly list: HTMLOListElement;
  private readonly empty: HTMLElement;
  private readonly entries = new Map<string, { element: HTMLLIElement; time: HTMLElement; event: KubeEvent; version: string }>();
  private synced = false;

  constructor() {
    this.panel = new WatchPanel<KubeEvent>({ name: "events", title: "Events", render: (items) => this.render(items) });
    this.list = h("ol", { class: "events" });
    this.empty = h("p", { class: "empty", hidden: true }, "No events yet.");
    this.panel.body.append(this.list, this.empty);
    this.panel.element.classList.add("events-panel");
  }

  get element(): HTMLElement {
    return this.panel.element;
  }

  watch(mux: Mux, cluster: string, namespace: string | null): void {
    this.synced = false;
    this.list.replaceChildren();
    this.entries.clear();
    const path = namespace ? `/api/v1/namespaces/${namespace}/events` : "/api/v1/events";
    this.panel.watch(mux, { cluster, path }, `${cluster} · ${namespace ?? "all namespaces"}`);
  }

  tick(): void {
    for (const entry of this.entries.values()) setText(entry.time, age(eventTime(entry.event)));
  }

  private render(items: readonly KubeEvent[]): void {
    const highlight = this.synced;
    if (this.panel.state() === "synced") this.synced = true;
    const newest = [...items]
      .sort((a, b) => (eventTime(b) ?? "").localeCompare(eventTime(a) ?? "") || compareVersions(b.metadata.resourceVersion, a.metadata.resourceVersion))
      .slice(0, SHOWN);
    const keep = new Set<string>();
    let previous: HTMLLIElement | null = null;
    for (const event of newest) {
      const key = objectKey(event);
      keep.add(key);
      const version = event.metadata.resourceVersion ?? "";
      let entry = this.entries.get(key);
      const fresh = !entry || entry.version !== version;
      if (!entry || entry.version !== version) {
        entry?.element.remove();
        entry = this.createEntry(event, version);
        this.entries.set(key, entry);
      }
      const expected: ChildNode | null = previous ? previous.nextSibling : this.list.firstChild;
      if (expected !== entry.element) this.list.insertBefore(entry.element, expected);
      previous = entry.element;
      if (highlight && fresh) flash(entry.element);
    }
    for (const [key, entry] of this.entries) {
      if (!keep.has(key)) {
        entry.element.remove();
        this.entries.delete(key);
      }
    }
    this.empty.hidden = items.length > 0 || this.panel.state() !== "synced";
    this.panel.setCount(this.panel.state() === "failed" ? "" : `${items.length} events`);
  }

  private createEntry(event: KubeEvent, version: string) {
    const time = h("time", { class: "event-time", datetime: eventTime(event) ?? "" }, age(eventTime(event)));
    const involved = event.involvedObject;
    const target = involved ? `${(involved.kind ?? "").toLowerCase()}/${involved.name ?? ""}` : event.metadata.name;
    const element = h(
      "li",
      { class: "event", "data-type": event.type ?? "Normal" },
      h(
        "div",
        { class: "event-head" },
        h("span", { class: "event-type" }, event.type ?? "Normal"),
        h("span", { class: "event-reason" }, event.reason ?? ""),
        h("span", { class: "event-object" }, involved?.namespace ? `${involved.namespace}/` : "", h("strong", {}, target)),
      ),
      time,
      h("p", { class: "event-message" }, event.message ?? "", (event.count ?? 1) > 1 ? h("span", { class: "event-count" }, ` ×${event.count}`) : null),
    );
    return { element, time, event, version };
  }
}
