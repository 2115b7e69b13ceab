// The processes behind the browser tests: two kube-sim instances, kubemux-proxy in front of
// them (serving the built web app with `--static`), and Debian's Chromium driven by
// playwright-core. Every process started here is ended by its pid in `stopAll()`, and, should
// the test runner die first, by the `exit` hook below.
//
// Environment (set by `cargo xtask test`; defaults suit a manual run from this folder):
//   KUBEMUX_PROXY_BIN  kubemux-proxy binary  (default $CARGO_TARGET_DIR or ~/.cache/kubemux/target, debug/)
//   KUBE_SIM_BIN       kube-sim binary       (same default)
//   KUBEMUX_WWW_DIST   the built app         (default ../../www/dist)
//   CHROMIUM           the browser           (default /usr/bin/chromium)
//   KUBEMUX_ARTIFACTS  screenshots go here   (default ../artifacts)

import { spawn, spawnSync } from "node:child_process";
import { createReadStream, statSync } from "node:fs";
import { createServer, request } from "node:http";
import { connect } from "node:net";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(process.env.HOME ?? "/root", ".cache/kubemux/target");

export const paths = {
  proxy: process.env.KUBEMUX_PROXY_BIN ?? join(targetDir, "debug/kubemux-proxy"),
  sim: process.env.KUBE_SIM_BIN ?? join(targetDir, "debug/kube-sim"),
  dist: process.env.KUBEMUX_WWW_DIST ?? join(repoRoot, "www/dist"),
  chromium: process.env.CHROMIUM ?? "/usr/bin/chromium",
  artifacts: process.env.KUBEMUX_ARTIFACTS ?? join(repoRoot, "tests/artifacts"),
  pkg: join(repoRoot, "wasm-client/pkg"),
};

/** Tokens of the simulated users (kube-sim `--user NAME:TOKEN:NAMESPACES`). */
export const tokens = { admin: "admin-token", viewer: "viewer-token" };

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Every child still running, by pid. */
const children = new Map();

process.on("exit", () => {
  for (const child of children.values()) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
});

/**
 * Starts `binary args…`, waits for a stdout line starting with `announcement`, and returns the
 * child with the rest of that line. Stderr is kept (last 200 lines) for failure reports.
 */
function startAnnounced(name, binary, args, announcement, timeoutMs = 20_000) {
  if (!existsSync(binary)) throw new Error(`${name}: ${binary} does not exist (build it with cargo build, or run cargo xtask test)`);
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } });
  children.set(child.pid, child);
  const log = [];
  const remember = (line) => {
    log.push(line);
    if (log.length > 200) log.shift();
  };
  createInterface({ input: child.stderr }).on("line", remember);
  child.once("exit", () => children.delete(child.pid));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${name} did not announce itself within ${timeoutMs} ms:\n${log.join("\n")}`));
    }, timeoutMs);
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      if (line.startsWith(announcement)) {
        clearTimeout(timer);
        resolvePromise({ name, child, log, rest: line.slice(announcement.length).trim() });
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before announcing itself (${signal ?? code}):\n${log.join("\n")}`));
    });
  });
}

/** Ends a child: SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
export async function stop(child, graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** SIGKILL, waiting for the exit. */
export async function kill(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGKILL");
  await exited;
}

/** One simulated cluster with the demo seed, churn, an admin and a viewer limited to `demo`. */
export async function startSim(name) {
  const started = await startAnnounced(
    name,
    paths.sim,
    ["--listen", "127.0.0.1:0", "--seed", "demo", "--churn", "5", "--user", `admin:${tokens.admin}:*`, "--user", `viewer:${tokens.viewer}:demo`],
    "kube-sim listening on ",
  );
  return { ...started, url: started.rest };
}

/**
 * The proxy's kubeconfig: `demo` (sim A as admin), `staging` (sim B as admin) and
 * `demo-viewer` (sim A as the viewer, who may read namespace `demo` only).
 */
