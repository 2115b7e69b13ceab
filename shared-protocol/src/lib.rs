//! The kubemux wire protocol and the Kubernetes channel framing.
//!
//! This crate is the `kube-core` of kubemux: types and codecs only. It knows nothing about
//! sockets, clocks or runtimes, so it compiles unchanged for native targets and for wasm32.
//!
//! - [`channel`]: the Kubernetes remote-command and port-forward channel protocols
//!   (`v5.channel.k8s.io`, `v4.channel.k8s.io`, the base64 variants), shared by the simulator,
//!   the proxy's terminal bridge and the browser terminal.

pub mod channel;
