//! The kubemux wire protocol and the Kubernetes channel framing.
//!
//! This crate is the `kube-core` of kubemux: types and codecs only. It knows nothing about
//! sockets, clocks or runtimes, so it compiles unchanged for native targets and for wasm32.
//!
//! - [`channel`]: the Kubernetes remote-command and port-forward channel protocols
//!   (`v5.channel.k8s.io`, `v4.channel.k8s.io`, the base64 variants), shared by the simulator,
//!   the proxy's terminal bridge and the browser terminal.
//! - [`frames`]: the `kubemux.v1` multiplexer frames of `docs/PROTOCOL.md` and their codec.
//! - [`delta`]: projections and merge-patch deltas, the sans-IO part of sending fewer bytes.
//! - [`client`]: the sans-IO client core (subscriptions, resume points, caches, reconnect and
//!   liveness) that the wasm client and native clients wrap.
//! - [`terminal`]: the sans-IO terminal core (attempts, shell fallback, held input, the close)
//!   that the browser's `Terminal` wraps, and the one teardown plan the proxy runs.

pub mod channel;
pub mod client;
pub mod delta;
pub mod frames;
pub mod terminal;