export function writeKubeconfig(dir, simA, simB, { added = false } = {}) {
  const file = join(dir, "kubeconfig");
  // Written aside and renamed over, as editors save: the proxy reloads the file it watches.
  const aside = join(dir, "kubeconfig.new");
  writeFileSync(
    aside,
    `apiVersion: v1
kind: Config
clusters:
- name: sim-a
  cluster:
    server: ${simA.url}
- name: sim-b
  cluster:
    server: ${simB.url}
users:
- name: admin-a
  user:
    token: ${tokens.admin}
- name: admin-b
  user:
    token: ${tokens.admin}
- name: viewer-a
  user:
    token: ${tokens.viewer}
contexts:
- name: demo
  context:
    cluster: sim-a
    user: admin-a
- name: staging
  context:
    cluster: sim-b
    user: admin-b
- name: demo-viewer
  context:
    cluster: sim-a
    user: viewer-a
    namespace: demo
${added ? "- name: added\n  context:\n    cluster: sim-b\n    user: admin-b\n" : ""}current-context: demo
`,
    { mode: 0o600 },
  );
  renameSync(aside, file);
  return file;
}

/** Whether this proxy binary serves a web app itself (`--static DIR`). */
export const proxyServesStatic = () => /--static\b/.test(spawnSync(paths.proxy, ["--help"], { encoding: "utf8" }).stdout ?? "");

/**
 * The proxy's config file beside the kubeconfig (whose contexts stay the clusters): one
 * port-forward, `hello` (cluster `demo`, deployment/hello's port 8000), for the Forwards view.
 */
export function writeProxyConfig(dir) {
  const file = join(dir, "proxy.yaml");
  writeFileSync(
    file,
    `forwards:
  - name: hello
    cluster: demo
    namespace: default
    target: deployment/hello
    port: 8000
    localPort: 0
    reconnectInitial: 0.2
    reconnectMax: 1
`,
  );
  return file;
}

