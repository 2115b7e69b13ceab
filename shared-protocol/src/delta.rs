//! Fewer bytes per event: the projection a watch may ask for, and the merge patch (RFC 7386)
//! that carries a MODIFIED object as its difference from the version the subscriber holds.
//!
//! Sans-IO and allocation-light: both work on `serde_json::Value`s the caller already holds.
//! The proxy projects and diffs each event once for every subscriber that asked
//! (`docs/PROTOCOL.md` §2 `projection` and `deltas`, §3 `patch`); the native client core applies
//! patches with [`apply_merge_patch`], the browser's with the same rules on its own objects.
//!
//! The diff is written here because no crate in the registries produces an RFC 7386 merge patch
//! from two documents: `json-patch` diffs into RFC 6902 operations and applies merge patches
//! (`json_patch::merge`, against which the tests check [`apply_merge_patch`]), and
//! `serde_json_merge` and friends only apply. The apply is written here too, ten lines, so the
//! client core does not pull `json-patch` (and its RFC 6902 half) into every build.

use serde_json::{Map, Value};

/// The annotation `kubectl apply` writes: a copy of the whole applied object, which no dashboard
/// reads and which doubles a small object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a watch keeps of each object. The default drops what dashboards never show and what
/// changes on every write: `metadata.managedFields` (server-side apply's bookkeeping, often a
/// third of a pod) and the last-applied annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    /// Drop `metadata.managedFields`.
    pub drop_managed_fields: bool,
    /// Drop the `kubectl.kubernetes.io/last-applied-configuration` annotation.
    pub drop_last_applied: bool,
}

impl Default for Projection {
    fn default() -> Self {
        Projection { drop_managed_fields: true, drop_last_applied: true }
    }
}

impl Projection {
    /// Keeps everything: what a subscription that asks for no projection gets.
    pub const NONE: Projection = Projection { drop_managed_fields: false, drop_last_applied: false };

    /// `object` as this projection keeps it, in place. Whether anything was removed.
    pub fn apply(&self, object: &mut Value) -> bool {
        let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return false;
        };
        let mut removed = false;
        if self.drop_managed_fields {
            removed |= metadata.remove("managedFields").is_some();
        }
        if self.drop_last_applied
            && let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut)
        {
            removed |= annotations.remove(LAST_APPLIED).is_some();
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
        removed
    }
}

/// `new` holds a `null` member where a merge patch would read it as "remove this member" (a
/// pod's `lastProbeTime: null` in a condition that is new or replaced, say): the sender sends the
/// whole object instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unpatchable;

/// The merge patch that turns `old` into `new` when applied with RFC 7386's rules, or `Ok(None)`
/// when they are equal.
///
/// Members of `old` missing from `new` become `null`; objects are diffed member by member; any
/// other change (arrays included: RFC 7386 replaces them whole, `null`s inside and all) carries
/// the new value.
pub fn merge_patch(old: &Value, new: &Value) -> Result<Option<Value>, Unpatchable> {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    // A member set to `null` would be removed by the patch.
                    _ if value.is_null() => return Err(Unpatchable),
                    Some(before) => {
                        if let Some(change) = merge_patch(before, value)? {
                            patch.insert(key.clone(), change);
                        }
                    }
                    None => {
                        if holds_null_member(value) {
                            return Err(Unpatchable);
                        }
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            Ok((!patch.is_empty()).then_some(Value::Object(patch)))
        }
        (old, new) if old == new => Ok(None),
        (_, new) if holds_null_member(new) => Err(Unpatchable),
        (_, new) => Ok(Some(new.clone())),
    }
}

