//! The delivery engine: a fixed number of shard tasks, each the only owner of the lanes of
//! the endpoints that hash to it.
//!
//! Work reaches a shard three ways. The writer hands over each newly committed pending
//! delivery right after the commit (`Publisher`, a bounded queue; a full queue drops the
//! hand-off). Every `SCAN_INTERVAL` the shard scans the durable `due` table, round robin,
//! for its deliveries due within `HORIZON_MS` that it does not hold yet: that is how
//! start-up recovers, how dropped hand-offs are picked up and how far-off retries come
//! back. And a lane whose queue overflowed ("spilled") refills from its own endpoint's
//! delivery rows, in seq order, from where it spilled: so a spilled lane keeps message
//! order, and no endpoint's backlog — however large, however stuck — stands between
//! another endpoint and its work. Retries due within the horizon wait in the shard's timer
//! map; later ones wait only in the log, so a million pending retries cost disk, not
//! memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::attempt::{self, AttemptCtx, Finished};
use super::lane::{LANE_QUEUE_MAX, Lane, LaneSettings};
use crate::heartbeat::Heartbeat;
use crate::log::schema::DeliveryState;
use crate::log::tables::{self, Step};
use crate::log::{DueJob, LogError, Publisher};
use crate::telemetry;

/// Capacity of each shard's hand-off queue from the writer.
pub const SHARD_INTAKE_MAX: usize = 16_384;
/// How far ahead a shard holds retries in memory, ms.
pub const HORIZON_MS: u64 = 60_000;
/// How often a shard scans the `due` table.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Most `due` rows one scan reads (it resumes there next time).
pub const SCAN_ROWS_MAX: usize = 20_000;
/// Most retries a shard holds in its timer map.
pub const TIMERS_MAX: usize = 100_000;
/// Most delivery rows one refill of a spilled lane reads.
pub const REFILL_ROWS_MAX: usize = 4_096;
/// Most attempts in flight in one shard (all its lanes together).
pub const SHARD_IN_FLIGHT_MAX: usize = 4_096;
/// Most answered attempts of one shard whose records are queued but not yet durable; at
/// this many, the shard starts no attempt until some commit (back-pressure from the disk).
pub const SHARD_RECORDING_MAX: usize = 4_096;

/// Makes the writer's hand-off queues: the publisher for `Log::open`, the receivers for
/// `Engine::start`.
pub fn channels(shards: usize) -> (Publisher, Vec<mpsc::Receiver<DueJob>>) {
    let (senders, receivers) = (0..shards).map(|_| mpsc::channel(SHARD_INTAKE_MAX)).unzip();
    (Publisher::new(senders), receivers)
}

/// The running shards.
pub struct Engine {
    stop: watch::Sender<bool>,
    shards: Vec<JoinHandle<()>>,
    heartbeats: Vec<Arc<Heartbeat>>,
}

impl Engine {
    pub fn start(ctx: Arc<AttemptCtx>, intakes: Vec<mpsc::Receiver<DueJob>>) -> Engine {
        let (stop, stopped) = watch::channel(false);
        let count = intakes.len();
        let heartbeats: Vec<Arc<Heartbeat>> =
            (0..count).map(|_| Arc::new(Heartbeat::default())).collect();
        let shards = intakes
            .into_iter()
            .enumerate()
            .map(|(index, intake)| {
                heartbeats[index].beat();
                let mut seed = [0u8; 8];
                crate::ids::fill_random(&mut seed);
                let (answered, answers) = mpsc::channel(SHARD_IN_FLIGHT_MAX + SHARD_RECORDING_MAX);
                let shard = Shard {
                    index,
                    count,
                    ctx: Arc::clone(&ctx),
                    lanes: HashMap::new(),
                    known: HashSet::new(),
                    timers: BTreeSet::new(),
                    attempts: JoinSet::new(),
                    unanswered: 0,
                    answered,
                    scan_from: None,
                    rng: u64::from_le_bytes(seed) | 1,
                    spilled: false,
                    spilled_lanes: HashMap::new(),
                    heartbeat: Arc::clone(&heartbeats[index]),
                };
                tokio::spawn(shard.run(intake, answers, stopped.clone()))
            })
            .collect();
        Engine {
            stop,
            shards,
            heartbeats,
        }
    }

    /// Every shard's heartbeat (for the watchdog).
    pub fn heartbeats(&self) -> Vec<Arc<Heartbeat>> {
        self.heartbeats.clone()
    }

    /// Stops starting attempts, lets the ones in flight finish and record, and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for shard in self.shards {
            let _ = shard.await;
        }
    }
}