/** The proxy on `listen` (e.g. `127.0.0.1:0`), serving the built app when it can. */
export async function startProxy(kubeconfig, listen = "127.0.0.1:0") {
  const args = ["--listen", listen, "--kubeconfig", kubeconfig, "--terminal-grace", "3"];
  const config = join(dirname(kubeconfig), "proxy.yaml");
  if (existsSync(config)) args.push("--config", config);
  if (proxyServesStatic()) args.push("--static", paths.dist);
  const started = await startAnnounced("kubemux-proxy", paths.proxy, args, "kubemux-proxy listening on ");
  return { ...started, url: started.rest, listen: started.rest.replace(/^http:\/\//, "") };
}

/**
 * Starts the proxy again on the address of one that has exited (the caller waited for the
 * exit, so the listening socket is closed; the proxy binds with SO_REUSEADDR).
 */
export async function restartProxy(kubeconfig, listen) {
  return startProxy(kubeconfig, listen);
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm", ".svg": "image/svg+xml", ".png": "image/png" };

/**
 * Stand-in for `kubemux-proxy --static` while a proxy binary without it is in use: serves the
 * built app and hands every other request (HTTP and WebSocket upgrades, Host and Origin as
 * the browser sent them) to the proxy at `target()`. Same origin for the page, as with
 * `--static`.
 */
export function startFront(target) {
  const isApi = (url) => /^\/(mux|clusters|healthz|readyz|metrics|forwards)(\/|\?|$)/.test(url);
  const server = createServer((req, res) => {
    if (isApi(req.url)) {
      const [host, port] = target().split(":");
      const upstream = request({ host, port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      upstream.on("error", () => {
        res.writeHead(502).end();
      });
      req.pipe(upstream);
      return;
    }
    let file = join(paths.dist, decodeURIComponent(new URL(req.url, "http://x").pathname));
    if (!file.startsWith(paths.dist) || !existsSync(file) || statSync(file).isDirectory()) file = join(paths.dist, "index.html");
    res.writeHead(200, { "content-type": TYPES[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream" });
    createReadStream(file).pipe(res);
  });
  server.on("upgrade", (req, socket, head) => {
    const [host, port] = target().split(":");
    const upstream = connect(Number(port), host, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    const end = () => {
      socket.destroy();
      upstream.destroy();
    };
    upstream.on("error", end);
    upstream.on("close", end);
    socket.on("error", end);
    socket.on("close", end);
  });
  return new Promise((resolvePromise) => {
    server.listen(0, "127.0.0.1", () => resolvePromise({ server, url: `http://127.0.0.1:${server.address().port}` }));
  });
}

/** Everything the tests run against. */
export async function startStack() {
  const dir = mkdtempSync(join(tmpdir(), "kubemux-e2e-browser-"));
  if (!existsSync(join(paths.dist, "index.html"))) throw new Error(`${paths.dist}/index.html is missing: build the app with cargo xtask www`);
  const [simA, simB] = await Promise.all([startSim("kube-sim A"), startSim("kube-sim B")]);
  const kubeconfig = writeKubeconfig(dir, simA, simB);
  writeProxyConfig(dir);
  const proxy = await startProxy(kubeconfig);
  // Until the proxy binary has `--static`, a stand-in serves the app in front of it.
  const front = proxyServesStatic() ? null : await startFront(() => stack.proxy.listen);
  const browser = await chromium.launch({ executablePath: paths.chromium, args: CHROMIUM_ARGS, headless: true });
  const stack = {
    dir,
    simA,
    simB,
    kubeconfig,
    proxy,
    browser,
    /** The page's URL: the proxy itself, or the stand-in in front of it. */
    appUrl: front ? front.url : proxy.url,
    /** Restarts the proxy if it is not running, and puts churn back to the seed's rate. */
    async ensureRunning() {
      const child = stack.proxy.child;
      if (child.exitCode !== null || child.signalCode !== null) stack.proxy = await restartProxy(kubeconfig, stack.proxy.listen);
      await Promise.all([simPost(simA, "/_sim/churn?perSecond=5"), simPost(simB, "/_sim/churn?perSecond=5")]);
    },
    async stopAll() {
      await browser.close().catch(() => {});
      front?.server.closeAllConnections();
      front?.server.close();
      await Promise.all([stop(stack.proxy.child), stop(simA.child), stop(simB.child)]);
      rmSync(dir, { recursive: true, force: true });
      if (children.size) throw new Error(`processes left behind: ${[...children.keys()].join(", ")}`);
    },
  };
  return stack;
}

/** GET a simulator URL as the admin. */
export async function simGet(sim, path) {
  const response = await fetch(`${sim.url}${path}`, { headers: { authorization: `Bearer ${tokens.admin}` } });
  if (!response.ok) throw new Error(`GET ${path} on ${sim.name}: ${response.status}`);
  return response.json();
}

/** `POST path` on a simulator (its `/_sim` hooks), with `body` as JSON when given. */
export async function simPost(sim, path, body) {
  const init = body === undefined ? { method: "POST" } : { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) };
  const response = await fetch(`${sim.url}${path}`, init);
  if (!response.ok) throw new Error(`POST ${path} on ${sim.name}: ${response.status}`);
  return response;
}

/** Whether this build of the `kubemux` package exports `Terminal` (issue 5). */
export function packageHasTerminal() {
  try {
    const js = readFileSync(join(paths.pkg, "kubemux.js"), "utf8");
    return /export\s+class\s+Terminal\b/.test(js) || /export\s*\{[^}]*\bTerminal\b[^}]*\}/.test(js);
  } catch {
    return false;
  }
}

export function artifact(name) {
  mkdirSync(paths.artifacts, { recursive: true });
  return join(paths.artifacts, name);
}
