// A TypeScript consumer, checked with `tsc --strict` against the built package's types: a typed
// watch, the external store, terminals and errors, as an application would use them.
import init, { Mux, Terminal, type KubeObject, type MuxError, type MuxStats, type Subscription } from "kubemux";
import { useWatch } from "kubemux/react";

interface Pod extends KubeObject {
  spec: { nodeName?: string; containers: { name: string; image: string }[] };
  status?: { phase?: "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown"; podIP?: string };
}

export async function start(url: string): Promise<Subscription<Pod>> {
  await init();
  const mux = new Mux(url, { token: "t", onState: (s) => console.log(s.state === "reconnecting" ? s.delayMs : s.state) });
  const pods: Subscription<Pod> = mux.watch<Pod>(
    { cluster: "demo", path: "/api/v1/namespaces/demo/pods", labelSelector: "app=web" },
    {
      onEvent: (e) => console.log(e.type, e.object.spec.containers[0]?.image),
      onError: (e: MuxError) => console.log(e.fatal, e.status.code, e.status.reason),
    },
  );
  const phases: (string | undefined)[] = pods.getSnapshot().map((pod) => pod.status?.phase);
  const stop: () => void = pods.subscribe(() => console.log(phases.length, pods.state()));
  stop();
  const first: Pod | undefined = pods.items()[0];
  const stats: MuxStats = await mux.stats();
  const sharedBy: number | undefined = stats.subscriptions[pods.id]?.upstream?.subscribers;
  console.log(stats.connection.bytesOut, sharedBy);
  console.log(first?.metadata.name.toUpperCase());
  const terminal = new Terminal("https://proxy", { cluster: "demo", namespace: "demo", pod: "web", onData: (d) => console.log(d.byteLength) });
  terminal.write("ls\r");
  // A hook's signature is checked too (its body needs React at run time, not here).
  const hook: (mux: Mux | null, request: null) => readonly Pod[] = useWatch<Pod>;
  console.log(hook);
  // What the types must refuse: were any of them `any`, an expect-error below would be unused,
  // which tsc reports as an error.
  // @ts-expect-error a delay is a number
  new Mux(url, { reconnectBaseMs: "500" });
  // @ts-expect-error a watch needs its path
  mux.watch({ cluster: "demo" });
  // @ts-expect-error the snapshot is read-only
  pods.getSnapshot().push(first!);
  // @ts-expect-error a Pod's phase is one of five
  const phase: number | undefined = pods.items()[0]?.status?.phase;
  // @ts-expect-error a terminal needs its pod
  new Terminal("https://proxy", { cluster: "demo", namespace: "demo" });
  // @ts-expect-error the state is one of four names
  const state: "open" = pods.state();
  // @ts-expect-error terminal input is text or bytes
  terminal.write(42);
  const slim: Subscription<Pod> = mux.watch<Pod>({ cluster: "demo", path: "/api/v1/pods", projection: "default" });
  // @ts-expect-error a projection is "default" or "none"
  mux.watch({ cluster: "demo", path: "/api/v1/pods", projection: "slim" });
  console.log(slim.id);
  // @ts-expect-error a subscription's upstream may be null (the forwards' collection)
  console.log(stats.subscriptions[pods.id]!.upstream.requests);
  console.log(phase, state, terminal.command.join(" "), mux.state.state);
  return pods;
}
