#!/usr/bin/env python3
"""Regenerates `messages.rs`: for every message a served kind's protobuf body can hold, its JSON
conversion (an exhaustive destructuring, so a field k8s-pb adds fails the build until this is
run again) and its table of field numbers (so a field k8s-pb does not know is refused, where
prost would skip it).

The fields come from the k8s-pb crate's source (the prost messages kube-sim decodes with); what
the JSON looks like comes from the Go types of the same field numbers in k8s.io/api and
k8s.io/apimachinery (the `protobuf:"…,N,…"` struct tags): the JSON name, `,inline`, and
whether Go holds the field by pointer (then a zero value is kept: `replicas: 0`, `emptyDir: {}`;
otherwise zero means unset and is left out, as the API server's decoder reads it).

    python3 generate.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src K8S_IO_API K8S_IO_APIMACHINERY > messages.rs
    rustfmt --edition 2024 --config max_width=200,use_small_heuristics=Max messages.rs

with checkouts of k8s.io/api and k8s.io/apimachinery at or after the Kubernetes release k8s-pb
was generated from.
"""
import os
import re
import sys

# The kinds `api` reads from a request body: `resources::ALL`'s, and `Scale`.
ROOTS = {
    "api::core::v1": ["Namespace", "Node", "Pod", "Service", "ConfigMap", "Secret", "Event", "ServiceAccount"],
    "api::apps::v1": ["Deployment", "ReplicaSet"],
    "api::coordination::v1": ["Lease"],
    "api::authorization::v1": ["SelfSubjectAccessReview", "SelfSubjectRulesReview"],
    "api::rbac::v1": ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"],
    "api::policy::v1": ["PodDisruptionBudget"],
    "api::autoscaling::v1": ["Scale"],
}
# Messages whose JSON form is Kubernetes' own, written by hand in `protobuf.rs`.
SPECIAL = {
    "apimachinery::pkg::apis::meta::v1::Time", "apimachinery::pkg::apis::meta::v1::MicroTime",
    "apimachinery::pkg::apis::meta::v1::Duration", "apimachinery::pkg::apis::meta::v1::FieldsV1",
    "apimachinery::pkg::api::resource::Quantity", "apimachinery::pkg::util::intstr::IntOrString",
    "apimachinery::pkg::runtime::RawExtension",
}

PROST = re.compile(r'#\[prost\((.*)\)\]')
FIELD = re.compile(r'pub (r#)?(\w+):(.*)')


def read_pb(src):
    """{module: {struct: [(ident, prost attribute, rust type)]}} from k8s-pb's `mod.rs` files."""
    modules = {}
    for root, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        module = "::".join(os.path.relpath(root, src).split(os.sep))
        structs, current, attr, pending = {}, None, None, None
        for line in open(os.path.join(root, "mod.rs")):
            s = line.strip()
            if line.startswith("pub struct ") and s.endswith("{"):
                current = structs.setdefault(s.split()[2], [])
            elif line.startswith("}"):
                current = None
            elif current is None or s.startswith("///"):
                continue
            elif pending is not None:
                pending[2] += s
            elif m := PROST.match(s):
                attr = m.group(1)
            elif m := FIELD.match(s):
                pending = [(m.group(1) or "") + m.group(2), attr, m.group(3).strip()]
            if pending is not None and pending[2].endswith(",") and pending[2].count("<") == pending[2].count(">"):
                current.append((pending[0], pending[1], pending[2][:-1]))
                pending = None
        modules[module] = structs
    return modules


