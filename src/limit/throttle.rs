//! One session's view of the limits: the buckets its transfers and commands
//! pass (session, then user, then tenant), re-resolved when a reload
//! changes them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::bucket::{ByteBucket, EventBucket};
use super::registry::{ByteBuckets, Limits, event_bucket};
use crate::config::{DirectionRates, TenantConfig};
use crate::obs::metrics::{LimitLabels, Metrics};

/// The largest piece a limited transfer moves at once, so sessions sharing
/// a bucket take turns in small steps.
const MAX_PIECE: u64 = 64 * 1024;
/// A piece takes at most about this long at a bucket's rate, so a slow
/// limit still moves bytes often enough for clients' idle timeouts.
const PIECE_TIME_DIVISOR: u64 = 8;
const MIN_PIECE: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Download,
    Upload,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }

    fn of(self, buckets: &ByteBuckets) -> Option<Arc<ByteBucket>> {
        match self {
            Direction::Download => buckets.download.clone(),
            Direction::Upload => buckets.upload.clone(),
        }
    }
}

/// What a command may do after passing the command limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandVerdict {
    Proceed,
    /// The session has been held back by its own command rate for longer
    /// than the tenant's `command_flood_time`: close it (421).
    Flood,
}

/// The limits of one logged-in session. Shared (in an `Arc`) with the
/// session's transfer tasks.
pub struct SessionLimiter {
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    tenant: String,
    user: String,
    login_rates: DirectionRates,
    state: Mutex<Resolved>,
    throttled_since: Mutex<Option<Instant>>,
}

/// The buckets of one generation.
#[derive(Clone)]
struct Resolved {
    generation: u64,
    tenant: Option<Arc<TenantConfig>>,
    tenant_bytes: ByteBuckets,
    tenant_commands: Option<Arc<EventBucket>>,
    user_bytes: ByteBuckets,
    session_bytes: ByteBuckets,
    session_commands: Option<Arc<EventBucket>>,
}

impl SessionLimiter {
    /// `login_rates`: the user's own rates as known at login (used when the
    /// config does not list the user).
    pub fn new(
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
        tenant: &str,
        user: &str,
        login_rates: DirectionRates,
    ) -> Arc<SessionLimiter> {
        let limiter = SessionLimiter {
            limits,
            metrics,
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            login_rates,
            state: Mutex::new(Resolved {
                generation: u64::MAX,
                tenant: None,
                tenant_bytes: ByteBuckets::default(),
                tenant_commands: None,
                user_bytes: ByteBuckets::default(),
                session_bytes: ByteBuckets::default(),
                session_commands: None,
            }),
            throttled_since: Mutex::new(None),
        };
        limiter.resolve();
        Arc::new(limiter)
    }

    /// The buckets of the current generation, rebuilding the session's own
    /// only where their settings changed.
    fn resolve(&self) -> Resolved {
        let generation = self.limits.generation();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation == generation {
            return state.clone();
        }
        let set = self.limits.current();
        let Some(tenant) = set.tenant(&self.tenant) else {
            *state = Resolved {
                generation: set.generation,
                tenant: None,
                tenant_bytes: ByteBuckets::default(),
                tenant_commands: None,
                user_bytes: ByteBuckets::default(),
                session_bytes: ByteBuckets::default(),
                session_commands: None,
            };
            return state.clone();
        };
        let user_bytes = set
            .user(&self.user, &tenant, self.login_rates)
            .map(|user| user.bytes.clone())
            .unwrap_or_default();
        let config = tenant.config.clone();
        let session_bytes =
            ByteBuckets::build(config.session_rates, &config, Some(&state.session_bytes));
        let session_commands =
            event_bucket(config.session_commands, state.session_commands.as_ref());
        *state = Resolved {
            generation: set.generation,
            tenant: Some(config),
            tenant_bytes: tenant.bytes.clone(),
            tenant_commands: tenant.commands.clone(),
            user_bytes,
            session_bytes,
            session_commands,
        };
        state.clone()
    }

