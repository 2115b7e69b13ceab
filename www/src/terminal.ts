// A pod terminal: xterm.js on one side, the package's `Terminal` (exec through the proxy, with
// shell fallback and a clean teardown) on the other. It never reconnects by itself: when the
// shell ends, the tab says how and offers a new session.

import { Terminal as ExecSession, type Status } from "kubemux";
import { Terminal as XTerm, type ITheme } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import { h, setText } from "./dom";
import type { PodRef } from "./pods";

const LIGHT: ITheme = { background: "#fbfcfe", foreground: "#1d2433", cursor: "#3b6cf6", selectionBackground: "#c9d7fd" };
const DARK: ITheme = { background: "#0d1117", foreground: "#d7dde8", cursor: "#7aa2ff", selectionBackground: "#2c3d66" };

type Phase = "connecting" | "running" | "exited" | "error";

export class TerminalView {
  readonly element: HTMLElement;
  private readonly status: HTMLElement;
  private readonly restart: HTMLButtonElement;
  private readonly screen: HTMLElement;
  private readonly containerSelect: HTMLSelectElement | null;
  private xterm: XTerm | null = null;
  private fit: FitAddon | null = null;
  private session: ExecSession | null = null;
  private resizeObserver: ResizeObserver | null = null;
  private readonly schemeQuery = window.matchMedia("(prefers-color-scheme: dark)");
  private readonly onScheme = () => {
    if (this.xterm) this.xterm.options.theme = this.schemeQuery.matches ? DARK : LIGHT;
  };

  constructor(
    readonly pod: PodRef,
    private readonly httpBase: string,
  ) {
    this.status = h("span", { class: "term-status", role: "status", "aria-live": "polite" });
    this.restart = h("button", { type: "button", class: "button primary", hidden: true }, "Start a new session");
    this.restart.addEventListener("click", () => this.start());
    this.containerSelect =
      pod.containers.length > 1
        ? h("select", { class: "select", "aria-label": "Container" }, ...pod.containers.map((name) => h("option", { value: name }, name)))
        : null;
    this.screen = h("div", { class: "term-screen", "data-testid": "terminal-screen" });
    this.element = h(
      "section",
      { class: "terminal-view", "data-terminal": `${pod.cluster}/${pod.namespace}/${pod.pod}`, "data-phase": "connecting" },
      h(
        "header",
        { class: "term-head" },
        h("h2", {}, h("span", { class: "muted" }, `${pod.cluster} / ${pod.namespace} / `), pod.pod),
        this.containerSelect,
        this.status,
        h("span", { class: "spacer" }),
        this.restart,
      ),
      this.screen,
    );
    this.schemeQuery.addEventListener("change", this.onScheme);
  }

  /** Opens the xterm and a first session; call once the element is in the document. */
  mount(): void {
    const xterm = new XTerm({
      fontFamily: 'ui-monospace, "SF Mono", "Cascadia Code", "JetBrains Mono", Menlo, Consolas, monospace',
      fontSize: 13,
      lineHeight: 1.2,
      cursorBlink: true,
      scrollback: 5000,
      theme: this.schemeQuery.matches ? DARK : LIGHT,
    });
    const fit = new FitAddon();
    xterm.loadAddon(fit);
    xterm.open(this.screen);
    this.xterm = xterm;
    this.fit = fit;
    this.fitNow();
    // The session throws once it has ended; by then `this.session` is already null.
    xterm.onData((data) => this.session?.write(data));
    xterm.onResize(({ cols, rows }) => this.session?.resize(cols, rows));
    this.resizeObserver = new ResizeObserver(() => this.fitNow());
    this.resizeObserver.observe(this.screen);
    this.start();
  }

  focus(): void {
    this.fitNow();
    this.xterm?.focus();
  }

  /** Ends the session gracefully (the proxy runs its teardown too) and releases everything. */
  dispose(): void {
    this.endSession();
    this.resizeObserver?.disconnect();
    this.schemeQuery.removeEventListener("change", this.onScheme);
    this.xterm?.dispose();
    this.xterm = null;
  }

  private fitNow(): void {
    if (!this.fit || !this.screen.isConnected || this.screen.clientWidth === 0) return;
    try {
      this.fit.fit();
    } catch {
      // Not laid out yet (hidden tab): the next resize fits it.
    }
  }

  private setPhase(phase: Phase, text: string): void {
    this.element.dataset.phase = phase;
    setText(this.status, text);
    this.restart.hidden = !(phase === "exited" || phase === "error");
  }

  private endSession(): void {
    const session = this.session;
    this.session = null;
    // `close()` runs the graceful exit (and the proxy its teardown); the handle is freed by
    // garbage collection once that is done.
    session?.close();
  }

  private start(): void {
    const xterm = this.xterm;
    if (!xterm) return;
    this.endSession();
    xterm.reset();
    const container = this.containerSelect?.value ?? this.pod.containers[0];
    this.setPhase("connecting", "connecting…");
    let session: ExecSession | null = null;
    const current = () => session !== null && this.session === session;
    try {
      session = new ExecSession(this.httpBase, {
        cluster: this.pod.cluster,
        namespace: this.pod.namespace,
        pod: this.pod.pod,
        container,
        cols: xterm.cols,
        rows: xterm.rows,
        onOpen: ({ command }) => {
          if (!current()) return;
          this.setPhase("running", `running ${command.join(" ")}`);
          xterm.focus();
        },
        onData: (bytes) => {
          if (current()) xterm.write(bytes);
        },
        // After onError, onExit follows; the error already said why.
        onExit: ({ code, message }) => {
          if (!current()) return;
          const how = code === null ? (message ?? "ended") : `exited with code ${code}`;
          this.setPhase("exited", how);
          xterm.write(`\r\n\x1b[2m[session ${how}]\x1b[0m\r\n`);
          this.session = null;
        },
        onError: (status: Status) => {
          if (!current()) return;
          const head = [status.code, status.reason].filter(Boolean).join(" ");
          const text = head ? `${head}: ${status.message}` : status.message;
          this.setPhase("error", text);
          xterm.write(`\r\n\x1b[31m${text}\x1b[0m\r\n`);
          this.session = null;
        },
      });
      this.session = session;
    } catch (error) {
      this.setPhase("error", String(error instanceof Error ? error.message : error));
    }
  }
}
