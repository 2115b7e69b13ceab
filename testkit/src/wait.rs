//! Waiting with a deadline. A test waits on the event it expects (a future: a socket's next
//! message, a child's next line, a `watch` channel's next value) and fails, saying what it
//! waited for, when the deadline passes first. Where nothing pushes (an HTTP endpoint such as
//! `/metrics`, the host's process table), [`poll`] asks again at a fixed interval, and its
//! failure names what it waited for and the last value it saw.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// How long any one expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often [`poll`] asks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Awaits `future`, failing the test after [`DEADLINE`] with "no {what}".
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(DEADLINE, what, future).await
}

/// Awaits `future`, failing the test after `deadline` with "no {what}".
pub async fn within_for<T>(deadline: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, future).await {
        Ok(value) => value,
        Err(_) => panic!("no {what} within {deadline:?}"),
    }
}

/// Waits until the value on `receiver` satisfies `wanted` (checking the current value first,
/// then each new one as it is sent), failing after `deadline` with the last value seen.
pub async fn changed_until<T: Clone + Debug>(receiver: &mut watch::Receiver<T>, deadline: Duration, what: &str, mut wanted: impl FnMut(&T) -> bool) -> T {
    let outcome = tokio::time::timeout(deadline, receiver.wait_for(|value| wanted(value))).await.map(|seen| seen.map(|value| value.clone()));
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(_)) => panic!("{what}: the sender went away; last value {:?}", *receiver.borrow()),
        Err(_) => panic!("{what}: not within {deadline:?}; last value {:?}", *receiver.borrow()),
    }
}

/// Asks `probe` every [`POLL_INTERVAL`] until it answers `Ok`, failing after `deadline` with
/// `what` and the last `Err` (a description of what it saw). Only for state that nothing
/// pushes: an HTTP endpoint with no stream, the process table. Everything else waits on its
/// event with [`within`].
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    try_poll(what, deadline, probe).await.unwrap_or_else(|failure| panic!("{failure}"))
}

/// [`poll`] for code that reports instead of panicking (the browser fixture): the failure as
/// an `Err` naming what it waited for and what it last saw.
pub async fn try_poll<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    let mut ticks = tokio::time::interval(POLL_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match probe().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= end => return Err(format!("{what}: not within {deadline:?}; last seen: {last}")),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn poll_answers_once_the_probe_does() {
        let mut asked = 0;
        let value = poll("the third answer", DEADLINE, || {
            asked += 1;
            let now = asked;
            async move { if now >= 3 { Ok(now) } else { Err(format!("answer {now}")) } }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "the counter: not within 1s; last seen: still 0")]
    async fn poll_fails_with_what_it_last_saw() {
        poll::<(), _, _>("the counter", Duration::from_secs(1), || async { Err("still 0".to_owned()) }).await;
    }

    #[tokio::test(start_paused = true)]
    async fn changed_until_sees_a_later_value() {
        let (tx, mut rx) = watch::channel(1u64);
        tokio::spawn(async move {
            for rv in 2..=5 {
                tx.send(rv).unwrap();
            }
        });
        assert_eq!(changed_until(&mut rx, DEADLINE, "revision 5", |rv| *rv >= 5).await, 5);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "revision 9: not within 1s; last value 1")]
    async fn changed_until_fails_with_the_last_value() {
        let (_tx, mut rx) = watch::channel(1u64);
        changed_until(&mut rx, Duration::from_secs(1), "revision 9", |rv| *rv >= 9).await;
    }
}
