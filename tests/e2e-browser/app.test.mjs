// The demo web app in headless Chromium, against two kube-sim clusters behind kubemux-proxy.
// Each test asserts what a user sees; every wait is on a condition with a deadline.
//
// Run: `cargo xtask test` (builds everything first), or from this folder after building:
//   node --test --test-reporter=tap
// Screenshots go to tests/artifacts/; with KUBEMUX_UPDATE_SCREENSHOT=1 the light overview also
// replaces docs/screenshot.png (the README's picture).

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, beforeEach, test } from "node:test";
import { artifact, kill, packageHasTerminal, repoRoot, restartProxy, simGet, simPost, startStack, tokens, writeKubeconfig } from "./harness.mjs";

const VIEWPORT = { width: 1600, height: 1000 };

/** @type {Awaited<ReturnType<typeof startStack>>} */
let stack;

before(async () => {
  stack = await startStack();
});

// Each test starts from a running proxy and churning simulators, whatever the test before it
// left behind (a failed assertion between a kill and a restart, say).
beforeEach(async () => {
  await stack.ensureRunning();
});

after(async () => {
  await stack?.stopAll();
});

/**
 * Opens the app in a fresh browser context. Console errors and uncaught exceptions are
 * collected; `check()` fails the test on any that `allowed` does not excuse.
 */
