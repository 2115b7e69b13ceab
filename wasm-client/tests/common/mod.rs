//! Helpers for the browser tests: the fixture's control API (see
//! `tests/src/bin/kubemux-fixture.rs`), callbacks that record what the client delivered, and
//! waiting for a condition with a deadline: a wait wakes when a recorded callback fires (the
//! event) or at its deadline, never on a timer of its own.

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
export function deadline_after(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
")]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn fetch_json(url: &str, method: &str) -> Result<JsValue, JsValue>;
    fn deadline_after(ms: u32) -> js_sys::Promise;
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

/// The fixture's `/info`, after `/reset`: every test starts from a running proxy, whatever an
/// earlier test (one that kills the proxy, one that failed half way) left behind.
pub async fn info() -> JsValue {
    call("POST", "/reset").await
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
        let callback = Closure::<dyn FnMut(JsValue)>::new(move |arg: JsValue| {
            log.borrow_mut().calls.push((owned.clone(), arg));
            recorded();
        });
        Reflect::set(&object, &JsValue::from_str(name), &callback.into_js_value()).unwrap();
    }
    for (key, value) in extra {
        Reflect::set(&object, &JsValue::from_str(key), value).unwrap();
    }
    (log, object.into())
}

thread_local! {
    /// The resolvers of every pending [`next_record`] promise.
    static WAITING: RefCell<Vec<js_sys::Function>> = const { RefCell::new(Vec::new()) };
}

/// Wakes every wait: a recorded callback fired.
fn recorded() {
    for resolve in WAITING.with(|waiting| waiting.take()) {
        let _ = resolve.call0(&JsValue::UNDEFINED);
    }
}

/// Resolves when the next callback is recorded, or after `ms`, whichever comes first.
async fn next_record_or(ms: f64) {
    let record = js_sys::Promise::new(&mut |resolve, _| WAITING.with(|waiting| waiting.borrow_mut().push(resolve)));
    let deadline = deadline_after(ms.max(0.0) as u32);
    JsFuture::from(js_sys::Promise::race(&js_sys::Array::of2(&record, &deadline))).await.unwrap();
}

/// Waits until `condition` holds, checking it again whenever a recorded callback fires (what
/// the conditions read); panics with `what` after `seconds`.
pub async fn wait_for(seconds: f64, what: &str, condition: impl FnMut() -> bool) {
    if !within(seconds, condition).await {
        panic!("timed out after {seconds} s waiting for {what}");
    }
}

/// Like [`wait_for`], but says whether `condition` came to hold instead of panicking. With a
/// condition that never holds it watches for `seconds`: an absence over a window.
pub async fn within(seconds: f64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = js_sys::Date::now() + seconds * 1000.0;
    loop {
        if condition() {
            return true;
        }
        let left = deadline - js_sys::Date::now();
        if left <= 0.0 {
            return false;
        }
        next_record_or(left).await;
    }
}

/// How long [`poll`] waits between probes when no callback fires meanwhile.
const POLL_MS: f64 = 200.0;

/// Asks `probe` until it answers `Ok`, again after each recorded callback or [`POLL_MS`]; panics
/// after `seconds` with `what` and the last `Err`. Only for what the fixture serves and nothing
/// pushes (`/sim/processes`, `/sim/pods`).
pub async fn poll<T, F: std::future::Future<Output = Result<T, String>>>(seconds: f64, what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = js_sys::Date::now() + seconds * 1000.0;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        let left = deadline - js_sys::Date::now();
        if left <= 0.0 {
            panic!("{what}: not within {seconds} s; last seen: {last}");
        }
        next_record_or(left.min(POLL_MS)).await;
    }
}

/// The message of a JS error (as thrown by the client).
pub fn message(error: impl Into<JsValue>) -> String {
    let value: JsValue = error.into();
    js_sys::Error::from(value).message().into()
}

/// Whether a thrown value is a `TypeError` (a wrong argument).
pub fn is_type_error(error: &JsValue) -> bool {
    error.is_instance_of::<js_sys::TypeError>()
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
