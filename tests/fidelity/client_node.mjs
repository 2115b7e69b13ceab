// kube-sim through @kubernetes/client-node 1.x, as a user would call it.
//
//     KUBECONFIG=FILE node client_node.mjs
//
// Loads the kubeconfig it is given (kube-sim's own `--write-kubeconfig` file, or one whose server
// is the proxy's `/clusters/NAME`), runs every case, prints `ok NAME` or `FAIL NAME: WHY` for
// each and a closing `N passed, N failed` line, and exits 1 if any failed. Driven by
// `tests/tests/fidelity.rs`.

import * as k8s from '@kubernetes/client-node';
import { PassThrough } from 'node:stream';

const kc = new k8s.KubeConfig();
kc.loadFromFile(process.env.KUBECONFIG);
const core = kc.makeApiClient(k8s.CoreV1Api);
const apps = kc.makeApiClient(k8s.AppsV1Api);
const cases = [];
const check = (condition, message) => {
  if (!condition) throw new Error(typeof message === 'string' ? message : JSON.stringify(message));
};
const collect = (stream) => {
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  return () => Buffer.concat(chunks).toString();
};
const withTimeout = (promise, ms, what) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms).unref())]);

cases.push(async function listPodsAndNodes() {
  const pods = await core.listNamespacedPod({ namespace: 'demo' });
  check(pods.items.some((p) => p.metadata.name === 'redis-0'), pods.items.map((p) => p.metadata.name));
  const nodes = await core.listNode();
  check(JSON.stringify(nodes.items.map((n) => n.metadata.name)) === '["sim-node-1","sim-node-2"]', nodes.items.map((n) => n.metadata.name));
});

cases.push(async function fieldSelectors() {
  const pods = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=sim-node-2' });
  check(pods.items.length > 0 && pods.items.every((p) => p.spec.nodeName === 'sim-node-2'), pods.items.map((p) => p.spec.nodeName));
  const running = await core.listNamespacedPod({ namespace: 'demo', fieldSelector: 'status.phase=Running,metadata.name=redis-0' });
  check(running.items.length === 1, running.items.length);
  await core.listNamespacedEvent({ namespace: 'demo', fieldSelector: 'involvedObject.kind=Pod,involvedObject.apiVersion=v1,reason=Started' });
});

cases.push(async function createWatchPatchDelete() {
  const list = await core.listNamespacedConfigMap({ namespace: 'default' });
  const seen = [];
  let request;
  const added = new Promise((resolve, reject) => {
    new k8s.Watch(kc)
      .watch('/api/v1/namespaces/default/configmaps', { resourceVersion: list.metadata.resourceVersion }, (type, object) => {
        seen.push(`${type} ${object.metadata.name}`);
        if (type === 'ADDED' && object.metadata.name === 'fidelity-node') resolve();
      }, (err) => reject(err ?? new Error(`the watch ended first: ${seen}`)))
      .then((r) => { request = r; }, reject);
  });
  await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'fidelity-node' }, data: { a: '1' } } });
  await withTimeout(added, 10000, 'the ADDED event');
  request?.abort();
  const merged = await core.patchNamespacedConfigMap({ name: 'fidelity-node', namespace: 'default', body: { data: { b: '2' } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
  check(JSON.stringify(merged.data) === '{"a":"1","b":"2"}', merged.data);
  const patched = await core.patchNamespacedConfigMap({ name: 'fidelity-node', namespace: 'default', body: [{ op: 'replace', path: '/data/a', value: '3' }] });
  check(patched.data.a === '3', patched.data);
  await core.deleteNamespacedConfigMap({ name: 'fidelity-node', namespace: 'default' });
  try {
    await core.readNamespacedConfigMap({ name: 'fidelity-node', namespace: 'default' });
    check(false, 'still there after delete');
  } catch (e) {
    check(e.code === 404, `expected 404, got ${e.code ?? e}`);
  }
});

cases.push(async function strategicPatchKeepsPorts() {
  const body = { spec: { template: { spec: { containers: [{ name: 'nginx', image: 'nginx:1.28' }] } } } };
  const web = await apps.patchNamespacedDeployment({ name: 'web', namespace: 'demo', body }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch));
  const nginx = web.spec.template.spec.containers.find((c) => c.name === 'nginx');
  check(nginx.image === 'nginx:1.28' && JSON.stringify(nginx.ports.map((p) => p.containerPort)) === '[80]', nginx);
  check(web.spec.template.spec.containers.length === 2, web.spec.template.spec.containers);
});

