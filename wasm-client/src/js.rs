//! Small bridges to JavaScript: global timers, reading option objects, reading the header of
//! a frame the engine parsed, and turning the core's (rare) JSON values into plain JS objects.

use js_sys::{Array, Function, JSON, Object, Reflect};
use kubemux_protocol::frames::EventType;
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

/// An optional callback option; anything but a function or `undefined`/`null` is a `TypeError`.
pub fn function_option(object: &JsValue, key: &str) -> Result<Option<Function>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value.dyn_into::<Function>().map(Some).map_err(|_| type_error(&format!("kubemux: `{key}` must be a function")))
}

// The options are read by hand rather than with serde-wasm-bindgen: deriving the readers
// with it cost 15.8 KiB gzipped (19.6 KiB with serde_path_to_error to name the field), a sixth of
// the package, for five small objects (BENCHMARKS.md, "Package size, change by change").

/// Checks that `value` is an options object (`undefined` and `null` read as empty).
pub fn options_object(value: &JsValue, what: &str) -> Result<(), JsValue> {
    if value.is_undefined() || value.is_null() || value.is_object() { Ok(()) } else { Err(type_error(&format!("kubemux: {what} takes an object"))) }
}

/// An optional string option; anything but a string or `undefined`/`null` is a `TypeError`
/// naming the field (never quoting it: it may be a credential).
pub fn string_option(object: &JsValue, key: &str, what: &str) -> Result<Option<String>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value.as_string().map(Some).ok_or_else(|| type_error(&format!("kubemux: {what}: `{key}` must be a string")))
}

/// A required string option.
pub fn required_string(object: &JsValue, key: &str, what: &str) -> Result<String, JsValue> {
    string_option(object, key, what)?.ok_or_else(|| type_error(&format!("kubemux: {what} needs a `{key}` string")))
}

/// An optional number option.
pub fn number_option(object: &JsValue, key: &str, what: &str) -> Result<Option<f64>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    value.as_f64().map(Some).ok_or_else(|| type_error(&format!("kubemux: {what}: `{key}` must be a number")))
}

/// An optional duration option in whole milliseconds: a finite, non-negative number.
pub fn millis_option(object: &JsValue, key: &str, what: &str) -> Result<Option<u64>, JsValue> {
    match number_option(object, key, what)? {
        None => Ok(None),
        Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(ms as u64)),
        Some(_) => Err(type_error(&format!("kubemux: {what}: `{key}` must be a non-negative number of milliseconds"))),
    }
}

/// An optional array of non-empty strings, which must not be empty.
pub fn string_list(object: &JsValue, key: &str, what: &str) -> Result<Option<Vec<String>>, JsValue> {
    let value = get(object, key);
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let wrong = || type_error(&format!("kubemux: {what}: `{key}` must be an array of non-empty strings"));
    if !js_sys::Array::is_array(&value) {
        return Err(wrong());
    }
    let list: Option<Vec<String>> = js_sys::Array::from(&value).iter().map(|item| item.as_string().filter(|s| !s.is_empty())).collect();
    list.filter(|list| !list.is_empty()).map(Some).ok_or_else(wrong)
}

/// A `TypeError` with this message, as thrown for a wrong argument.
pub fn type_error(message: &str) -> JsValue {
    js_sys::TypeError::new(message).into()
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

#[wasm_bindgen]
extern "C" {
    /// Whatever `JSON.parse` made of a frame, read property by property. Structural getters
    /// compile to a plain `value.op` in the glue: no `Reflect.get`, no exception handler, one
    /// crossing each. Only ever called on a non-null object (a getter on `null` would throw).
    pub type Parsed;
    #[wasm_bindgen(method, getter, structural)]
    fn op(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter, structural)]
    fn id(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter = type, structural)]
    fn event_type(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter, structural)]
    fn object(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter, structural)]
    fn metadata(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter, structural)]
    fn namespace(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter, structural)]
    fn name(this: &Parsed) -> JsValue;
    #[wasm_bindgen(method, getter = resourceVersion, structural)]
    fn resource_version(this: &Parsed) -> JsValue;

    /// `JSON.parse` of the socket's `data` as it is: `js_sys::JSON::parse` takes a `&str`, which
    /// would copy every frame into wasm memory and back.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    pub fn parse_data(data: &JsValue) -> Result<JsValue, JsValue>;

    /// An array written by index.
    type Slots;
    /// `array[index] = value` with a borrowed value (js-sys' `set` takes it by value, which
    /// costs a clone of the handle first).
    #[wasm_bindgen(method, structural, indexing_setter)]
    fn set(this: &Slots, index: u32, value: &JsValue);
}

