// A panel backed by one watch: header with title and state badge, a notice line for errors,
// and a body its owner renders from `items()`.

import type { KubeObject, Mux, MuxError, Subscription, SubscriptionState, WatchEvent, WatchRequest } from "kubemux";
import { StateBadge, describeError } from "./badge";
import { h, setText } from "./dom";

export interface WatchPanelOptions<T extends KubeObject> {
  /** Stable test/automation name, e.g. `pods:demo`. */
  name: string;
  title: string;
  /** Called after every change of `items()` (and at sync), with the current list. */
  render(items: readonly T[], panel: WatchPanel<T>): void;
  /** Each event, before `render`; for highlights. */
  onEvent?(event: WatchEvent<T>): void;
}

export class WatchPanel<T extends KubeObject = KubeObject> {
  readonly element: HTMLElement;
  readonly body: HTMLElement;
  readonly badge = new StateBadge();
  private readonly subtitle: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly countLabel: HTMLElement;
  private subscription: Subscription<T> | null = null;
  private lastError: MuxError | null = null;
  private scheduled = false;
  private pendingState: SubscriptionState | null = null;

  constructor(private readonly options: WatchPanelOptions<T>) {
    this.subtitle = h("span", { class: "panel-scope" });
    this.countLabel = h("span", { class: "panel-count" });
    this.notice = h("p", { class: "notice", role: "alert", hidden: true });
    this.body = h("div", { class: "panel-body" });
    this.element = h(
      "section",
      { class: "panel", "data-panel": options.name, "aria-label": options.title },
      h("header", { class: "panel-head" }, h("h2", {}, options.title), this.subtitle, h("span", { class: "spacer" }), this.countLabel, this.badge.element),
      this.notice,
      this.body,
    );
  }

  /** (Re)starts the watch; an earlier one is closed first. */
  watch(mux: Mux, request: WatchRequest, scope: string): void {
    this.stop();
    setText(this.subtitle, scope);
    this.lastError = null;
    this.showNotice(null);
    this.badge.set("syncing");
    const subscription = mux.watch<T>(request, {
      onEvent: (event) => this.options.onEvent?.(event),
      onChange: () => this.scheduleRender(),
      onSynced: () => this.scheduleRender(),
      onError: (error) => {
        this.lastError = error;
        this.showNotice(error);
        this.scheduleRender();
      },
      onState: (state) => this.onState(state),
    });
    this.subscription = subscription;
    this.onState(subscription.state());
    this.scheduleRender();
  }

  /** Closes the watch, if any. */
  stop(): void {
    this.pendingState = null;
    if (this.subscription) {
      this.subscription.close();
      this.subscription.free();
      this.subscription = null;
    }
  }

  state(): SubscriptionState | null {
    return this.subscription?.state() ?? null;
  }

  setCount(text: string): void {
    setText(this.countLabel, text);
  }

  /** A state is shown in the same frame as the rows it goes with: a "synced" badge never sits above rows not yet drawn. */
  private onState(state: SubscriptionState): void {
    this.pendingState = state;
    this.scheduleRender();
  }

  private showState(state: SubscriptionState): void {
    this.badge.set(state);
    this.element.dataset.state = state;
    // A healed watch clears its warning; a failed one keeps its error.
    if (state === "synced") {
      this.lastError = null;
      this.showNotice(null);
    }
  }

  private showNotice(error: MuxError | null): void {
    if (!error) {
      this.notice.hidden = true;
      setText(this.notice, "");
      delete this.notice.dataset.fatal;
      return;
    }
    this.notice.hidden = false;
    this.notice.dataset.fatal = String(error.fatal);
    this.notice.replaceChildren(h("strong", { class: "notice-text" }, describeError(error)));
    const hint = error.fatal
      ? error.status.code === 403
        ? "This identity may not read it. Every other panel keeps updating: an error reaches only the watch it concerns."
        : "This watch has ended. Every other panel keeps updating."
      : "Showing the last known state; the proxy keeps retrying.";
    this.notice.append(h("span", { class: "notice-hint" }, hint));
  }

  /** Renders at most once per frame, however many events arrive. */
  private scheduleRender(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      const subscription = this.subscription;
      if (!subscription) return;
      // getSnapshot(): the same array while nothing changed, and the same object for every
      // unchanged item, so a frame after one event converts one object, not the whole list.
      const items = subscription.state() === "failed" ? [] : subscription.getSnapshot();
      this.options.render(items, this);
      const state = this.pendingState;
      this.pendingState = null;
      if (state) this.showState(state);
    });
  }

  /** The last error, if the watch is failing or stale. */
  error(): MuxError | null {
    return this.lastError;
  }
}
