//! Reconnect delays: exponential backoff with full jitter, from a seeded generator so that tests
//! are deterministic and the core needs no randomness of its own.

/// Backoff settings (`docs/PROTOCOL.md` §5: 0.5 s doubling to 30 s, reset once a connection
/// has resynced every subscription, or has stayed up 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The first delay's ceiling, in milliseconds.
    pub base_ms: u64,
    /// The largest ceiling, in milliseconds.
    pub cap_ms: u64,
    /// A connection that stayed up this long resets the backoff.
    pub reset_after_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { base_ms: 500, cap_ms: 30_000, reset_after_ms: 60_000 }
    }
}

/// SplitMix64: a tiny, well-known generator. Hand-written (a dozen lines) so the protocol crate
/// stays free of `rand` and its wasm `getrandom` plumbing; the caller supplies the seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..=max`.
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX { self.next_u64() } else { self.next_u64() % (max + 1) }
    }
}

/// The backoff state: how many attempts in a row have failed.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Backoff { config, attempt: 0, rng: SplitMix64::new(seed) }
    }

    /// The ceiling of the next delay: base × 2^attempt, capped.
    pub fn ceiling_ms(&self) -> u64 {
        self.config.base_ms.saturating_mul(1u64 << self.attempt.min(32)).min(self.config.cap_ms)
    }

    /// The next delay (uniform in `0..=ceiling`, "full jitter"), and one more attempt counted.
    pub fn next_delay_ms(&mut self) -> u64 {
        let delay = self.rng.up_to(self.ceiling_ms());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// A short random delay for "reconnect at once, with a little jitter" (server going away).
    pub fn small_jitter_ms(&mut self) -> u64 {
        self.rng.up_to(self.config.base_ms.min(1000))
    }

    /// A connection did what a connection is for (every subscription resynced on it): the next
    /// failure starts again from the base. Escalation is for attempts that fail.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Called when a connection closes after being up for `up_ms`: a long-lived connection
    /// resets the backoff.
    pub fn connection_ended(&mut self, up_ms: u64) {
        if up_ms >= self.config.reset_after_ms {
            self.attempt = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_the_cap_and_reset() {
        let mut b = Backoff::new(BackoffConfig::default(), 7);
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            ceilings.push(b.ceiling_ms());
            let d = b.next_delay_ms();
            assert!(d <= *ceilings.last().unwrap());
        }
        assert_eq!(ceilings, vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.connection_ended(59_999);
        assert_eq!(b.ceiling_ms(), 30000);
        b.connection_ended(60_000);
        assert_eq!(b.ceiling_ms(), 500);
    }

    #[test]
    fn jitter_is_spread_and_seeded() {
        let delays = |seed| {
            let mut b = Backoff::new(BackoffConfig { base_ms: 1000, cap_ms: 1000, reset_after_ms: 1 }, seed);
            (0..200).map(|_| b.next_delay_ms()).collect::<Vec<_>>()
        };
        assert_eq!(delays(1), delays(1));
        assert_ne!(delays(1), delays(2));
        let d = delays(3);
        assert!(d.iter().any(|x| *x < 250) && d.iter().any(|x| *x > 750));
    }
}