async function openApp({ colorScheme = "light", viewport = VIEWPORT } = {}) {
  const context = await stack.browser.newContext({ viewport, colorScheme, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const errors = [];
  /** Patterns of console errors a test expects (the proxy being down, say). */
  const allowed = [];
  page.on("console", (message) => {
    if (message.type() === "error" && !allowed.some((pattern) => pattern.test(message.text()))) errors.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
  await page.goto(stack.appUrl);
  return {
    page,
    allowed,
    async check() {
      assert.deepEqual(errors, [], "the page logged errors");
    },
    async close() {
      await context.close();
    },
  };
}

/** Polls `probe` until it returns a truthy value or the deadline passes. */
async function eventually(what, probe, timeoutMs = 15_000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

const panel = (page, name) => page.locator(`[data-panel="${name}"]`);

/** What a user reads in a pods panel: one entry per row. */
async function podRows(page, cluster) {
  return panel(page, `pods:${cluster}`)
    .locator("tbody tr")
    .evaluateAll((rows) =>
      rows.map((row) => ({
        key: row.dataset.key,
        cells: [...row.querySelectorAll("td")].map((td) => td.textContent.trim()),
      })),
    );
}

/** The columns of a pod the app must show, computed from the API object. */
function expectedRow(pod) {
  const statuses = pod.status?.containerStatuses ?? [];
  return {
    key: `${pod.metadata.namespace}/${pod.metadata.name}`,
    ready: `${statuses.filter((c) => c.ready).length}/${statuses.length || pod.spec?.containers?.length || 0}`,
    restarts: String(statuses.reduce((sum, c) => sum + (c.restartCount ?? 0), 0)),
    node: pod.spec?.nodeName ?? "–",
  };
}

const shown = (row) => ({ key: row.key, ready: row.cells[1], restarts: row.cells[3], node: row.cells[5] });
const byKey = (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/** The connection indicator's record of the states it showed: `[{seq, state, label}]`. */
async function connHistory(page) {
  const history = (await page.locator(".conn").getAttribute("data-history")) ?? "";
  return history
    .split("|")
    .filter(Boolean)
    .map((entry) => {
      const [seq, state, ...label] = entry.split(":");
      return { seq: Number(seq), state, label: label.join(":") };
    });
}

const lastSeq = (history) => (history.length ? history[history.length - 1].seq : 0);

async function waitLive(page, name, timeoutMs = 15_000) {
  await panel(page, name).locator('.badge[data-state="synced"]').waitFor({ timeout: timeoutMs });
}

test("the pods table fills from the simulator and shows churn within seconds", { timeout: 60_000 }, async () => {
  const app = await openApp();
  const { page } = app;
  await waitLive(page, "pods:demo");
  await assert.doesNotReject(page.locator('.conn[data-state="open"]').waitFor({ timeout: 10_000 }));

  // Every pod the simulator lists is in the table (churn may move a row between the two reads).
  const direct = (await simGet(stack.simA, "/api/v1/pods")).items.map((pod) => `${pod.metadata.namespace}/${pod.metadata.name}`);
  assert.ok(direct.length >= 5, `the demo seed has pods (got ${direct.length})`);
  await eventually("the table to list the simulator's pods", async () => {
    const keys = (await podRows(page, "demo")).map((row) => row.key);
    const now = (await simGet(stack.simA, "/api/v1/pods")).items.map((pod) => `${pod.metadata.namespace}/${pod.metadata.name}`);
    return keys.length === now.length && now.every((key) => keys.includes(key));
  });
  const first = await podRows(page, "demo");
  for (const row of first) {
    assert.match(row.cells[1], /^\d+\/\d+$/, `READY of ${row.key}`);
    assert.ok(row.cells[2].length > 0, `STATUS of ${row.key}`);
    assert.match(row.cells[3], /^\d+$/, `RESTARTS of ${row.key}`);
    assert.match(row.cells[4], /^\d+[smhd]$/, `AGE of ${row.key}`);
    assert.match(row.cells[5], /^sim-node-\d+$/, `NODE of ${row.key}`);
  }

  // Churn (5 changes a second) shows up as changed rows, and changed rows light up.
  const before = JSON.stringify(first.map((row) => [row.key, row.cells[1], row.cells[2], row.cells[3]]));
  await eventually(
    "a visible change from churn",
    async () => JSON.stringify((await podRows(page, "demo")).map((row) => [row.key, row.cells[1], row.cells[2], row.cells[3]])) !== before,
    10_000,
  );
  await panel(page, "pods:demo").locator("tr.flash").first().waitFor({ timeout: 10_000 });
  await waitLive(page, "events");
  await panel(page, "events").locator("li.event").first().waitFor({ timeout: 10_000 });

  // The clusters list shows health from /clusters.
  for (const name of ["demo", "staging", "demo-viewer"]) {
    await page.locator(`.nav-item[data-cluster="${name}"][data-status="ok"]`).waitFor({ timeout: 10_000 });
  }
  await page.locator('[data-panel="namespaces"] .nav-item[data-namespace="kube-system"]').waitFor({ timeout: 10_000 });

  await page.screenshot({ path: artifact("overview-light.png") });
  await app.check();
  await app.close();
});

test("a cluster added to the proxy's kubeconfig appears in the clusters list with a live panel, and goes when removed", { timeout: 60_000 }, async () => {
  const app = await openApp();
  const { page } = app;
  try {
    await waitLive(page, "pods:demo");
    assert.equal(await page.locator('.nav-item[data-cluster="added"]').count(), 0);
    // The proxy reloads the file it was started with; the page follows through GET /clusters.
    writeKubeconfig(stack.dir, stack.simA, stack.simB, { added: true });
    await page.locator('.nav-item[data-cluster="added"][data-status="ok"]').waitFor({ timeout: 20_000 });
    await waitLive(page, "pods:added", 20_000);
    const rows = await podRows(page, "added");
    assert.ok(rows.length >= 5, `the added cluster's pods are listed (got ${rows.length})`);
    // demo kept streaming through the reload: its panel is still live.
    await waitLive(page, "pods:demo");
    writeKubeconfig(stack.dir, stack.simA, stack.simB);
    await page.locator('.nav-item[data-cluster="added"]').waitFor({ state: "detached", timeout: 20_000 });
    await panel(page, "pods:added").waitFor({ state: "detached", timeout: 10_000 });
    await waitLive(page, "pods:demo");
    await app.check();
  } finally {
    writeKubeconfig(stack.dir, stack.simA, stack.simB);
    await app.close();
  }
});

test("the demo-viewer panel shows its 403 while the other panels keep updating", { timeout: 60_000 }, async () => {
  const app = await openApp();
  const { page } = app;
  const forbidden = panel(page, "pods:demo-viewer");
  await forbidden.locator('.badge[data-state="failed"]').waitFor({ timeout: 15_000 });
  const notice = (await forbidden.locator(".notice").innerText()).trim();
  assert.match(notice, /403/, "the error names the status code");
  assert.match(notice, /forbidden/i, "the error carries the Status message");
  assert.equal(await forbidden.locator("tbody tr").count(), 0, "a forbidden panel shows no rows");

  // After the 403 arrived, the two other panels on the same connection keep changing.
  await waitLive(page, "pods:demo");
  await waitLive(page, "pods:staging");
  for (const cluster of ["demo", "staging"]) {
    const snapshot = JSON.stringify(await podRows(page, cluster));
    await eventually(`the ${cluster} panel to update after the 403`, async () => JSON.stringify(await podRows(page, cluster)) !== snapshot, 10_000);
    assert.equal(await panel(page, `pods:${cluster}`).locator('.badge[data-state="synced"]').count(), 1, `${cluster} stays live`);
  }
  assert.equal(await forbidden.locator('.badge[data-state="failed"]').count(), 1, "the forbidden panel still shows its error");
  assert.equal(await page.locator('.conn[data-state="open"]').count(), 1, "the connection stayed open");

  // The same viewer may read its own namespace: choosing `demo` heals that panel.
  await page.locator('[data-panel="namespaces"] .nav-item[data-namespace="demo"]').click();
  await waitLive(page, "pods:demo-viewer");
  assert.ok((await podRows(page, "demo-viewer")).length > 0, "the viewer's pods in demo");
  await page.locator('[data-panel="namespaces"] .nav-item[data-namespace=""]').click();
  await forbidden.locator('.badge[data-state="failed"]').waitFor({ timeout: 15_000 });

  await forbidden.screenshot({ path: artifact("forbidden-panel.png") });
  await app.check();
  await app.close();
});

test("killing and restarting the proxy shows reconnecting, then the table equals the simulator's list with no duplicates", { timeout: 90_000 }, async () => {
  const app = await openApp();
  const { page } = app;
  await waitLive(page, "pods:demo");
  await waitLive(page, "pods:staging");
  // While the proxy is down, Chromium reports each failed WebSocket attempt on the console.
  const mux = `${stack.appUrl.replace(/^http/, "ws")}/mux`;
  app.allowed.push(new RegExp(`^WebSocket connection to '${mux.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}' failed`));

  await page.locator('.conn[data-state="open"]').waitFor({ timeout: 10_000 });
  const before = lastSeq(await connHistory(page));
  const listen = stack.proxy.listen;
  await kill(stack.proxy.child);
  try {
    // The indicator moves on from "reconnecting" to "connecting" and back while the proxy is
    // down; the page's record of the states it showed is what the test reads, not the moment.
    const shown = await page.waitForFunction(
      (after) => {
        const entries = (document.querySelector(".conn")?.dataset.history ?? "").split("|").filter(Boolean);
        return entries.map((entry) => entry.split(":")).find(([seq, state]) => Number(seq) > after && state === "reconnecting")?.slice(2).join(":");
      },
      before,
      { timeout: 15_000, polling: 50 },
    );
    assert.match(await shown.jsonValue(), /^Reconnecting/);
    // The rows stay on screen while the connection is down.
    assert.ok((await podRows(page, "demo")).length > 0, "the table keeps its rows while reconnecting");
    await page.screenshot({ path: artifact("reconnecting.png") });
  } finally {
    stack.proxy = await restartProxy(stack.kubeconfig, listen);
  }
  await page.locator('.conn[data-state="open"]').waitFor({ timeout: 45_000 });
  await waitLive(page, "pods:demo", 20_000);
  await waitLive(page, "pods:staging", 20_000);

  // Hold the clusters still and compare each table with a direct list from its simulator.
  await simPost(stack.simA, "/_sim/churn?perSecond=0");
  await simPost(stack.simB, "/_sim/churn?perSecond=0");
  try {
    for (const [cluster, sim] of [["demo", stack.simA], ["staging", stack.simB]]) {
      let mismatch = "";
      await eventually(`the ${cluster} table to equal the simulator's list`, async () => {
        const rows = await podRows(page, cluster);
        const keys = rows.map((row) => row.key);
        assert.equal(new Set(keys).size, keys.length, `duplicate rows in ${cluster}: ${keys.join(", ")}`);
        const want = (await simGet(sim, "/api/v1/pods")).items.map(expectedRow).sort(byKey);
        const got = rows.map(shown).sort(byKey);
        mismatch = JSON.stringify({ want, got });
        return JSON.stringify(want) === JSON.stringify(got);
      }).catch((error) => {
        throw new Error(`${error.message}\n${mismatch}`);
      });
    }
  } finally {
    await simPost(stack.simA, "/_sim/churn?perSecond=5");
    await simPost(stack.simB, "/_sim/churn?perSecond=5");
  }
  await app.check();
  await app.close();
});

const terminalReason = packageHasTerminal()
  ? false
  : "the kubemux package in wasm-client/pkg has no Terminal export yet (issue 5); the app shows that in the terminal tab";

test("a terminal runs echo hello, and closing its tab leaves no process in the simulator", { timeout: 60_000, skip: terminalReason }, async () => {
  const app = await openApp();
  const { page } = app;
  await waitLive(page, "pods:demo");

  // Keyboard: focus the toolbox row and press Enter.
  const row = panel(page, "pods:demo").locator('tbody tr[data-key="default/toolbox"]');
  await row.focus();
  await page.keyboard.press("Enter");
  const view = page.locator('[data-terminal="demo/default/toolbox"]');
  await page.locator('[data-terminal="demo/default/toolbox"][data-phase="running"]').waitFor({ timeout: 15_000 });
  const status = await view.locator(".term-status").innerText();
  assert.match(status, /running (bash|sh)/, "the status names the shell that opened");

  await view.locator(".xterm").click();
  await page.keyboard.type("echo hello\r");
  const screenLines = () =>
    view.locator(".xterm-rows > div").evaluateAll((rows) => rows.map((r) => r.textContent.replace(/\u00a0/g, " ").trimEnd()));
  await eventually("`hello` on a line of its own", async () => (await screenLines()).some((line) => line.trim() === "hello"), 10_000);
  const processes = await (await fetch(`${stack.simA.url}/_sim/processes`)).json();
  assert.ok(processes.some((p) => p.pod === "toolbox"), "the shell runs in the simulator while the tab is open");
  await page.screenshot({ path: artifact("terminal.png") });

  // `exit 3` ends the shell: the tab shows the code and offers a new session.
  await page.keyboard.type("exit 3\r");
  await page.locator('[data-terminal="demo/default/toolbox"][data-phase="exited"]').waitFor({ timeout: 10_000 });
  assert.match(await view.locator(".term-status").innerText(), /code 3/);
  const again = view.getByRole("button", { name: "Start a new session" });
  await again.waitFor({ timeout: 5000 });
  await again.click();
  await page.locator('[data-terminal="demo/default/toolbox"][data-phase="running"]').waitFor({ timeout: 15_000 });
  await eventually("the new shell in the simulator", async () => {
    const live = await (await fetch(`${stack.simA.url}/_sim/processes`)).json();
    return live.some((p) => p.pod === "toolbox");
  });

  // Closing the tab ends the shell: nothing of it is left in the simulator.
  await page.getByRole("button", { name: /Close terminal toolbox/ }).click();
  assert.equal(await page.locator("[data-terminal]").count(), 0, "the tab is gone");
  await eventually(
    "no toolbox process in /_sim/processes",
    async () => {
      const live = await (await fetch(`${stack.simA.url}/_sim/processes`)).json();
      return live.every((p) => p.pod !== "toolbox");
    },
    10_000,
  );
  await app.check();
  await app.close();
});

test("the Forwards view shows a forward Active, and Reconnecting then Active on the new pod when its pod restarts", { timeout: 60_000 }, async () => {
  // No churn in sim A meanwhile: only the restart below replaces hello's pod.
  await simPost(stack.simA, "/_sim/churn?perSecond=0");
  const app = await openApp();
  const { page } = app;
  await page.locator('[data-tab="forwards"]').click();
  await waitLive(page, "forwards:demo");
  const row = panel(page, "forwards:demo").locator('tr[data-forward="hello"]');
  const pod = await eventually("hello Active on a pod", async () => (await row.getAttribute("data-state")) === "Active" && (await row.getAttribute("data-pod")));
  assert.equal((await row.locator(".fwd-state").textContent()).trim(), "Active");
  assert.equal((await row.locator("td.col-pod").textContent()).trim(), pod);
  assert.equal((await row.locator("td.col-target").textContent()).trim(), "deployment/hello:8000");
  // A cluster without forwards takes no room.
  assert.equal(await panel(page, "forwards:staging").isHidden(), true);
  // Port 8000 reads as a web app: it opens through the proxy, no local port needed.
  assert.equal(await row.locator("a.fwd-open").getAttribute("href"), `${new URL(stack.appUrl).origin}/forwards/hello/`);
  assert.equal(await row.locator("a.fwd-open").isVisible(), true);
  // The pod restarts; its replacement turns Ready 1.5 s later.
  const replacement = await (await simPost(stack.simA, `/_sim/pods/default/${pod}/restart?readyAfterSeconds=1.5`)).json();
  const next = replacement.metadata.name;
  assert.notEqual(next, pod);
  await eventually("hello Reconnecting, saying why", async () => (await row.getAttribute("data-state")) === "Reconnecting" && (await row.locator(".fwd-reason").textContent()).trim() === "no Ready pod", 10_000, 50);
  await eventually(`hello Active on ${next}`, async () => (await row.getAttribute("data-state")) === "Active" && (await row.getAttribute("data-pod")) === next);
  assert.equal((await row.locator("td.col-pod").textContent()).trim(), next);
  // The row went through exactly that: Active on the old pod, Reconnecting, Active on the new.
  const history = ((await row.getAttribute("data-history")) ?? "").split("|");
  const from = history.indexOf(`Active:${pod}`);
  const waiting = history.findIndex((entry, i) => i > from && entry.startsWith("Reconnecting:"));
  const back = history.findIndex((entry, i) => i > waiting && entry === `Active:${next}`);
  assert.ok(from >= 0 && waiting > from && back > waiting, `history: ${history.join(" | ")}`);
  await page.screenshot({ path: artifact("forwards.png") });
  await app.check();
  await app.close();
});

test("the Nodes view lists the nodes Ready, and Restart on a deployment rolls its pods out", { timeout: 90_000 }, async () => {
  // No churn in sim A meanwhile: only the rollout replaces api's pods.
  await simPost(stack.simA, "/_sim/churn?perSecond=0");
  const app = await openApp();
  const { page } = app;
  try {
    await page.locator('[data-tab="nodes"]').click();
    await waitLive(page, "nodes:demo");
    const nodes = (await simGet(stack.simA, "/api/v1/nodes")).items.map((node) => node.metadata.name).sort();
    assert.deepEqual(nodes, ["sim-node-1", "sim-node-2"]);
    for (const name of nodes) {
      const row = panel(page, "nodes:demo").locator(`tr[data-name="${name}"][data-ready="true"]`);
      await row.waitFor({ timeout: 10_000 });
      assert.equal((await row.locator("td.col-status").textContent()).trim(), "Ready");
      assert.match((await row.locator("td.col-cpu").textContent()).trim(), /^\d+m?$/);
      assert.match((await row.locator("td.col-memory").textContent()).trim(), /GiB$/);
    }
    // The viewer may not list nodes: its panel says so, the others stay live.
    await panel(page, "nodes:demo-viewer").locator('.badge[data-state="failed"]').waitFor({ timeout: 15_000 });
    await waitLive(page, "nodes:staging");

    await page.locator('[data-tab="deployments"]').click();
    await waitLive(page, "deployments:demo");
    const row = panel(page, "deployments:demo").locator('tr[data-key="demo/api"]');
    await panel(page, "deployments:demo").locator('tr[data-key="demo/api"][data-rolled-out="true"]').waitFor({ timeout: 15_000 });
    assert.equal((await row.locator("td.col-ready").textContent()).trim(), "2/2");
    const podsOf = async () => (await simGet(stack.simA, "/api/v1/namespaces/demo/pods?labelSelector=app%3Dapi")).items.map((pod) => pod.metadata.name).sort();
    const before = await podsOf();
    assert.equal(before.length, 2);

    await row.getByRole("button", { name: "Restart demo/api" }).click();
    // The PATCH landed: the template carries restartedAt, and the row shows it.
    await panel(page, "deployments:demo").locator('tr[data-key="demo/api"]:not([data-restarted-at=""])').waitFor({ timeout: 10_000 });
    const restartedAt = await row.getAttribute("data-restarted-at");
    assert.ok(!Number.isNaN(Date.parse(restartedAt)), `restartedAt is a time: ${restartedAt}`);
    const live = await simGet(stack.simA, "/apis/apps/v1/namespaces/demo/deployments/api");
    assert.equal(live.spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"], restartedAt);
    // The rollout replaces both pods; the deployment row comes back to 2/2 up to date.
    await eventually("api's pods replaced", async () => {
      const now = await podsOf();
      return now.length === 2 && now.every((name) => !before.includes(name));
    }, 30_000);
    await panel(page, "deployments:demo").locator('tr[data-key="demo/api"][data-rolled-out="true"]').waitFor({ timeout: 30_000 });
    assert.equal((await row.locator(".restart-error").textContent()).trim(), "", "no error shown");
    // The new pods show in the overview's pods table.
    await page.locator('[data-tab="overview"]').click();
    await waitLive(page, "pods:demo");
    const after = await podsOf();
    for (const name of after) await panel(page, "pods:demo").locator(`tbody tr[data-key="demo/${name}"]`).waitFor({ timeout: 15_000 });
    await page.locator('[data-tab="deployments"]').click();
    await page.screenshot({ path: artifact("deployments.png") });
    await app.check();
  } finally {
    await app.close();
  }
});

test("a Restart the cluster refuses shows its 403 in the Deployments panel, and nothing rolls out", { timeout: 60_000 }, async () => {
  await simPost(stack.simA, "/_sim/churn?perSecond=0");
  const app = await openApp();
  const { page } = app;
  const path = "/apis/apps/v1/namespaces/demo/deployments/api";
  try {
    await page.locator('[data-tab="deployments"]').click();
    await waitLive(page, "deployments:demo");
    const row = panel(page, "deployments:demo").locator('tr[data-key="demo/api"]');
    await panel(page, "deployments:demo").locator('tr[data-key="demo/api"][data-rolled-out="true"]').waitFor({ timeout: 15_000 });
    const podsOf = async () => (await simGet(stack.simA, "/api/v1/namespaces/demo/pods?labelSelector=app%3Dapi")).items.map((pod) => pod.metadata.name).sort();
    const podsBefore = await podsOf();
    const before = await simGet(stack.simA, path);
    const restartedBefore = await row.getAttribute("data-restarted-at");

    // The cluster refuses the next request for this deployment, the Restart's PATCH, with its 403 Status.
    await simPost(stack.simA, "/_sim/faults", { pathPrefix: path, status: 403, count: 1 });
    // Chromium logs the refused request; that is the one error this test expects.
    app.allowed.push(/status of 403/);
    await row.getByRole("button", { name: "Restart demo/api" }).click();
    await row.locator("td[data-error]").waitFor({ timeout: 10_000 });
    assert.match((await row.locator(".restart-error").textContent()).trim(), /^Restart failed: 403 .*Forbidden/);
    assert.ok(await row.getByRole("button", { name: "Restart demo/api" }).isEnabled(), "the button can be pressed again");
    assert.deepEqual(await (await fetch(`${stack.simA.url}/_sim/faults`)).json(), [], "the PATCH reached the cluster and was refused there");

    // Nothing rolled out: the template and generation are as they were, the same pods run.
    const after = await simGet(stack.simA, path);
    assert.equal(after.metadata.generation, before.metadata.generation);
    assert.deepEqual(after.spec.template, before.spec.template);
    assert.deepEqual(await podsOf(), podsBefore);
    assert.equal(await row.getAttribute("data-restarted-at"), restartedBefore);
    assert.equal(await row.getAttribute("data-rolled-out"), "true");
    await app.check();
  } finally {
    await fetch(`${stack.simA.url}/_sim/faults`, { method: "DELETE" });
    await app.close();
  }
});

test("screenshots of the overview, light and dark", { timeout: 60_000 }, async () => {
  for (const colorScheme of ["light", "dark"]) {
    const app = await openApp({ colorScheme });
    const { page } = app;
    await waitLive(page, "pods:demo");
    await waitLive(page, "pods:staging");
    await waitLive(page, "events");
    await panel(page, "pods:demo-viewer").locator('.badge[data-state="failed"]').waitFor({ timeout: 15_000 });
    await page.locator('.nav-item[data-cluster="demo"][data-status="ok"]').waitFor({ timeout: 10_000 });
    const file = artifact(`overview-${colorScheme}.png`);
    await page.screenshot({ path: file });
    // The README's picture (docs/screenshot.png) is replaced only when asked, so a test run
    // leaves the working tree as it was.
    if (colorScheme === "light" && process.env.KUBEMUX_UPDATE_SCREENSHOT === "1") {
      mkdirSync(join(repoRoot, "docs"), { recursive: true });
      copyFileSync(file, join(repoRoot, "docs/screenshot.png"));
    }
    await app.check();
    await app.close();
  }
});

/** A request to a simulator's API as its admin, with `body` as JSON when given. */
async function simApi(sim, method, path, body) {
  const headers = { authorization: `Bearer ${tokens.admin}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${sim.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${path} on ${sim.name}: ${response.status} ${await response.text()}`);
  return response.json();
}

// Last: it leaves 1,500 pods behind if its clean-up fails, and the tests above compare every row.
test("a namespace of 1,500 pods keeps only the rows in view in the page, and scrolling reaches the last", { timeout: 120_000 }, async () => {
  const PODS = 1500;
  const name = (i) => `bulk-${String(i).padStart(4, "0")}`;
  await simApi(stack.simA, "POST", "/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: "bulk" } });
  try {
    for (let i = 0; i < PODS; i += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, PODS - i) }, (_, k) =>
          simApi(stack.simA, "POST", "/api/v1/namespaces/bulk/pods", { apiVersion: "v1", kind: "Pod", metadata: { name: name(i + k) }, spec: { containers: [{ name: "app", image: "busybox" }] } }),
        ),
      );
    }
    const app = await openApp();
    const { page } = app;
    await waitLive(page, "pods:demo");
    await page.locator('[data-panel="namespaces"] .nav-item[data-namespace="bulk"]').click();
    const pods = panel(page, "pods:demo");
    await pods.locator(".panel-count", { hasText: `${PODS} pods` }).waitFor({ timeout: 30_000 });
    await pods.locator(`tbody tr[data-key="bulk/${name(0)}"]`).waitFor({ timeout: 10_000 });
    const drawn = await pods.locator("tbody tr[data-key]").count();
    assert.ok(drawn > 5 && drawn <= 200, `only the rows in view and a margin are drawn (${drawn} of ${PODS})`);
    assert.equal(await pods.locator(`tbody tr[data-key="bulk/${name(PODS - 1)}"]`).count(), 0, "the last pod is out of view");

    // Scrolling to the bottom draws the last rows, still a window of them.
    await pods.locator(".panel-body").evaluate((body) => {
      body.scrollTop = body.scrollHeight;
    });
    await pods.locator(`tbody tr[data-key="bulk/${name(PODS - 1)}"]`).waitFor({ timeout: 10_000 });
    assert.ok((await pods.locator("tbody tr[data-key]").count()) <= 200, "still a window after scrolling");
    assert.equal(await pods.locator(`tbody tr[data-key="bulk/${name(0)}"]`).count(), 0, "the first pod has left the page");

    // A pod deleted in view goes from the table and the count.
    await simApi(stack.simA, "DELETE", `/api/v1/namespaces/bulk/pods/${name(PODS - 1)}`);
    await pods.locator(".panel-count", { hasText: `${PODS - 1} pods` }).waitFor({ timeout: 15_000 });
    await eventually("the deleted pod's row to go", async () => (await pods.locator(`tbody tr[data-key="bulk/${name(PODS - 1)}"]`).count()) === 0);
    await pods.locator(`tbody tr[data-key="bulk/${name(PODS - 2)}"]`).waitFor({ timeout: 10_000 });
    await app.check();
    await app.close();
  } finally {
    await simApi(stack.simA, "DELETE", "/api/v1/namespaces/bulk/pods").catch(() => {});
    await simApi(stack.simA, "DELETE", "/api/v1/namespaces/bulk").catch(() => {});
  }
});