cases.push(async function logs() {
  const text = await core.readNamespacedPodLog({ name: 'toolbox', namespace: 'default' });
  check(text.startsWith('kube-sim: container shell of pod default/toolbox started'), text);
  const out = new PassThrough();
  const read = collect(out);
  const done = new Promise((resolve) => out.on('finish', resolve));
  await new k8s.Log(kc).log('default', 'toolbox', 'shell', out, { tailLines: 1 });
  await withTimeout(done, 10000, 'the log stream');
  check(read() === 'kube-sim: ready\n', JSON.stringify(read()));
});

cases.push(async function logsFollow() {
  const out = new PassThrough();
  let text = '';
  const wrote = new Promise((resolve) => out.on('data', (c) => {
    text += c;
    if (text.includes('from-node\n')) resolve();
  }));
  const request = await new k8s.Log(kc).log('default', 'toolbox', 'shell', out, { follow: true });
  // A process in the container writes to the container's log while the follow is open.
  await new Promise((resolve) => {
    new k8s.Exec(kc).exec('default', 'toolbox', 'shell', ['sh', '-c', 'echo from-node >> container.log'], new PassThrough(), new PassThrough(), null, false, resolve);
  });
  await withTimeout(wrote, 10000, 'the followed line');
  request.abort();
  check(text.startsWith('kube-sim: container shell of pod default/toolbox started\nkube-sim: ready\n'), text);
});

cases.push(async function dryRunAndScale() {
  const created = await core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'dry-node' } }, dryRun: 'All' });
  check(created.metadata.name === 'dry-node', created);
  try {
    await core.readNamespacedConfigMap({ name: 'dry-node', namespace: 'default' });
    check(false, 'a dry run stored the object');
  } catch (e) {
    check(e.code === 404, `expected 404, got ${e.code ?? e}`);
  }
  await apps.replaceNamespacedDeploymentScale({ name: 'api', namespace: 'demo', body: { metadata: { name: 'api', namespace: 'demo' }, spec: { replicas: 3 } } });
  const scale = await apps.readNamespacedDeploymentScale({ name: 'api', namespace: 'demo' });
  check(scale.spec.replicas === 3, scale);
});

cases.push(async function execCommand() {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out = collect(stdout);
  const err = collect(stderr);
  const status = new Promise((resolve) => {
    new k8s.Exec(kc).exec('default', 'toolbox', 'shell', ['sh', '-c', 'echo fidelity; echo oops >&2; exit 3'], stdout, stderr, null, false, resolve);
  });
  const result = await withTimeout(status, 10000, 'the exec status');
  check(out() === 'fidelity\n' && err() === 'oops\n', [out(), err()]);
  check(result.status === 'Failure' && result.details.causes.some((c) => c.reason === 'ExitCode' && c.message === '3'), result);
});

cases.push(async function canI() {
  const auth = kc.makeApiClient(k8s.AuthorizationV1Api);
  const review = await auth.createSelfSubjectAccessReview({ body: { spec: { resourceAttributes: { verb: 'create', resource: 'pods', namespace: 'default' } } } });
  check(review.status.allowed === true, review.status);
});

cases.push(async function metrics() {
  const nodes = await new k8s.Metrics(kc).getNodeMetrics();
  check(nodes.items.length === 2 && nodes.items.every((n) => n.usage.cpu.endsWith('n')), nodes.items);
});

let passed = 0;
let failed = 0;
for (const fn of cases) {
  try {
    await fn();
    console.log(`ok ${fn.name}`);
    passed += 1;
  } catch (e) {
    console.log(`FAIL ${fn.name}: ${e?.stack ?? e}`);
    failed += 1;
  }
}
console.log(`client-node: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
