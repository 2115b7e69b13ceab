// The consumer every bundler builds: the pods of namespace `demo`, reported to the test fixture
// (tests/src/bin/kubemux-fixture.rs) on every change, as tests/browser/pods.html does unbundled.
import init, { Mux } from "kubemux";

const report = (body) => fetch("/report", { method: "POST", body: JSON.stringify(body) });

try {
  // esbuild copies no assets: its page says where the .wasm is. Vite and webpack resolve the
  // package's own `new URL("kubemux_bg.wasm", import.meta.url)`.
  await init(globalThis.KUBEMUX_WASM ? { module_or_path: globalThis.KUBEMUX_WASM } : undefined);
  const info = await (await fetch("/info")).json();
  const mux = new Mux(info.mux, {});
  const sub = mux.watch({ cluster: info.cluster, path: "/api/v1/namespaces/demo/pods" }, {
    onChange: () => render(),
    onSynced: () => render(),
    onError: (e) => report({ error: e.status.message }),
  });
  const list = document.getElementById("pods");
  function render() {
    const pods = sub.getSnapshot();
    list.replaceChildren(...pods.map((pod) => Object.assign(document.createElement("li"), { textContent: pod.metadata.name })));
    if (sub.state() === "synced") report({ pods: pods.map((pod) => pod.metadata.name) });
  }
} catch (error) {
  report({ error: String((error && error.stack) || error) });
}
