//! kube-sim's request path and query parsing. Invariants: neither panics on any input; a parsed
//! path names a served resource, carries a namespace only for a namespaced one, has no `/` in
//! its namespace, name or subresource, and the canonical path built from its parts parses to the
//! same thing; a query built from pairs reads back the first value of each key.

#![no_main]

use arbitrary::Arbitrary;
use kube_sim::api::fuzzing::{parse_path, query_flag, query_get};
use kube_sim::resources::ALL;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    path: &'a str,
    raw_query: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

fuzz_target!(|input: Input<'_>| {
    let _ = query_get(input.raw_query, "watch");
    let _ = query_flag(input.raw_query, "watch");

    if let Some(parsed) = parse_path(input.path) {
        assert!(ALL.iter().any(|r| std::ptr::eq(*r, parsed.resource)), "{:?}: not a served resource", input.path);
        assert!(parsed.namespace.is_none() || parsed.resource.namespaced, "{:?}: namespace on a cluster-scoped resource", input.path);
        for part in [&parsed.namespace, &parsed.name, &parsed.sub].into_iter().flatten() {
            assert!(!part.contains('/'), "{:?}: segment {part:?} holds a slash", input.path);
        }
        let mut canonical = parsed.resource.group_version_path();
        if let Some(namespace) = &parsed.namespace {
            canonical = format!("{canonical}/namespaces/{namespace}");
        }
        canonical = format!("{canonical}/{}", parsed.resource.plural);
        for part in [&parsed.name, &parsed.sub].into_iter().flatten() {
            canonical = format!("{canonical}/{part}");
        }
        assert_eq!(parse_path(&canonical), Some(parsed), "{:?} rebuilt as {canonical:?}", input.path);
    }

    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in &input.pairs {
        query.append_pair(key, value);
    }
    let query = query.finish();
    for (key, _) in &input.pairs {
        let first = input.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| (*v).to_owned());
        assert_eq!(query_get(&query, key), first, "{query:?}");
        let flag = first.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        assert_eq!(query_flag(&query, key), flag, "{query:?}");
    }
});