/// `array[index] = value`, the value borrowed.
pub fn set_ref(array: &Array, index: u32, value: &JsValue) {
    array.unchecked_ref::<Slots>().set(index, value);
}

thread_local! {
    static EVENT_OP: JsValue = JsValue::from_str("event");
    static EVENT_TYPES: [JsValue; 3] = [EventType::Added, EventType::Modified, EventType::Deleted].map(|t| JsValue::from_str(t.as_str()));
}

/// The header of an `event` frame that the engine parsed: what the core needs of it (ids, key,
/// version), everything else left in the object for the application. The id and namespace are
/// in the [`Recent`] strings the header was read with.
pub struct EventHeader {
    pub event_type: EventType,
    pub name: String,
    pub resource_version: Option<String>,
    pub object: JsValue,
}

/// The id and namespace of the previous event frame, as JavaScript and Rust strings: the next
/// frame almost always has the same, and comparing two JavaScript strings costs less than
/// copying one into wasm memory (an allocation, an encoding and a free).
#[derive(Default)]
pub struct Recent {
    id: Option<(JsValue, String)>,
    namespace: Option<(JsValue, String)>,
}

impl Recent {
    /// The id read last.
    pub fn id(&self) -> &str {
        self.id.as_ref().map_or("", |(_, id)| id)
    }

    /// The namespace read last.
    pub fn namespace(&self) -> &str {
        self.namespace.as_ref().map_or("", |(_, namespace)| namespace)
    }
}

/// `value` as a string, through `recent` when it is the same string as last time; `false` when
/// it is no string.
fn read_string(recent: &mut Option<(JsValue, String)>, value: JsValue) -> bool {
    if recent.as_ref().is_some_and(|(last, _)| *last == value) {
        return true;
    }
    let Some(text) = value.as_string() else { return false };
    *recent = Some((value, text));
    true
}

/// Reads `frame` as an `event` frame of the usual shape (`op` "event", a string `id`, a known
/// `type`, an object with a string `metadata.name`); `None` for anything else, which then takes
/// the text path and its decoder's exact checks and error messages (so a frame is never read
/// differently here: a nameless object or a malformed frame goes there too). The fields read
/// are exactly those `ServerMessage::decode` and `object_key` read.
pub fn event_header(frame: &JsValue, recent: &mut Recent) -> Option<EventHeader> {
    if !frame.is_object() {
        return None;
    }
    let frame: &Parsed = frame.unchecked_ref();
    if !EVENT_OP.with(|op| frame.op() == *op) {
        return None;
    }
    if !read_string(&mut recent.id, frame.id()) {
        return None;
    }
    let event_type = frame.event_type();
    let event_type = EVENT_TYPES.with(|types| types.iter().position(|t| *t == event_type))?;
    let event_type = [EventType::Added, EventType::Modified, EventType::Deleted][event_type];
    let object = frame.object();
    if !object.is_object() {
        return None;
    }
    let metadata = object.unchecked_ref::<Parsed>().metadata();
    if !metadata.is_object() {
        return None;
    }
    let metadata: &Parsed = metadata.unchecked_ref();
    let name = metadata.name().as_string()?;
    let namespace = metadata.namespace();
    if !read_string(&mut recent.namespace, namespace) {
        // Absent or not a string: the empty namespace, as `object_key` reads it.
        recent.namespace = None;
    }
    let resource_version = metadata.resource_version().as_string();
    Some(EventHeader { event_type, name, resource_version, object })
}

thread_local! {
    static TYPE_KEY: JsValue = JsValue::from_str("type");
    static OBJECT_KEY: JsValue = JsValue::from_str("object");
}

/// `{ type, object }` for `onEvent`, its strings made once.
pub fn event_object(event_type: EventType, object: &JsValue) -> JsValue {
    let index = match event_type {
        EventType::Added => 0,
        EventType::Modified => 1,
        EventType::Deleted => 2,
    };
    let event = Object::new();
    // Setting a property of a fresh plain object cannot fail.
    let _ = EVENT_TYPES.with(|types| TYPE_KEY.with(|key| Reflect::set(&event, key, &types[index])));
    let _ = OBJECT_KEY.with(|key| Reflect::set(&event, key, object));
    event.into()
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
