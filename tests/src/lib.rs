//! The end-to-end harness, now a view of `kubemux-testkit`: the native client ([`client`]), the
//! killable proxy ([`ProxyProcess`]) and the simulator helpers keep their paths here, so every
//! test that names `kubemux_e2e::…` still does.

pub use kubemux_testkit::client;
pub use kubemux_testkit::{KubeconfigFile, ProxyProcess, hook, kubeconfig, list, proxy_binary, same_objects, sim_client, start_binary};

/// `GET url`, the whole response as text: status line, headers, blank line, body (chunked
/// bodies already joined). Through hyper's client ([`kubemux_testkit::http::get`], which also
/// gives the status and headers typed).
pub async fn http_get(url: &str) -> String {
    kubemux_testkit::http::get(url).await.as_wire_text()
}

pub mod scale_out;
