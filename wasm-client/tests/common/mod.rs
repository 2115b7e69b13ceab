//! Helpers for the browser tests: the fixture's control API (see
//! `tests/src/bin/kubemux-fixture.rs`), callbacks that record what the client delivered, and
//! waiting for a condition with a deadline.

#![allow(dead_code, missing_docs)]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The fixture's base URL, given by `cargo xtask test` when it builds these tests.
pub fn fixture() -> &'static str {
    match option_env!("KUBEMUX_FIXTURE") {
        Some(url) => url,
        None => panic!("KUBEMUX_FIXTURE was not set when these tests were built: run them with `cargo xtask test`"),
    }
}

#[wasm_bindgen(inline_js = "
export async function fetch_json(url, method) {
    const response = await fetch(url, { method });
    if (!response.ok) throw new Error(method + ' ' + url + ': HTTP ' + response.status + ' ' + await response.text());
    const type = response.headers.get('content-type') || '';
    return type.includes('json') ? response.json() : response.text();
}
export function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
")]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn fetch_json(url: &str, method: &str) -> Result<JsValue, JsValue>;
    fn sleep(ms: u32) -> js_sys::Promise;
}

/// `GET` or `POST` a fixture path; the JSON answer as a JS value.
pub async fn call(method: &str, path: &str) -> JsValue {
    let url = format!("{}{path}", fixture());
    match fetch_json(&url, method).await {
        Ok(value) => value,
        Err(error) => panic!("{method} {url}: {error:?}"),
    }
}

/// A field of a plain JS object.
pub fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

/// A string field.
pub fn get_str(value: &JsValue, key: &str) -> String {
    get(value, key).as_string().unwrap_or_else(|| panic!("{key} is not a string in {value:?}"))
}

/// The fixture's `/info`.
pub async fn info() -> JsValue {
    call("GET", "/info").await
}

/// Builds `{ key: value, ... }`.
pub fn object(entries: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in entries {
        Reflect::set(&object, &JsValue::from_str(key), value).unwrap();
    }
    object.into()
}

/// Everything one set of callbacks received, in order.
#[derive(Default)]
pub struct Log {
    pub calls: Vec<(String, JsValue)>,
}

impl Log {
    pub fn count(&self, name: &str) -> usize {
        self.calls.iter().filter(|(n, _)| n == name).count()
    }

    pub fn args(&self, name: &str) -> Vec<JsValue> {
        self.calls.iter().filter(|(n, _)| n == name).map(|(_, a)| a.clone()).collect()
    }

    /// The connection states seen by `onState`, by name.
    pub fn states(&self) -> Vec<String> {
        self.args("onState").iter().map(|s| get(s, "state").as_string().unwrap_or_else(|| s.as_string().unwrap_or_default())).collect()
    }
}

/// Callbacks named `names` that record into one log; as a JS object to pass as options or
/// handlers (merged with `extra`).
pub fn recorder(names: &[&str], extra: &[(&str, JsValue)]) -> (Rc<RefCell<Log>>, JsValue) {
    let log = Rc::new(RefCell::new(Log::default()));
    let object = Object::new();
    for name in names {
        let log = log.clone();
        let owned = (*name).to_owned();
        let callback = Closure::<dyn FnMut(JsValue)>::new(move |arg: JsValue| log.borrow_mut().calls.push((owned.clone(), arg)));
        Reflect::set(&object, &JsValue::from_str(name), &callback.into_js_value()).unwrap();
    }
    for (key, value) in extra {
        Reflect::set(&object, &JsValue::from_str(key), value).unwrap();
    }
    (log, object.into())
}

/// Waits until `condition` holds, checking after every turn of the event loop (every 20 ms at
/// most); panics with `what` after `seconds`.
pub async fn wait_for(seconds: f64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = js_sys::Date::now() + seconds * 1000.0;
    while !condition() {
        if js_sys::Date::now() > deadline {
            panic!("timed out after {seconds} s waiting for {what}");
        }
        JsFuture::from(sleep(20)).await.unwrap();
    }
}

/// Like [`wait_for`], but says whether `condition` came to hold instead of panicking.
pub async fn within(seconds: f64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = js_sys::Date::now() + seconds * 1000.0;
    while !condition() {
        if js_sys::Date::now() > deadline {
            return false;
        }
        JsFuture::from(sleep(20)).await.unwrap();
    }
    true
}

/// The message of a JS error (as thrown by the client).
pub fn message(error: JsError) -> String {
    let value: JsValue = error.into();
    js_sys::Error::from(value).message().into()
}

/// `(name, resourceVersion)` of each object in a JS array, in order.
pub fn names_and_versions(items: &JsValue) -> Vec<(String, String)> {
    js_sys::Array::from(items)
        .iter()
        .map(|o| {
            let meta = get(&o, "metadata");
            (get_str(&meta, "name"), get_str(&meta, "resourceVersion"))
        })
        .collect()
}