/// Everything that can wake a shard.
enum Event {
    Stop,
    /// The receiver answered (or nothing was sent): the endpoint's slot is free.
    Answered(Finished),
    /// An attempt task ended: its record is durable (or failed); the delivery it releases.
    Recorded(Option<(u64, u64)>),
    HandedOff(DueJob),
    Tick,
}

struct Shard {
    index: usize,
    count: usize,
    ctx: Arc<AttemptCtx>,
    lanes: HashMap<u64, Lane>,
    /// Every (endpoint, seq) this shard holds in a lane, a timer or in flight.
    known: HashSet<(u64, u64)>,
    /// Retries waiting in memory: (due ms, endpoint, seq).
    timers: BTreeSet<(u64, u64, u64)>,
    /// Every attempt task: first waiting for its receiver (`unanswered` of them), then for
    /// its record to be durable. Each ends with the (endpoint, seq) it then releases from
    /// `known`, if the shard held it for that: until the record is durable, a scan could
    /// find the delivery still due in the log and send it again.
    attempts: JoinSet<Option<(u64, u64)>>,
    /// Attempts started whose `Finished` has not arrived: the shard's in-flight count.
    unanswered: usize,
    /// Where attempt tasks report their answers (the shard holds the receiver).
    answered: mpsc::Sender<Finished>,
    /// The `due` row after which the next scan resumes; `None` starts from the earliest.
    scan_from: Option<DueJob>,
    /// xorshift64* state for retry jitter.
    rng: u64,
    /// A delivery due soon was left in the log because the timer map was full: scan soon.
    spilled: bool,
    /// Endpoints whose lane overflowed, with the seq their refill resumes at. Their
    /// hand-offs and scanned rows are left in the log too: the lane refills only from its
    /// delivery rows, in seq order, so a newer delivery never overtakes an older spilled
    /// one (which keeps `fifo` strict and the oldest first).
    spilled_lanes: HashMap<u64, u64>,
    /// Beaten on every turn of the loop, which wakes at least every `SCAN_INTERVAL`.
    heartbeat: Arc<Heartbeat>,
}

impl Shard {
    async fn run(
        mut self,
        mut intake: mpsc::Receiver<DueJob>,
        mut answers: mpsc::Receiver<Finished>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next_scan = tokio::time::Instant::now();
        loop {
            self.heartbeat.beat();
            let now_ms = self.ctx.clock.now_ms();
            self.start_ready(now_ms);
            let wake = self.wake_at(now_ms).min(next_scan);
            let event = tokio::select! {
                biased;
                _ = stop.changed() => Event::Stop,
                Some(finished) = answers.recv() => Event::Answered(finished),
                Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => match done {
                    Ok(released) => Event::Recorded(released),
                    Err(error) => panic!("an attempt task failed: {error}"),
                },
                job = intake.recv() => match job {
                    Some(job) => Event::HandedOff(job),
                    None => Event::Stop,
                },
                () = tokio::time::sleep_until(wake) => Event::Tick,
            };
            match event {
                Event::Stop => break,
                Event::Answered(finished) => {
                    let endpoint_key = finished.job.endpoint_key;
                    self.finished(finished);
                    self.refill_if_drained(endpoint_key);
                }
                Event::Recorded(released) => {
                    if let Some(key) = released {
                        self.known.remove(&key);
                    }
                }
                // Not `now_ms`: that was read before the wait, and a job committed during
                // the wait would look early, wait for a timer and be overtaken by the
                // next hand-off (breaking `fifo` order).
                Event::HandedOff(job) => self.hand_off(job, self.ctx.clock.now_ms()),
                Event::Tick => {
                    self.fire_timers(self.ctx.clock.now_ms());
                    let spilled: Vec<u64> = self.spilled_lanes.keys().copied().collect();
                    for endpoint_key in spilled {
                        self.refill_if_drained(endpoint_key);
                    }
                    if tokio::time::Instant::now() >= next_scan || self.spilled {
                        if let Err(error) = self.scan() {
                            tracing::error!(shard = self.index, %error, "Scan of due deliveries failed.");
                        }
                        next_scan = tokio::time::Instant::now() + SCAN_INTERVAL;
                        self.export_gauges();
                    }
                }
            }
        }
        // Attempts in flight finish and record (each is bounded by the attempt timeout).
        // Their answers are not awaited here: a task whose shard stopped listening still
        // records and ends.
        drop(answers);
        while self.attempts.join_next().await.is_some() {}
    }

    /// Refills a spilled lane once its queue has drained to half (not after every attempt:
    /// one read refills many slots).
    fn refill_if_drained(&mut self, endpoint_key: u64) {
        if !self.spilled_lanes.contains_key(&endpoint_key) {
            return;
        }
        let drained = self
            .lanes
            .get(&endpoint_key)
            .is_none_or(|lane| lane.queued() <= LANE_QUEUE_MAX / 2);
        if drained && let Err(error) = self.refill(endpoint_key) {
            tracing::error!(shard = self.index, %error, "Refill of a spilled lane failed.");
        }
    }

