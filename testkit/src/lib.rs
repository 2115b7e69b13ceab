//! What the test harnesses share (kube-sim's tests, the end-to-end tests, the browser fixture):
//! deadline waits ([`wait`]), plain HTTP ([`http`]), the kubectl runner ([`kubectl`]), the native
//! client on the client core ([`client`]), the killable proxy ([`ProxyProcess`], feature
//! `proxy`), helpers to talk to kube-sim directly ([`sim`]) and WebSockets the test can drop
//! abruptly ([`ws`]).
//!
//! Every wait here is on an event with a deadline; the one poll ([`wait::poll`]) is for state
//! that nothing pushes, and says what it last saw.

pub mod client;
pub mod http;
pub mod kubectl;
#[cfg(feature = "proxy")]
mod proxy;
pub mod sim;
pub mod wait;
pub mod ws;

#[cfg(feature = "proxy")]
pub use proxy::{KubeconfigFile, ProxyProcess, announced_addr, kubeconfig, proxy_binary, start_binary};
pub use sim::{hook, list, same_objects, sim_client};
