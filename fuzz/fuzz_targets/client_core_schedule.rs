//! `ClientCore` under random schedules against the model server of its property test
//! (`client::model`, feature `testing`): watches and unwatches, changes on the server, partial
//! delivery, disconnects, proxy restarts without history, 410s, slow-consumer resets and time
//! passing; watches with the default projection and with deltas, changes only the projection
//! drops, and patches against a base the client does not hold (which it must `resync`).
//! Invariant 2 of DESIGN.md: once everything is delivered, every live subscription is synced and
//! its cache equals the server's objects (as its projection keeps them).

#![no_main]

use arbitrary::Arbitrary;
use kubemux_protocol::client::model::Harness;
use kubemux_protocol::client::{SubscriptionState, WatchOptions};
use kubemux_protocol::frames::{ProjectionMode, ServerMessage};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Step {
    /// A new subscription, with an id never used before on this client.
    Watch {
        projection: bool,
        deltas: bool,
    },
    /// Ends the `n`-th live subscription.
    Unwatch(u8),
    Change {
        key: u8,
        delete: bool,
        managed_only: bool,
    },
    /// The server's next patch of `obj-{key}` to the `n`-th live subscription names a base the
    /// client does not hold.
    ForgetBase {
        n: u8,
        key: u8,
    },
    Deliver(u8),
    Disconnect,
    ProxyRestart,
    /// The server restarts the `n`-th live subscription from a snapshot; with `drop_queued`, it
    /// drops every queued frame and restarts them all, as for a slow consumer.
    Reset {
        n: u8,
        drop_queued: bool,
    },
    Advance(u16),
}

#[derive(Debug, Arbitrary)]
struct Input {
    seed: u64,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(input.seed);
    let mut live: Vec<String> = Vec::new();
    let mut next_id = 0;
    for step in input.steps.into_iter().take(200) {
        match step {
            Step::Watch { projection, deltas } => {
                let id = format!("s{next_id}");
                next_id += 1;
                let options = WatchOptions { projection: projection.then_some(ProjectionMode::Default), deltas };
                let out = h.core.watch_with(&id, "c", "/api/v1/pods", None, options).expect("a fresh id is accepted");
                h.perform(out);
                live.push(id);
            }
            Step::Unwatch(n) if !live.is_empty() => {
                let id = live.remove(usize::from(n) % live.len());
                let out = h.core.unwatch(&id).expect("the client is not closed");
                h.perform(out);
            }
            Step::Unwatch(_) => {}
            Step::Change { key, delete, managed_only } => h.server.change(key % 12, delete, managed_only),
            Step::ForgetBase { n, key } if !live.is_empty() => h.server.forget_base(&live[usize::from(n) % live.len()], key % 12),
            Step::ForgetBase { .. } => {}
            Step::Deliver(n) => h.deliver(usize::from(n % 8)),
            Step::Disconnect => h.drop_connection(),
            Step::ProxyRestart => {
                h.server.floor = h.server.rv;
                h.server.history.clear();
                h.drop_connection();
            }
            Step::Reset { n, drop_queued } if h.server.connected && !live.is_empty() => {
                // Dropping queued frames costs every subscription on the connection its frames,
                // so the server resets them all (as the proxy's outbox overflow does).
                let ids: Vec<String> = if drop_queued {
                    h.server.in_flight.clear();
                    live.clone()
                } else {
                    vec![live[usize::from(n) % live.len()].clone()]
                };
                for id in ids {
                    if !h.server.active.contains(&id) {
                        continue;
                    }
                    h.server.send(ServerMessage::Reset { id: id.clone() });
                    h.server.snapshot(&id);
                }
            }
            Step::Reset { .. } => {}
            Step::Advance(ms) => {
                h.now += u64::from(ms) * 4;
                let out = h.core.on_tick(h.now);
                h.perform(out);
            }
        }
    }
    h.settle();
    for id in &live {
        assert_eq!(h.core.subscription_state(id), Some(SubscriptionState::Synced), "{id}");
        assert_eq!(h.client_view(id), h.server_view(id, h.server.rv), "{id}: the cache equals the server's objects");
    }
});