    /// Reads the endpoint's delivery rows from where its lane spilled, in seq order, and
    /// queues the pending ones that are due, until the lane is full again (still spilled,
    /// resuming there) or the rows run out (no longer spilled).
    fn refill(&mut self, endpoint_key: u64) -> Result<(), LogError> {
        let Some(&from_seq) = self.spilled_lanes.get(&endpoint_key) else {
            return Ok(());
        };
        let now_ms = self.ctx.clock.now_ms();
        let (rows, ended) = self.ctx.log.read(|rtxn, dbs| {
            tables::endpoint_deliveries_from(rtxn, dbs, endpoint_key, from_seq, REFILL_ROWS_MAX)
        })?;
        let mut resume = rows.last().map_or(from_seq, |(seq, _)| seq + 1);
        for (seq, delivery) in rows {
            let pending = delivery.state == DeliveryState::Pending;
            if !pending || self.known.contains(&(endpoint_key, seq)) {
                continue;
            }
            if delivery.next_due_ms > now_ms {
                continue; // A retry: the due scan brings it back when it is near.
            }
            let lane_full = self
                .lanes
                .get(&endpoint_key)
                .is_some_and(|lane| lane.queued() >= LANE_QUEUE_MAX);
            if lane_full {
                resume = seq;
                self.spilled_lanes.insert(endpoint_key, resume);
                return Ok(());
            }
            let job = DueJob {
                endpoint_key,
                seq,
                due_ms: delivery.next_due_ms,
            };
            self.enqueue(job);
        }
        if ended {
            self.spilled_lanes.remove(&endpoint_key);
        } else {
            self.spilled_lanes.insert(endpoint_key, resume);
        }
        Ok(())
    }

    /// Sets this shard's gauges (once per scan: they are samples, not counts).
    fn export_gauges(&self) {
        let now_ms = self.ctx.clock.now_ms();
        let shard = self.index.to_string();
        let throttled = self.lanes.values().filter(|l| l.paused(now_ms)).count();
        metrics::gauge!(telemetry::name::SHARD_LANES, "shard" => shard.clone())
            .set(self.lanes.len() as f64);
        metrics::gauge!(telemetry::name::SHARD_LANES_THROTTLED, "shard" => shard.clone())
            .set(throttled as f64);
        metrics::gauge!(telemetry::name::SHARD_RETRIES_IN_MEMORY, "shard" => shard)
            .set(self.timers.len() as f64);
    }

    /// The next time something could become ready, as a runtime instant.
    fn wake_at(&self, now_ms: u64) -> tokio::time::Instant {
        let lane_wake = self.lanes.values().filter_map(Lane::wake_at).min();
        let timer_wake = self.timers.first().map(|(due, _, _)| *due);
        let at_ms = lane_wake
            .into_iter()
            .chain(timer_wake)
            .min()
            .unwrap_or(u64::MAX);
        let delay = Duration::from_millis(at_ms.saturating_sub(now_ms).min(3_600_000));
        tokio::time::Instant::now() + delay
    }

    /// A delivery the writer just committed: taken unless its lane has older work still
    /// in the log (then the lane's refill brings both, in order).
    fn hand_off(&mut self, job: DueJob, now_ms: u64) {
        if !self.left_to_refill(&job) {
            self.accept(job, now_ms);
        }
    }

    /// Whether `job` is at or past where its spilled lane's refill resumes: the refill will
    /// bring it, in order. (An earlier one, such as a retry coming due, is taken at once.)
    fn left_to_refill(&self, job: &DueJob) -> bool {
        self.spilled_lanes
            .get(&job.endpoint_key)
            .is_some_and(|&resume| job.seq >= resume)
    }

    fn accept(&mut self, job: DueJob, now_ms: u64) {
        if !self.known.insert((job.endpoint_key, job.seq)) {
            return;
        }
        if job.due_ms > now_ms {
            if job.due_ms - now_ms <= HORIZON_MS && self.timers.len() < TIMERS_MAX {
                self.timers.insert((job.due_ms, job.endpoint_key, job.seq));
            } else {
                self.known.remove(&(job.endpoint_key, job.seq)); // A later scan brings it back.
                self.spilled |= job.due_ms - now_ms <= HORIZON_MS;
            }
            return;
        }
        self.known.remove(&(job.endpoint_key, job.seq));
        if !self.left_to_refill(&job) {
            self.enqueue(job);
        }
    }

