// No JSX, so that the page needs no React plugin: what is tested is the package, not a build setup.
import { createElement as h, useEffect } from "react";
import { createRoot } from "react-dom/client";
import init, { Mux } from "kubemux";
import { useWatch } from "kubemux/react";

const report = (body) => fetch("/report", { method: "POST", body: JSON.stringify(body) });

function Pods({ mux, cluster }) {
  const pods = useWatch(mux, { cluster, path: "/api/v1/namespaces/default/pods" });
  const rows = pods.map((pod) => `${pod.metadata.name} ${pod.metadata.labels?.step ?? "-"}`);
  // Every render the user would see is reported: the fixture waits for the rows it expects.
  useEffect(() => {
    report({ rows });
  });
  return h("ul", null, rows.map((row) => h("li", { key: row }, row)));
}

try {
  await init();
  const info = await (await fetch("/info")).json();
  const mux = new Mux(info.mux, { onError: (e) => report({ error: e.status.message }) });
  createRoot(document.getElementById("root")).render(h(Pods, { mux, cluster: info.cluster }));
} catch (error) {
  report({ error: String((error && error.stack) || error) });
}
