//! The bearer token as the WebSocket subprotocol Kubernetes reads it
//! (`base64url.bearer.authorization.k8s.io.<token, base64url without padding>`).
//!
//! Encoded by the engine's `btoa` (there in windows and workers) rather than the `base64` crate,
//! whose encoder and tables cost the package 1.2 KiB gzipped for a string encoded once a
//! connection.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
export function bearerProtocol(token) {
  let binary = "";
  for (const byte of new TextEncoder().encode(token)) binary += String.fromCharCode(byte);
  const encoded = btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  return "base64url.bearer.authorization.k8s.io." + encoded;
}
"#)]
extern "C" {
    /// The subprotocol that carries `token`.
    #[wasm_bindgen(js_name = bearerProtocol)]
    pub fn bearer_protocol(token: &str) -> String;
}
