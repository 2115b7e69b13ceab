// The connection indicator: open, connecting, or reconnecting with a live countdown.
//
// It also keeps a record of the states it went through (`data-history`: the last
// `HISTORY_LENGTH` entries as `seq:state:label`, separated by `|`), so a reader that looks
// later than a short-lived state (a test, or a support screenshot) can still tell it happened
// and what it said.

import type { ConnectionState } from "kubemux";
import { h, setText } from "./dom";

const HISTORY_LENGTH = 16;

export class ConnectionIndicator {
  readonly element: HTMLElement;
  private readonly label: HTMLElement;
  private countdown: number | null = null;
  private readonly history: string[] = [];
  private seq = 0;

  constructor() {
    this.label = h("span", { class: "conn-label" });
    this.element = h("div", { class: "conn", "data-state": "connecting", role: "status", "aria-live": "polite" }, h("span", { class: "conn-dot", "aria-hidden": "true" }), this.label);
    this.set({ state: "connecting" });
  }

  set(state: ConnectionState): void {
    this.element.dataset.state = state.state;
    if (this.countdown !== null) {
      clearInterval(this.countdown);
      this.countdown = null;
    }
    switch (state.state) {
      case "open":
        setText(this.label, "Connected");
        this.element.title = "One WebSocket carries every watch on this page";
        break;
      case "connecting":
        setText(this.label, "Connecting…");
        this.element.title = "Opening the WebSocket to the proxy";
        break;
      case "closed":
        setText(this.label, "Disconnected");
        this.element.title = "The connection was closed";
        break;
      case "reconnecting": {
        const until = Date.now() + state.delayMs;
        const show = () => {
          const left = Math.max(0, until - Date.now());
          setText(this.label, left > 0 ? `Reconnecting in ${(left / 1000).toFixed(1)} s` : "Reconnecting…");
        };
        this.element.title = "Lost the proxy; every watch resumes where it left off";
        show();
        this.countdown = window.setInterval(show, 100);
        break;
      }
    }
    this.record(state.state);
  }

  /** Appends the state just shown, with the label it showed first, to `data-history`. */
  private record(state: ConnectionState["state"]): void {
    this.seq += 1;
    this.history.push(`${this.seq}:${state}:${this.label.textContent ?? ""}`);
    if (this.history.length > HISTORY_LENGTH) this.history.shift();
    this.element.dataset.history = this.history.join("|");
  }
}
