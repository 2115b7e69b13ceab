#!/usr/bin/env python3
"""Regenerates `definitions.json`: the Kubernetes v1.32.0 schemas of the types kube-sim serves.

The source is the JSON schema bundle of the `kubernetes-validate` PyPI package (1.32.0), whose
`v1.32.0-local/_definitions.json` is the published Kubernetes v1.32.0 OpenAPI definitions turned
into JSON schema. This keeps only what the served kinds reference and turns it back into OpenAPI
v3 component schemas: `#/$defs/` references become `#/components/schemas/`, the `null` the
conversion adds to every type goes, and so do the one-value `enum`s it adds to `apiVersion`/`kind`.

    pip download --no-deps kubernetes-validate==1.32.0
    unzip -q kubernetes_validate-1.32.0-py3-none-any.whl 'kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json'
    python3 extract.py kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json > definitions.json
"""
import json
import sys

# The served kinds (`resources::ALL`), their lists, and what the API answers besides them.
ROOTS = [
    "io.k8s.api.core.v1." + k
    for k in ["Namespace", "Node", "Pod", "Service", "ConfigMap", "Secret", "Event", "ServiceAccount"]
] + [
    "io.k8s.api.apps.v1.Deployment", "io.k8s.api.apps.v1.ReplicaSet", "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.authorization.v1.SelfSubjectAccessReview", "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
    "io.k8s.api.rbac.v1.Role", "io.k8s.api.rbac.v1.RoleBinding", "io.k8s.api.rbac.v1.ClusterRole",
    "io.k8s.api.rbac.v1.ClusterRoleBinding", "io.k8s.api.policy.v1.PodDisruptionBudget",
]
EXTRA = ["io.k8s.api.autoscaling.v1.Scale", "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
         "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"]
PREFIX = "#/$defs/"


def clean(value, key=None):
    if isinstance(value, list):
        return [clean(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        if k == "$ref":
            assert v.startswith(PREFIX), v
            out[k] = "#/components/schemas/" + v[len(PREFIX):]
        elif k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            out[k] = types[0] if len(types) == 1 else types
        elif k == "properties":
            out[k] = {name: clean(p, name) for name, p in v.items()}
        else:
            out[k] = clean(v)
    if key in ("apiVersion", "kind") and len(out.get("enum", [])) == 1:
        del out["enum"]
    return out


def refs(value):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "$ref":
                yield v[len(PREFIX):]
            else:
                yield from refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from refs(v)


def main():
    defs = json.load(open(sys.argv[1]))["$defs"]
    todo = ROOTS + [r + "List" for r in ROOTS if r + "List" in defs] + EXTRA
    keep = {}
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = defs[name]
        todo.extend(refs(defs[name]))
    out = {name: clean(keep[name]) for name in sorted(keep)}
    out["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] = "int-or-string"
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


main()