/// Applies the RFC 7386 merge patch `patch` to `target`: an object patch sets each member it
/// names (recursively for objects) and removes those it sets to `null`; anything else replaces
/// the target whole.
pub fn apply_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(held) = target else { return };
    for (key, value) in members {
        if value.is_null() {
            held.remove(key);
        } else {
            apply_merge_patch(held.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Whether an object patch carrying `value` would drop one of its members: a `null` member of an
/// object, outside arrays (which a merge patch replaces as they are).
fn holds_null_member(value: &Value) -> bool {
    match value {
        Value::Object(members) => members.values().any(|member| member.is_null() || holds_null_member(member)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_status_change_is_sent_as_the_status_members_that_changed() {
        let old = json!({"metadata": {"name": "p", "resourceVersion": "1"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let new = json!({"metadata": {"name": "p", "resourceVersion": "2"}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(merge_patch(&old, &new), Ok(Some(json!({"metadata": {"resourceVersion": "2"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}))));
        assert_eq!(merge_patch(&new, &new), Ok(None));
    }

    #[test]
    fn a_removed_member_is_null_in_the_patch() {
        let old = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let new = json!({"metadata": {"labels": {"a": "1"}}});
        assert_eq!(merge_patch(&old, &new), Ok(Some(json!({"metadata": {"labels": {"b": null}}}))));
    }

    #[test]
    fn a_null_member_the_patch_would_carry_makes_it_unpatchable_and_one_it_leaves_alone_does_not() {
        assert_eq!(merge_patch(&json!({"a": 1}), &json!({"a": null})), Err(Unpatchable));
        assert_eq!(merge_patch(&json!({}), &json!({"c": {"lastProbeTime": null}})), Err(Unpatchable));
        // A pod's conditions are an array, replaced whole: its nulls go as they are.
        let old = json!({"conditions": [{"type": "Ready", "lastProbeTime": null, "status": "True"}], "phase": "Running"});
        let new = json!({"conditions": [{"type": "Ready", "lastProbeTime": null, "status": "False"}], "phase": "Running"});
        assert_eq!(merge_patch(&old, &new), Ok(Some(json!({"conditions": new["conditions"]}))));
        let unchanged = json!({"a": null, "b": 1});
        assert_eq!(merge_patch(&unchanged, &json!({"a": null, "b": 2})), Ok(Some(json!({"b": 2}))));
    }

    #[test]
    fn the_default_projection_drops_managed_fields_and_the_last_applied_annotation_only() {
        let mut object = json!({"metadata": {"name": "p", "managedFields": [{"manager": "kubelet"}], "annotations": {LAST_APPLIED: "{}", "keep": "me"}}, "spec": {}});
        assert!(Projection::default().apply(&mut object));
        assert_eq!(object, json!({"metadata": {"name": "p", "annotations": {"keep": "me"}}, "spec": {}}));
        assert!(!Projection::default().apply(&mut object), "nothing left to drop");
        let mut untouched = json!({"metadata": {"managedFields": []}});
        assert!(!Projection::NONE.apply(&mut untouched));
        assert_eq!(untouched, json!({"metadata": {"managedFields": []}}));
        let mut only = json!({"metadata": {"annotations": {LAST_APPLIED: "{}"}}});
        Projection::default().apply(&mut only);
        assert_eq!(only, json!({"metadata": {}}), "an emptied annotations map goes too");
        let mut odd = json!({"metadata": "not an object"});
        assert!(!Projection::default().apply(&mut odd), "a malformed object is left as it is");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from), (-5i64..5).prop_map(Value::from), "[a-c]{0,2}".prop_map(Value::from)];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array), prop::collection::btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),]
        })
    }

    proptest! {
        /// Whatever the two documents, the receiver that applies the patch with `json-patch`'s
        /// RFC 7386 merge holds exactly the new one; and no patch means no change.
        #[test]
        fn applying_the_patch_to_the_old_object_gives_the_new_one(old in json_value(), new in json_value()) {
            match merge_patch(&old, &new) {
                Err(Unpatchable) => prop_assert!(holds_null_member(&new) || new.is_null()),
                Ok(None) => prop_assert_eq!(&old, &new),
                Ok(Some(patch)) => {
                    let mut applied = old.clone();
                    json_patch::merge(&mut applied, &patch);
                    prop_assert_eq!(&applied, &new);
                    let mut ours = old.clone();
                    apply_merge_patch(&mut ours, &patch);
                    prop_assert_eq!(ours, new);
                }
            }
        }

        /// Our apply is RFC 7386's, as `json-patch` implements it, for any patch and target.
        #[test]
        fn apply_merge_patch_agrees_with_json_patch(target in json_value(), patch in json_value()) {
            let (mut ours, mut theirs) = (target.clone(), target);
            apply_merge_patch(&mut ours, &patch);
            json_patch::merge(&mut theirs, &patch);
            prop_assert_eq!(ours, theirs);
        }
    }
}
