//! `kubemux.v1+deflate` in the browser (`docs/PROTOCOL.md` §1.1): the binary messages of a
//! connection fed to the engine's own `DecompressionStream("deflate-raw")`, its text split at
//! each U+001E into frames, handed on in order.
//!
//! The browser decompresses natively, off the package's code: nothing of zlib is compiled into
//! the package. Streams are asynchronous, so the frames of a message arrive a few microtasks
//! after it; each new stream (a message whose first byte is `1`) is read only once the previous
//! one has given all it holds, so frames stay in the order the proxy sent them. A stream that
//! cannot be read (corrupt data, a header byte it does not know) reports it once, with an
//! `error` event, and the shell treats the connection as dropped. Frames are dispatched as
//! events so that the shell listens to them as it listens to the socket, with gloo's
//! `EventListener`: a closure type of their own would cost the package 1 KiB of glue.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
export class Inflater extends EventTarget {
  constructor() { super(); this.w = null; this.tail = Promise.resolve(); this.stopped = false; }
  push(data) {
    if (this.stopped) return;
    const bytes = new Uint8Array(data);
    if (bytes[0] === 1) {
      if (this.w) this.w.close().catch(() => {});
      const stream = new DecompressionStream("deflate-raw");
      this.w = stream.writable.getWriter();
      const reader = stream.readable.pipeThrough(new TextDecoderStream()).getReader();
      this.tail = this.tail.then(() => this.read(reader));
    } else if (bytes[0] !== 0 || !this.w) {
      return this.broken("a message of header " + bytes[0]);
    }
    this.w.write(bytes.subarray(1)).catch(() => {});
  }
  async read(reader) {
    let text = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) return;
        text += value;
        let start = 0, at;
        while ((at = text.indexOf("\x1e", start)) !== -1) {
          this.dispatchEvent(new MessageEvent("message", { data: text.slice(start, at) }));
          if (this.stopped) return;
          start = at + 1;
        }
        text = text.slice(start);
      }
    } catch (error) {
      this.broken(error);
    }
  }
  broken(why) {
    if (this.stopped) return;
    this.stop();
    console.error("kubemux: the compressed stream broke, reconnecting:", why);
    this.dispatchEvent(new Event("error"));
  }
  stop() {
    this.stopped = true;
    if (this.w) this.w.abort().catch(() => {});
  }
}
export function canInflate() {
  return typeof DecompressionStream == "function" && typeof TextDecoderStream == "function";
}
"#)]
extern "C" {
    /// One connection's decompression: an `EventTarget` that dispatches each frame as a
    /// `message` event whose `data` is its text, as the socket does for a text frame, and an
    /// `error` event once if the stream breaks.
    #[wasm_bindgen(extends = web_sys::EventTarget)]
    #[derive(Clone)]
    pub type Inflater;

    #[wasm_bindgen(constructor)]
    pub fn new() -> Inflater;

    /// A binary message (an `ArrayBuffer`).
    #[wasm_bindgen(method)]
    pub fn push(this: &Inflater, data: &JsValue);

    /// Stops dispatching: the connection is gone.
    #[wasm_bindgen(method)]
    pub fn stop(this: &Inflater);

    /// Whether this engine can read `kubemux.v1+deflate`.
    #[wasm_bindgen(js_name = canInflate)]
    pub fn can_inflate() -> bool;
}