    fn delay_counter(&self, limit: &'static str) -> Counter<f64> {
        self.metrics
            .limit_delay_seconds
            .get_or_create(&LimitLabels {
                tenant: self.tenant.clone(),
                limit,
            })
            .clone()
    }

    /// The throttle one transfer in `direction` passes its bytes through.
    pub fn transfer(self: &Arc<Self>, direction: Direction) -> TransferThrottle {
        let mut throttle = TransferThrottle {
            session: self.clone(),
            direction,
            generation: u64::MAX,
            stages: Vec::new(),
            piece: None,
            delay: self.delay_counter(direction.label()),
        };
        throttle.refresh();
        throttle
    }

    /// Passes a command of `cost` through the session's and the tenant's
    /// command buckets, waiting as they require.
    pub async fn command(&self, cost: u32) -> CommandVerdict {
        let resolved = self.resolve();
        let mut waited = Duration::ZERO;
        let mut verdict = CommandVerdict::Proceed;
        if let Some(bucket) = &resolved.session_commands {
            let own = bucket.take(cost).await;
            waited += own;
            let mut since = self
                .throttled_since
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if own.is_zero() {
                *since = None;
            } else {
                let started = *since.get_or_insert_with(Instant::now);
                let flood_time = resolved
                    .tenant
                    .as_ref()
                    .map(|t| t.command_flood_time)
                    .unwrap_or(Duration::MAX);
                if started.elapsed() > flood_time {
                    verdict = CommandVerdict::Flood;
                }
            }
        }
        if let Some(bucket) = &resolved.tenant_commands {
            waited += bucket.take(cost).await;
        }
        if !waited.is_zero() {
            self.delay_counter("commands").inc_by(waited.as_secs_f64());
        }
        verdict
    }

    /// What LIST, NLST, MLSD and STAT with a path cost.
    pub fn listing_cost(&self) -> u32 {
        self.resolve().tenant.map(|t| t.listing_cost).unwrap_or(1)
    }
}

/// One bucket a transfer passes, with the bytes it has not yet counted.
struct Stage {
    bucket: Arc<ByteBucket>,
    carry: u64,
}

/// The buckets one transfer's bytes pass: the session's, the user's and the
/// tenant's, in that order.
pub struct TransferThrottle {
    session: Arc<SessionLimiter>,
    direction: Direction,
    generation: u64,
    stages: Vec<Stage>,
    piece: Option<usize>,
    delay: Counter<f64>,
}

impl TransferThrottle {
    fn refresh(&mut self) {
        if self.generation == self.session.limits.generation() {
            return;
        }
        let resolved = self.session.resolve();
        self.generation = resolved.generation;
        self.stages = [
            &resolved.session_bytes,
            &resolved.user_bytes,
            &resolved.tenant_bytes,
        ]
        .into_iter()
        .filter_map(|buckets| self.direction.of(buckets))
        .map(|bucket| Stage { bucket, carry: 0 })
        .collect();
        self.piece = self
            .stages
            .iter()
            .map(|stage| {
                let by_rate = (stage.bucket.rate() / PIECE_TIME_DIVISOR).max(MIN_PIECE);
                stage.bucket.max_charge().min(by_rate).min(MAX_PIECE)
            })
            .min()
            .map(|piece| piece.max(1) as usize);
    }

    /// The most bytes to move between two calls of [`TransferThrottle::pass`];
    /// `None` when no limit applies (a reload may change it).
    pub fn piece(&mut self) -> Option<usize> {
        self.refresh();
        self.piece
    }

    /// Waits until `bytes` may pass every bucket.
    pub async fn pass(&mut self, bytes: usize) {
        self.refresh();
        let mut waited = Duration::ZERO;
        for stage in &mut self.stages {
            waited += stage.bucket.charge(bytes as u64, &mut stage.carry).await;
        }
        if !waited.is_zero() {
            self.delay.inc_by(waited.as_secs_f64());
        }
    }
}
