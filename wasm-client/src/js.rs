//! Small bridges to JavaScript: global timers, reading plain option objects, and turning the
//! core's JSON values into plain JS objects.

use js_sys::{Function, JSON, Object, Reflect};
use kubemux_protocol::frames::Status;
use serde_json::Value;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// The global `setTimeout`, bound directly (not through `window`) so the client also works
    /// in a Web Worker.
    #[wasm_bindgen(js_name = setTimeout)]
    pub fn set_timeout(callback: &Function, ms: f64) -> JsValue;

    /// The global `clearTimeout`.
    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(handle: &JsValue);
}

/// Milliseconds since the epoch: the core's clock.
pub fn now() -> u64 {
    js_sys::Date::now() as u64
}

/// A seed for the reconnect jitter. `Math.random` is enough: the jitter only spreads
/// reconnects of many tabs apart, it guards nothing.
pub fn seed() -> u64 {
    let high = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    let low = (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (high << 32) | low
}

/// `object[key]`, or `undefined` when `object` is not an object.
pub fn get(object: &JsValue, key: &str) -> JsValue {
    if !object.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// An optional string option; anything but a string or `undefined`/`null` is a caller error.
pub fn string_option(object: &JsValue, key: &str) -> Result<Option<String>, JsError> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value.as_string().map(Some).ok_or_else(|| JsError::new(&format!("kubemux: `{key}` must be a string")))
}

/// A required string option.
pub fn required_string(object: &JsValue, key: &str, what: &str) -> Result<String, JsError> {
    string_option(object, key)?.ok_or_else(|| JsError::new(&format!("kubemux: {what} needs a `{key}` string")))
}

/// An optional callback option.
pub fn function_option(object: &JsValue, key: &str) -> Result<Option<Function>, JsError> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value.dyn_into::<Function>().map(Some).map_err(|_| JsError::new(&format!("kubemux: `{key}` must be a function")))
}

/// An optional non-negative number option, in whole milliseconds.
pub fn millis_option(object: &JsValue, key: &str) -> Result<Option<u64>, JsError> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    match value.as_f64() {
        Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(ms as u64)),
        _ => Err(JsError::new(&format!("kubemux: `{key}` must be a non-negative number of milliseconds"))),
    }
}

/// A JSON text as a plain JS value. The text always comes from `serde_json`, so parsing cannot
/// fail; `JSON.parse` is used because it is the engine's own fast path and costs no wasm code.
pub fn parse(json: &str) -> JsValue {
    JSON::parse(json).unwrap_or(JsValue::NULL)
}

/// A JSON value as a plain JS value.
pub fn to_js(value: &Value) -> JsValue {
    parse(&value.to_string())
}

/// Objects as a plain JS array, built as one JSON text so the engine parses it in one go.
pub fn array_of<'a>(values: impl ExactSizeIterator<Item = &'a Value>) -> JsValue {
    let mut text = String::from("[");
    for (i, value) in values.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&value.to_string());
    }
    text.push(']');
    parse(&text)
}

/// `{ id, fatal, status }` for `onError`.
pub fn error_object(id: Option<&str>, fatal: bool, status: &Status) -> JsValue {
    let object = Object::new();
    let id = id.map_or(JsValue::NULL, JsValue::from_str);
    set(&object, "id", &id);
    set(&object, "fatal", &JsValue::from_bool(fatal));
    let status = serde_json::to_string(status).map(|text| parse(&text)).unwrap_or(JsValue::NULL);
    set(&object, "status", &status);
    object.into()
}

/// `object[key] = value` on an object this crate created (cannot fail).
pub fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
}

/// Calls an application callback. An exception thrown by the application is reported on the
/// console and otherwise ignored: one faulty handler must not stop the client delivering to
/// the others.
pub fn call(callback: &Function, args: &[JsValue]) {
    let result = match args {
        [] => callback.call0(&JsValue::UNDEFINED),
        [a] => callback.call1(&JsValue::UNDEFINED, a),
        [a, b] => callback.call2(&JsValue::UNDEFINED, a, b),
        _ => callback.apply(&JsValue::UNDEFINED, &args.iter().collect()),
    };
    if let Err(error) = result {
        web_sys_console_error(&error);
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(prefix: &str, error: &JsValue);
}

fn web_sys_console_error(error: &JsValue) {
    console_error("kubemux: an application callback threw:", error);
}
