//! Token buckets (governor's GCRA) for bytes and for events, waited on with
//! tokio's timer and taken in turn.
//!
//! Byte buckets count in cells of a few bytes so that governor's per-cell
//! period (whole nanoseconds) stays at or above a microsecond: with one-byte
//! cells, 100 MiB/s would be a 9.54 ns period truncated to 9 ns, 6% too
//! fast. Callers carry the bytes that do not fill a cell to their next
//! charge, so the count stays exact.
//!
//! Waiters queue on a FIFO lock (tokio's `Mutex` is fair): sessions sharing a
//! bucket take turns, so each gets an equal share whatever its chunk sizes.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Mutex;

/// The shortest replenish period a byte cell may have.
const MIN_CELL_PERIOD_NS: u64 = 1_000;

/// Bytes per second, with a burst.
pub struct ByteBucket {
    limiter: DefaultDirectRateLimiter,
    rate: u64,
    burst: u64,
    cell_bytes: u64,
    burst_cells: u32,
    turn: Mutex<()>,
}

impl ByteBucket {
    /// `rate` bytes per second; `burst` bytes may pass at once after a pause.
    pub fn new(rate: u64, burst: u64) -> ByteBucket {
        let rate = rate.max(1);
        let cell_bytes = rate
            .saturating_mul(MIN_CELL_PERIOD_NS)
            .div_ceil(1_000_000_000)
            .max(1);
        let period_ns = (u128::from(cell_bytes) * 1_000_000_000 / u128::from(rate)).max(1);
        let period = Duration::from_nanos(u64::try_from(period_ns).unwrap_or(u64::MAX));
        // At least two cells, so that a charge of one cell plus a carry fits.
        let burst_cells = u32::try_from(burst / cell_bytes).unwrap_or(u32::MAX).max(2);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(NonZeroU32::new(burst_cells).unwrap_or(NonZeroU32::MIN));
        ByteBucket {
            limiter: RateLimiter::direct(quota),
            rate,
            burst,
            cell_bytes,
            burst_cells,
            turn: Mutex::new(()),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether this bucket was built from `rate` and `burst` (a reload keeps it then).
    pub fn has_settings(&self, rate: u64, burst: u64) -> bool {
        self.rate == rate.max(1) && self.burst == burst
    }

    /// The most bytes one charge may carry (governor refuses more cells
    /// than the burst at once).
    pub fn max_charge(&self) -> u64 {
        u64::from(self.burst_cells - 1) * self.cell_bytes
    }

    /// Charges `bytes` plus the caller's `carry` of bytes not yet counted;
    /// leaves the remainder in `carry`. Returns how long it waited. Keep
    /// `bytes` at or below [`ByteBucket::max_charge`] so that sessions take
    /// turns in small steps; more is charged in several.
    pub async fn charge(&self, bytes: u64, carry: &mut u64) -> Duration {
        let total = *carry + bytes;
        let mut cells = total / self.cell_bytes;
        *carry = total % self.cell_bytes;
        if cells == 0 {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let _turn = self.turn.lock().await;
        while cells > 0 {
            let step = cells.min(u64::from(self.burst_cells)) as u32;
            cells -= u64::from(step);
            if let Some(step) = NonZeroU32::new(step) {
                wait_for(&self.limiter, step).await;
            }
        }
        started.elapsed()
    }
}

/// Events per second (commands, connections), with a burst.
pub struct EventBucket {
    limiter: DefaultDirectRateLimiter,
    per_second: NonZeroU32,
    burst: NonZeroU32,
    turn: Mutex<()>,
}

impl EventBucket {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> EventBucket {
        EventBucket {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            per_second,
            burst,
            turn: Mutex::new(()),
        }
    }

    pub fn has_settings(&self, per_second: NonZeroU32, burst: NonZeroU32) -> bool {
        self.per_second == per_second && self.burst == burst
    }

    /// Takes `cost` events (at most the burst), waiting as needed. Returns
    /// how long it waited.
    pub async fn take(&self, cost: u32) -> Duration {
        let cells = NonZeroU32::new(cost.min(self.burst.get())).unwrap_or(NonZeroU32::MIN);
        if let Ok(Ok(())) = self.limiter.check_n(cells) {
            return Duration::ZERO;
        }
        let started = Instant::now();
        let _turn = self.turn.lock().await;
        wait_for(&self.limiter, cells).await;
        started.elapsed()
    }
}

/// Waits until `cells` (never more than the burst) pass `limiter`, sleeping
/// on tokio's timer.
async fn wait_for(limiter: &DefaultDirectRateLimiter, cells: NonZeroU32) {
    loop {
        match limiter.check_n(cells) {
            Ok(Ok(())) => return,
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                tokio::time::sleep(wait).await;
            }
            // More cells than the burst: callers never ask for that.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_keep_the_period_at_a_microsecond_or_more() {
        for rate in [1024, 10 << 20, 100 << 20, 1 << 30, 10 << 30] {
            let bucket = ByteBucket::new(rate, 2 << 20);
            let period_ns = bucket.cell_bytes as f64 * 1e9 / rate as f64;
            assert!(period_ns >= 999.0, "rate {rate}: period {period_ns} ns");
            // The truncated period makes the real rate at most 0.1% fast.
            let truncated = period_ns.floor();
            assert!((period_ns - truncated) / period_ns < 0.001, "rate {rate}");
        }
        assert_eq!(ByteBucket::new(1024, 64 << 10).cell_bytes, 1);
    }

    #[test]
    fn a_charge_never_exceeds_the_burst() {
        let bucket = ByteBucket::new(8 << 20, 4096);
        assert!(bucket.max_charge() <= 4096);
        assert!(bucket.max_charge() > 0);
    }

    #[tokio::test]
    async fn carried_bytes_are_counted_later_not_lost() {
        let bucket = ByteBucket::new(10 << 20, 1 << 20);
        assert!(bucket.cell_bytes > 1);
        let mut carry = 0;
        let mut charged_cells = 0u64;
        for _ in 0..1000 {
            let before = carry;
            bucket.charge(7, &mut carry).await;
            charged_cells += (before + 7 - carry) / bucket.cell_bytes;
        }
        assert_eq!(charged_cells * bucket.cell_bytes + carry, 7000);
    }

    #[tokio::test]
    async fn a_byte_bucket_holds_its_rate_after_the_burst() {
        // 64 KiB/s, 16 KiB burst: 48 KiB after the burst take at least 0.7 s.
        let bucket = ByteBucket::new(64 << 10, 16 << 10);
        let started = Instant::now();
        let mut carry = 0;
        for _ in 0..64 {
            bucket.charge(1024, &mut carry).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn an_event_bucket_delays_events_beyond_the_burst() {
        let bucket = EventBucket::new(NonZeroU32::new(20).unwrap(), NonZeroU32::new(5).unwrap());
        let mut waited = Duration::ZERO;
        let started = Instant::now();
        for _ in 0..15 {
            waited += bucket.take(1).await;
        }
        // 10 events past the burst at 20/s: at least half a second.
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{:?}",
            started.elapsed()
        );
        assert!(waited > Duration::ZERO);
    }
}
