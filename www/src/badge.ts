// The per-panel state badge: what a watch is doing, in one word a user can trust.

import type { MuxError, SubscriptionState } from "kubemux";
import { h, setText } from "./dom";

export type BadgeState = SubscriptionState | "idle";

const LABELS: Record<BadgeState, string> = {
  idle: "idle",
  syncing: "syncing",
  synced: "live",
  stale: "stale",
  failed: "error",
};

const HINTS: Record<BadgeState, string> = {
  idle: "Not watching",
  syncing: "Loading the current state from the cluster",
  synced: "Up to date; changes arrive as they happen",
  stale: "Possibly behind: the connection or the cluster is having trouble",
  failed: "The watch ended with an error",
};

export class StateBadge {
  readonly element = h("span", { class: "badge", "data-state": "idle", role: "status" });

  constructor() {
    this.set("idle");
  }

  set(state: BadgeState): void {
    this.element.dataset.state = state;
    this.element.title = HINTS[state];
    setText(this.element, LABELS[state]);
  }
}

/** One line for an error report: `403 Forbidden: pods is forbidden: …`. */
export function describeError(error: MuxError): string {
  const { code, reason, message } = error.status;
  const head = [code, reason].filter((part) => part !== undefined && part !== "").join(" ");
  return head ? `${head}: ${message}` : message;
}
