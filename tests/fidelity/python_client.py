"""kube-sim through the official Python client (`kubernetes`), as a user would call it.

    KUBECONFIG=FILE python python_client.py

Loads the kubeconfig it is given (kube-sim's own, or one whose server is the proxy's
`/clusters/NAME`), runs every case, prints `ok NAME` or `FAIL NAME: WHY` for each and a closing
`N passed, N failed` line, and exits 1 if any failed. Driven by `tests/tests/fidelity.rs`.
"""

import os
import sys
import time
import traceback

from kubernetes import client, config, watch
from kubernetes.stream import portforward, stream

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
apps = client.AppsV1Api()
CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def check(condition, message):
    if not condition:
        raise AssertionError(message)


@case
def list_pods_and_nodes():
    names = [p.metadata.name for p in core.list_namespaced_pod("demo").items]
    check("redis-0" in names, names)
    nodes = [n.metadata.name for n in core.list_node().items]
    check(nodes == ["sim-node-1", "sim-node-2"], nodes)


@case
def field_selectors():
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=sim-node-1").items
    check(pods and all(p.spec.node_name == "sim-node-1" for p in pods), [p.spec.node_name for p in pods])
    running = core.list_namespaced_pod("demo", field_selector="status.phase=Running,metadata.name=redis-0").items
    check([p.metadata.name for p in running] == ["redis-0"], running)
    core.list_namespaced_event("demo", field_selector="involvedObject.kind=Pod,involvedObject.apiVersion=v1,type=Normal")


@case
def create_watch_patch_delete():
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    body = {"metadata": {"name": "fidelity-py", "labels": {"suite": "fidelity"}}, "data": {"a": "1"}}
    core.create_namespaced_config_map("default", body)
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=10):
        seen.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "fidelity-py":
            w.stop()
    check(("ADDED", "fidelity-py") in seen, seen)
    patched = core.patch_namespaced_config_map("fidelity-py", "default", {"data": {"b": "2"}})
    check(patched.data == {"a": "1", "b": "2"}, patched.data)
    core.delete_namespaced_config_map("fidelity-py", "default")
    try:
        core.read_namespaced_config_map("fidelity-py", "default")
        check(False, "still there after delete")
    except client.ApiException as e:
        check(e.status == 404, e.status)


@case
def strategic_patch_keeps_ports():
    # The Python client sends a dict patch as a strategic merge patch.
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.28"}]}}}}
    web = apps.patch_namespaced_deployment("web", "demo", patch)
    nginx = [c for c in web.spec.template.spec.containers if c.name == "nginx"][0]
    check(nginx.image == "nginx:1.28" and [p.container_port for p in nginx.ports] == [80], nginx)
    check(len(web.spec.template.spec.containers) == 2, web.spec.template.spec.containers)


@case
def logs():
    text = core.read_namespaced_pod_log("toolbox", "default")
    check(text.startswith("kube-sim: container shell of pod default/toolbox started"), text)
    tail = core.read_namespaced_pod_log("toolbox", "default", tail_lines=1)
    check(tail == "kube-sim: ready\n", repr(tail))


@case
def logs_follow():
    follow = core.read_namespaced_pod_log("toolbox", "default", follow=True, _preload_content=False)
    lines = [follow.readline(), follow.readline()]
    check(lines[1] == b"kube-sim: ready\n", lines)
    # A process in the container writes to the container's log while the follow is open.
    out = stream(core.connect_get_namespaced_pod_exec, "toolbox", "default", command=["sh", "-c", "echo from-python >> container.log"],
                 stdout=True, stderr=True, stdin=False, tty=False)
    check(out == "", out)
    line = follow.readline()
    follow.close()
    check(line == b"from-python\n", line)


@case
def dry_run_and_scale():
    created = core.create_namespaced_config_map("default", {"metadata": {"name": "dry-py"}}, dry_run="All")
    check(created.metadata.name == "dry-py", created)
    try:
        core.read_namespaced_config_map("dry-py", "default")
        check(False, "a dry run stored the object")
    except client.ApiException as e:
        check(e.status == 404, e.status)
    apps.patch_namespaced_deployment_scale("api", "demo", {"spec": {"replicas": 3}})
    check(apps.read_namespaced_deployment_scale("api", "demo").spec.replicas == 3, "scaled")


@case
def exec_command():
    out = stream(core.connect_get_namespaced_pod_exec, "toolbox", "default", command=["sh", "-c", "echo fidelity; echo oops >&2"],
                 stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
    out.run_forever(timeout=10)
    stdout, stderr = out.read_stdout(), out.read_stderr()
    check(stdout == "fidelity\n" and stderr == "oops\n", (stdout, stderr))
    check(out.returncode == 0, out.returncode)


@case
def can_i():
    review = client.AuthorizationV1Api().create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}}})
    check(review.status.allowed is True, review.status)


@case
def metrics():
    nodes = client.CustomObjectsApi().list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    check([n["metadata"]["name"] for n in nodes["items"]] == ["sim-node-1", "sim-node-2"], nodes)


@case
def port_forward():
    pod = core.list_namespaced_pod("default", label_selector="app=hello").items[0]
    port = pod.spec.containers[0].ports[0].container_port
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod.metadata.name, "default", ports=str(port))
    sock = pf.socket(port)
    sock.setblocking(True)
    sock.settimeout(10)
    sock.sendall(b"ping through the tunnel\n")
    got = b""
    deadline = time.monotonic() + 10
    while len(got) < 24 and time.monotonic() < deadline:
        chunk = sock.recv(1024)
        if not chunk:
            break
        got += chunk
    sock.close()
    check(got == b"ping through the tunnel\n", got)
    check(pf.error(port) is None, pf.error(port))


def main():
    passed = failed = 0
    for fn in CASES:
        try:
            fn()
            print(f"ok {fn.__name__}", flush=True)
            passed += 1
        except Exception as e:  # every case runs; each failure is reported
            print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stderr)
            failed += 1
    print(f"python: {passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


main()