    /// Queues a due job in its lane (creating the lane); a full lane spills: the job stays
    /// in the log and the lane refills from it.
    fn enqueue(&mut self, job: DueJob) {
        let settings = match self.lanes.get(&job.endpoint_key) {
            Some(lane) => lane.settings,
            None => self.read_settings(job.endpoint_key),
        };
        let lane = self
            .lanes
            .entry(job.endpoint_key)
            .or_insert_with(|| Lane::new(settings));
        if lane.push(job) {
            self.known.insert((job.endpoint_key, job.seq));
        } else {
            let resume = self
                .spilled_lanes
                .entry(job.endpoint_key)
                .or_insert(job.seq);
            *resume = (*resume).min(job.seq);
        }
    }

    fn read_settings(&self, endpoint_key: u64) -> LaneSettings {
        let endpoint = self
            .ctx
            .log
            .read(|rtxn, dbs| tables::endpoint_by_key(rtxn, dbs, endpoint_key));
        match endpoint {
            Ok(Some(endpoint)) => self.ctx.settings.get().lane(&endpoint),
            _ => LaneSettings {
                fifo: false,
                in_flight_max: self.ctx.settings.get().in_flight_max,
                rate_per_sec: None,
            },
        }
    }

    fn fire_timers(&mut self, now_ms: u64) {
        while let Some(&(due_ms, endpoint_key, seq)) = self.timers.first() {
            if due_ms > now_ms {
                break;
            }
            self.timers.pop_first();
            self.known.remove(&(endpoint_key, seq));
            self.accept(
                DueJob {
                    endpoint_key,
                    seq,
                    due_ms,
                },
                now_ms,
            );
        }
    }

    fn start_ready(&mut self, now_ms: u64) {
        for lane in self.lanes.values_mut() {
            // Saturating: a task's end can be seen just before its answer (another worker
            // ran it in between), so `attempts` may briefly count fewer than `unanswered`.
            while self.unanswered < SHARD_IN_FLIGHT_MAX
                && self.attempts.len().saturating_sub(self.unanswered) < SHARD_RECORDING_MAX
            {
                let Some(job) = lane.start(now_ms) else { break };
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let random = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64
                    / (1u64 << 53) as f64;
                self.attempts.spawn(attempt::run(
                    Arc::clone(&self.ctx),
                    job,
                    random,
                    self.answered.clone(),
                ));
                self.unanswered += 1;
                metrics::gauge!(telemetry::name::DELIVERIES_IN_FLIGHT).increment(1.0);
            }
        }
        // A lane stays while its pause or pacing lies ahead, so they hold for the
        // endpoint's next delivery; the loop's turn at least every `SCAN_INTERVAL` drops it
        // soon after.
        self.lanes.retain(|_, lane| !lane.is_idle(now_ms));
    }

    fn finished(&mut self, finished: Finished) {
        metrics::gauge!(telemetry::name::DELIVERIES_IN_FLIGHT).decrement(1.0);
        self.unanswered -= 1;
        let job = finished.job;
        let Some(lane) = self.lanes.get_mut(&job.endpoint_key) else {
            unreachable!("a lane with an attempt in flight is never dropped");
        };
        lane.finish();
        if let Some(settings) = finished.settings {
            lane.settings = settings;
        }
        if let Some(until) = finished.pause_until_ms {
            lane.pause_until(until);
        }
        match finished.step {
            Some(Step::RetryAt(at)) if lane.settings.fifo => lane.hold_head(job, at),
            Some(Step::RetryAt(at)) => {
                // The retry's timer holds the delivery from here, recorded or not.
                self.known.remove(&(job.endpoint_key, job.seq));
                let now_ms = self.ctx.clock.now_ms();
                self.accept(DueJob { due_ms: at, ..job }, now_ms);
            }
            // Held until the task ends, its record durable (`Event::Recorded`).
            _ => {}
        }
    }

    /// Reads this shard's due rows (due within the horizon, not held yet) from where the
    /// last scan stopped; wraps to the start when it reaches the horizon or the end.
    fn scan(&mut self) -> Result<(), LogError> {
        let now_ms = self.ctx.clock.now_ms();
        let until_ms = now_ms + HORIZON_MS;
        let (index, count) = (self.index, self.count);
        let from = self.scan_from;
        self.spilled = false;
        let ours = |endpoint_key| Publisher::shard_of(endpoint_key, count) == index;
        let (found, resume) = self
            .ctx
            .log
            .read(|rtxn, dbs| tables::due_rows(rtxn, dbs, from, until_ms, SCAN_ROWS_MAX, ours))?;
        self.scan_from = resume;
        for job in found {
            let held = self.known.contains(&(job.endpoint_key, job.seq));
            if !held && !self.left_to_refill(&job) {
                self.accept(job, now_ms);
            }
        }
        Ok(())
    }
}
