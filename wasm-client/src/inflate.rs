//! `kubemux.v1+deflate` in the browser (`docs/PROTOCOL.md` §1.1): the binary messages of a
//! connection fed to the engine's own `DecompressionStream("deflate-raw")`, its text split at
//! each U+001E into frames, handed on in order.
//!
//! The browser decompresses natively, off the package's code: nothing of zlib is compiled into
//! the package. Streams are asynchronous, so the frames of a message arrive a few microtasks
//! after it; each new stream (a message whose first byte is `1`) is read only once the previous
//! one has given all it holds, so frames stay in the order the proxy sent them. A stream that
//! cannot be read (corrupt data, a header byte it does not know) reports it once through `fail`,
//! and the shell treats the connection as dropped.

use js_sys::Function;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
export class Inflater {
  constructor(deliver, fail) {
    this.deliver = deliver;
    this.fail = fail;
    this.writer = null;
    this.tail = Promise.resolve();
    this.stopped = false;
  }
  push(data) {
    if (this.stopped) return;
    const bytes = new Uint8Array(data);
    if (bytes[0] === 1) {
      if (this.writer !== null) this.writer.close().catch(() => {});
      const stream = new DecompressionStream("deflate-raw");
      this.writer = stream.writable.getWriter();
      const reader = stream.readable.pipeThrough(new TextDecoderStream()).getReader();
      this.tail = this.tail.then(() => this.read(reader));
    } else if (bytes[0] !== 0 || this.writer === null) {
      this.broken(bytes.length === 0 ? "an empty message" : bytes[0] === 0 ? "a message that continues no stream" : "an unknown message header " + bytes[0]);
      return;
    }
    this.writer.write(bytes.subarray(1)).catch(() => {});
  }
  async read(reader) {
    let text = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) return;
        text = text.length === 0 ? value : text + value;
        let start = 0;
        let at;
        while ((at = text.indexOf("\x1e", start)) !== -1) {
          this.deliver(text.slice(start, at));
          if (this.stopped) return;
          start = at + 1;
        }
        text = start === text.length ? "" : text.slice(start);
      }
    } catch (error) {
      this.broken(String(error));
    }
  }
  broken(why) {
    if (this.stopped) return;
    this.stop();
    console.error("kubemux: the compressed stream broke, reconnecting:", why);
    this.fail(why);
  }
  stop() {
    this.stopped = true;
    if (this.writer !== null) this.writer.abort().catch(() => {});
    this.writer = null;
  }
}
export function canInflate() {
  return typeof DecompressionStream === "function" && typeof TextDecoderStream === "function";
}
"#)]
extern "C" {
    /// One connection's decompression.
    pub type Inflater;

    #[wasm_bindgen(constructor)]
    pub fn new(deliver: &Function, fail: &Function) -> Inflater;

    /// A binary message (an `ArrayBuffer`).
    #[wasm_bindgen(method)]
    pub fn push(this: &Inflater, data: &JsValue);

    /// Stops delivering: the connection is gone.
    #[wasm_bindgen(method)]
    pub fn stop(this: &Inflater);

    /// Whether this engine can read `kubemux.v1+deflate`.
    #[wasm_bindgen(js_name = canInflate)]
    pub fn can_inflate() -> bool;
}
