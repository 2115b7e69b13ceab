//! `patch` frames in the browser (`docs/PROTOCOL.md` §3): the header read from the object
//! `JSON.parse` made of the frame, and the merge patch applied to the object the cache holds.
//!
//! The patch is applied in JavaScript, on the engine's own objects, copy on write: the result is
//! a new object for every object on the patch's path and shares every other member with the old
//! one, so a renderer that compares by identity redraws only what changed, and nothing is copied
//! into wasm memory. Written here rather than taken from npm: the package bundles no JavaScript
//! dependency, and this is RFC 7386's apply in a dozen lines (checked against the Rust one,
//! `kubemux_protocol::delta::apply_merge_patch`, by the browser test).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
function own(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}
function apply(target, patch) {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const out = {};
  if (target !== null && typeof target === "object" && !Array.isArray(target)) {
    for (const key of Object.keys(target)) own(out, key, target[key]);
  }
  for (const key of Object.keys(patch)) {
    const value = patch[key];
    if (value === null) delete out[key];
    else own(out, key, apply(out[key], value));
  }
  return out;
}
export function patched(held, base, patch) {
  const metadata = held !== null && typeof held === "object" ? held.metadata : undefined;
  if (metadata === null || typeof metadata !== "object" || metadata.resourceVersion !== base) return undefined;
  return apply(held, patch);
}
export function patchHeader(frame) {
  if (frame === null || typeof frame !== "object" || frame.op !== "patch") return undefined;
  const { id, base, name, resourceVersion, patch } = frame;
  const namespace = frame.namespace === undefined ? "" : frame.namespace;
  const strings = [id, base, namespace, name, resourceVersion].every((field) => typeof field === "string");
  if (!strings || patch === null || typeof patch !== "object" || Array.isArray(patch)) return undefined;
  return [id, base, namespace, name, resourceVersion, patch];
}
"#)]
extern "C" {
    /// `held` with `patch` applied, or `undefined` when `held` is not at version `base`.
    #[wasm_bindgen(js_name = patched)]
    fn patched_js(held: &JsValue, base: &str, patch: &JsValue) -> JsValue;
    /// `[id, base, namespace, name, resourceVersion, patch]` of a well-formed `patch` frame,
    /// `undefined` for anything else (which takes the text path and its decoder's errors).
    #[wasm_bindgen(js_name = patchHeader)]
    fn patch_header(frame: &JsValue) -> JsValue;
}

/// The core's `PatchFn` for the browser's objects.
pub fn patched(held: &JsValue, base: &str, patch: &JsValue) -> Option<JsValue> {
    Some(patched_js(held, base, patch)).filter(|object| !object.is_undefined())
}

/// A `patch` frame's fields, read in one crossing.
pub struct Header {
    pub id: String,
    pub base: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub patch: JsValue,
}

/// The header of `frame` if it is a well-formed `patch` frame.
pub fn header(frame: &JsValue) -> Option<Header> {
    let fields = patch_header(frame);
    if fields.is_undefined() {
        return None;
    }
    let fields: &js_sys::Array = fields.unchecked_ref();
    let text = |index: u32| fields.get(index).as_string().unwrap_or_default();
    Some(Header { id: text(0), base: text(1), namespace: text(2), name: text(3), resource_version: text(4), patch: fields.get(5) })
}