def read_go(d):
    """{lowercased Go type: {proto number: (json name, pointer, inline)}} from the Go sources in `d`."""
    types = {}
    struct = re.compile(r'^type (\w+) struct \{')
    field = re.compile(r'^\t(?:(\w+)\s+)?(\*?[\w.\[\]]+)\s+`(.*)`')
    for name in sorted(os.listdir(d)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        current = None
        for line in open(os.path.join(d, name)):
            if m := struct.match(line):
                current = types.setdefault(m.group(1).lower(), {})
            elif line.startswith("}"):
                current = None
            elif current is not None and (m := field.match(line)):
                tags = dict(re.findall(r'(\w+):"([^"]*)"', m.group(3)))
                proto = tags.get("protobuf", "-").split(",")
                if len(proto) < 2 or not proto[1].isdigit():
                    continue
                json_name = tags.get("json", "").split(",")[0]
                embedded = m.group(1) is None
                inline = ",inline" in tags.get("json", "") or (embedded and json_name == "")
                current[int(proto[1])] = (json_name, m.group(2).startswith("*"), inline)
    return types


def resolve(module, rust_type):
    """The module and struct a field's Rust type names."""
    inner = re.sub(r"\s+", "", rust_type).replace(",>", ">")
    for wrapper in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"]:
        while inner.startswith(wrapper):
            inner = inner[len(wrapper):-1].strip()
    if inner.startswith("::prost::alloc::collections::BTreeMap<"):
        inner = inner[len("::prost::alloc::collections::BTreeMap<"):-1].split(",", 1)[1].strip()
        return resolve(module, inner)
    path = inner.split("::")
    parts = module.split("::")
    while path[0] == "super":
        path.pop(0)
        parts.pop()
    return "::".join(parts + path[:-1]), path[-1]


def camel(ident):
    head, *rest = ident.removeprefix("r#").split("_")
    return head + "".join(w.capitalize() for w in rest)


def main():
    pb = read_pb(sys.argv[1])
    api, apimachinery = sys.argv[2], sys.argv[3]
    go = {m: read_go(os.path.join(api, *m.split("::")[1:])) for m in ROOTS}
    go["apimachinery::pkg::apis::meta::v1"] = read_go(os.path.join(apimachinery, "pkg", "apis", "meta", "v1"))
    seen, order = set(), []
    work = [(m, k) for m, kinds in ROOTS.items() for k in kinds]
    while work:
        module, name = work.pop(0)
        if (module, name) in seen:
            continue
        seen.add((module, name))
        order.append((module, name))
        for ident, attr, rust_type in pb[module][name]:
            if attr.startswith("message") or attr.startswith('btree_map = "string, message"'):
                work.append(resolve(module, rust_type))
    out = ["// @generated by generate.py from k8s-pb's messages and the Go types' field tags: do not edit.",
           "",
           "use serde_json::Value;",
           "",
           "use super::{Field, Go, Json, Object, Table};",
           "use crate::status::ApiError;",
           ""]
    kinds = []
    for module, name in order:
        path = f"k8s_pb::{module}::{name}"
        table = f"{module.replace('::', '_')}_{name}".upper()
        fields = pb[module][name]
        entries = []
        for ident, attr, rust_type in fields:
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            if attr.startswith('btree_map = "string, message"'):
                entries.append(f"({tag}, Field::Map(Some(&{'_'.join(resolve(module, rust_type)).replace('::', '_').upper()})))")
            elif attr.startswith("btree_map"):
                entries.append(f"({tag}, Field::Map(None))")
            elif attr.startswith("message"):
                entries.append(f"({tag}, Field::Message(&{'_'.join(resolve(module, rust_type)).replace('::', '_').upper()}))")
            else:
                entries.append(f"({tag}, Field::Scalar)")
        out.append(f"pub(super) static {table}: Table = Table {{ name: \"{name}\", fields: &[{', '.join(entries)}] }};")
        if f"{module}::{name}" in SPECIAL:
            out.append("")
            continue
        gotype = go.get(module, {}).get(name.lower())
        if gotype is None:
            print(f"no Go type for {module}::{name}", file=sys.stderr)
            gotype = {}
        binding = ", ".join(i for i, _, _ in fields)
        out.append(f"impl Json for {path} {{")
        out.append(f"    fn json(self) -> Result<Value, ApiError> {{")
        out.append(f"        let Self {{ {binding} }} = self;" if fields else "        let Self {} = self;")
        out.append(f"        let mut o = Object::default();")
        for ident, attr, rust_type in fields:
            tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
            if tag in gotype:
                key, pointer, inline = gotype[tag]
            else:
                # A field the Go types no longer have (an alpha field renamed since): its name in
                # camel case, every value kept.
                print(f"no Go field {tag} in {name} for {ident}: kept as {camel(ident)}", file=sys.stderr)
                key, pointer, inline = camel(ident), True, False
            var = ident
            held = "Go::Pointer" if pointer else "Go::Value"
            kind = attr.split(",")[0].strip()
            if inline:
                out.append(f"        o.inline({var})?;")
            elif "repeated" in attr:
                out.append(f"        o.list(\"{key}\", {var})?;")
            elif kind.startswith("btree_map"):
                out.append(f"        o.map(\"{key}\", {var})?;")
            else:
                out.append(f"        o.put(\"{key}\", {held}, {var})?;")
        out.append("        Ok(o.done())")
        out.append("    }")
        out.append("}")
        out.append("")
        if name in ROOTS.get(module, []):
            kinds.append((name, path, table))
    out.append("/// The JSON of a body of `kind`, after its bytes passed `table`'s check.")
    out.append("pub(super) fn kind(kind: &str) -> Option<(&'static Table, fn(&[u8]) -> Result<Value, ApiError>)> {")
    out.append("    Some(match kind {")
    for name, path, table in kinds:
        out.append(f"        \"{name}\" => (&{table}, |raw| super::typed::<{path}>(raw)?.json()),")
    out.append("        _ => return None,")
    out.append("    })")
    out.append("}")
    print("\n".join(out))


main()
