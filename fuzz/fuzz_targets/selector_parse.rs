//! kube-sim's `labelSelector`/`fieldSelector` parser. Invariants: parsing never panics; a
//! parsed label selector's canonical form (`Display`) parses to the same selector, and so does a
//! field selector's when its values need no escaping (`Display` escapes nothing); matching an object gives the same answer
//! for the selector and for its re-parsed canonical form.

#![no_main]

use arbitrary::Arbitrary;
use kube_sim::resources::{ALL, ResourceDef};
use kube_sim::selectors::Selector;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    resource: u8,
    label: &'a str,
    field: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    phase: &'a str,
    name: &'a str,
}

fn reparsed(canonical: &str, resource: &ResourceDef, field: bool) -> Selector {
    let (label, field) = if field { (None, Some(canonical.trim_start_matches("; "))) } else { (Some(canonical), None) };
    Selector::parse(label, field, resource).unwrap_or_else(|e| panic!("canonical form {canonical:?} is refused: {e:?}"))
}

fuzz_target!(|input: Input<'_>| {
    let resource = ALL[usize::from(input.resource) % ALL.len()];
    let labels: Map<String, Value> = input.labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let object = json!({"metadata": {"name": input.name, "namespace": "default", "labels": labels}, "status": {"phase": input.phase}});

    let _ = Selector::parse(Some(input.label), Some(input.field), resource);
    if let Ok(selector) = Selector::parse(Some(input.label), None, resource) {
        let canonical = selector.to_string();
        let again = reparsed(&canonical, resource, false);
        assert_eq!(again, selector, "label selector {:?} renders as {canonical:?}", input.label);
        assert_eq!(selector.matches(&object), again.matches(&object));
        assert_eq!(selector.matches(&object), selector.matches(&object), "matching is deterministic");
    }
    if let Ok(selector) = Selector::parse(None, Some(input.field), resource) {
        assert_eq!(selector.matches(&object), selector.matches(&object), "matching is deterministic");
        // `Display` is for logs and does not escape values: only selectors whose values need no
        // escaping (no `\\`, `,` or `=` in them: one `=` per term) are compared.
        let canonical = selector.to_string();
        if !input.field.contains('\\') && canonical.matches('=').count() == canonical.split(',').count() {
            let again = reparsed(&canonical, resource, true);
            assert_eq!(again, selector, "field selector {:?} renders as {canonical:?}", input.field);
        }
    }
});
