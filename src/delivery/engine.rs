//! The delivery engine: a fixed number of shard tasks, each the only owner of the lanes of
//! the endpoints that hash to it.
//!
//! Work reaches a shard three ways. The writer hands over each newly committed pending
//! delivery right after the commit (`Publisher`, a bounded queue; a full queue drops the
//! hand-off). Every `SCAN_INTERVAL` one scanner (`scan.rs`) reads the durable `due`
//! table, round robin, and hands each shard its deliveries due within `HORIZON_MS`; the
//! shard takes those it does not hold yet: that is how start-up recovers, how dropped
//! hand-offs are picked up and how far-off retries come back. And a lane whose queue overflowed ("spilled") refills from its own endpoint's
//! delivery rows, in seq order, from where it spilled: so a spilled lane keeps message
//! order, and no endpoint's backlog — however large, however stuck — stands between
//! another endpoint and its work. Retries due within the horizon wait in the shard's timer
//! map; later ones wait only in the log, so a million pending retries cost disk, not
//! memory.
//!
//! Each shard's decisions are a pure state machine (`shard::Shard`); its task here is
//! thin: it turns what happens (hand-offs, answers, ends of attempt tasks, timers) into
//! events, and performs the actions the machine returns — spawns attempts (drawing their
//! retry jitter), reads the log and feeds what it found back, sets gauges.
//!
//! In cluster mode each shard also has an ownership signal (its lease, `cluster::lease`).
//! Without it the shard takes no new work, and an attempt it would start sends nothing
//! and gives its delivery back at once (the machine's books stay exact); when the lease
//! comes, the shard asks the scanner for a read of the `due` table, which holds every
//! node's work.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::attempt::{self, AttemptCtx, Finished};
use super::lane::LaneSettings;
use super::shard::{Action, Event, Gauges, Shard};
use crate::cluster::Ownership;
use crate::heartbeat::Heartbeat;
use crate::limits::{
    REFILL_ROWS_MAX, SCAN_INTERVAL, SCAN_READS_WAITING_MAX, SHARD_IN_FLIGHT_MAX, SHARD_INTAKE_MAX,
    SHARD_RECORDING_MAX,
};
use crate::log::tables;
use crate::log::{DueJob, EndpointKey, Publisher, Seq};

use crate::telemetry;

/// Makes the writer's hand-off queues: the publisher for `Log::open`, the receivers for
/// `Engine::start`.
pub fn channels(shards: usize) -> (Publisher, Vec<mpsc::Receiver<DueJob>>) {
    let (senders, receivers) = (0..shards).map(|_| mpsc::channel(SHARD_INTAKE_MAX)).unzip();
    (Publisher::new(senders), receivers)
}

/// The running shards and their scanner.
pub struct Engine {
    stop: watch::Sender<bool>,
    shards: Vec<JoinHandle<()>>,
    scanner: JoinHandle<()>,
    heartbeats: Vec<Arc<Heartbeat>>,
}

impl Engine {
    /// Starts one task per intake, and the scanner of the `due` table. `ownership`
    /// (cluster mode: one signal per shard) gates which shards may start attempts; `None`
    /// (embedded): every shard may.
    pub fn start(
        ctx: Arc<AttemptCtx>,
        intakes: Vec<mpsc::Receiver<DueJob>>,
        ownership: Option<Vec<Ownership>>,
    ) -> Engine {
        let (stop, stopped) = watch::channel(false);
        let count = intakes.len();
        let mut ownership = ownership.map(Vec::into_iter);
        // One per shard, and the scanner's last.
        let heartbeats: Vec<Arc<Heartbeat>> = (0..=count)
            .map(|_| Arc::new(Heartbeat::default()))
            .collect();
        let scan_soon = Arc::new(Notify::new());
        let (scan_senders, scan_receivers): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| mpsc::channel(SCAN_READS_WAITING_MAX))
            .unzip();
        let shards = intakes
            .into_iter()
            .zip(scan_receivers)
            .enumerate()
            .map(|(index, (intake, scanned))| {
                heartbeats[index].beat();
                let mut seed = [0u8; 8];
                crate::ids::fill_random(&mut seed);
                let (answered, answers) = mpsc::channel(SHARD_IN_FLIGHT_MAX + SHARD_RECORDING_MAX);
                let task = ShardTask {
                    index,
                    ctx: Arc::clone(&ctx),
                    shard: Shard::new(),
                    attempts: JoinSet::new(),
                    answered,
                    rng: u64::from_le_bytes(seed) | 1,
                    heartbeat: Arc::clone(&heartbeats[index]),
                    ownership: ownership.as_mut().and_then(Iterator::next),
                    scan_soon: Arc::clone(&scan_soon),
                };
                let inputs = Inputs {
                    intake,
                    answers,
                    scanned,
                };
                tokio::spawn(task.run(inputs, stopped.clone()))
            })
            .collect();
        let scanner = tokio::spawn(super::scan::run(
            ctx,
            scan_senders,
            scan_soon,
            stopped,
            Arc::clone(&heartbeats[count]),
        ));
        Engine {
            stop,
            shards,
            scanner,
            heartbeats,
        }
    }

    /// Every shard's heartbeat and the scanner's (for the watchdog).
    pub fn heartbeats(&self) -> Vec<Arc<Heartbeat>> {
        self.heartbeats.clone()
    }

    /// Stops starting attempts, lets the ones in flight finish and record, and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for shard in self.shards {
            let _ = shard.await;
        }
        let _ = self.scanner.await;
    }
}

/// One shard's task: the owner of its `Shard`, the performer of its actions.
struct ShardTask {
    index: usize,
    ctx: Arc<AttemptCtx>,
    shard: Shard,
    /// Every attempt task, each ending with its number and the (endpoint, seq) the shard
    /// may then release (`Event::Recorded`).
    attempts: JoinSet<(u64, Option<(EndpointKey, Seq)>)>,
    /// Where attempt tasks report their answers (the task holds the receiver).
    answered: mpsc::Sender<Finished>,
    /// xorshift64* state for retry jitter.
    rng: u64,
    /// Beaten on every turn of the loop, which wakes at least every `SCAN_INTERVAL`.
    heartbeat: Arc<Heartbeat>,
    /// Cluster mode: this shard's lease. `None`: always owned (embedded).
    ownership: Option<Ownership>,
    /// Asks the scanner for a read of the `due` table sooner than its interval.
    scan_soon: Arc<Notify>,
}

/// What a shard's task listens to.
struct Inputs {
    /// The writer's hand-offs.
    intake: mpsc::Receiver<DueJob>,
    /// Attempts' answers.
    answers: mpsc::Receiver<Finished>,
    /// The scanner's reads of this shard's `due` rows.
    scanned: mpsc::Receiver<Vec<DueJob>>,
}

/// Waits for a change of the shard's lease (never, without one).
async fn lease_changed(ownership: Option<&mut Ownership>) {
    match ownership {
        Some(ownership) => ownership.changed().await,
        None => std::future::pending().await,
    }
}

impl ShardTask {
    async fn run(mut self, inputs: Inputs, mut stop: watch::Receiver<bool>) {
        let Inputs {
            mut intake,
            mut answers,
            mut scanned,
        } = inputs;
        let mut next_interval = tokio::time::Instant::now();
        loop {
            self.heartbeat.beat();
            let wake = self.wake_at().min(next_interval);
            let event = tokio::select! {
                biased;
                _ = stop.changed() => None,
                Some(finished) = answers.recv() => {
                    telemetry::deliveries_in_flight(-1.0);
                    Some(Event::Answered(finished))
                }
                Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => match done {
                    Ok((attempt, release)) => Some(Event::Recorded { attempt, release }),
                    Err(error) => panic!("an attempt task failed: {error}"),
                },
                job = intake.recv() => match job {
                    // Not ours now: the job stays in the log for the owner.
                    Some(_) if !self.owns() => Some(Event::Tick),
                    job => job.map(Event::HandedOff),
                },
                Some(jobs) = scanned.recv() => {
                    Some(if self.owns() { Event::DueRows(jobs) } else { Event::Tick })
                }
                () = lease_changed(self.ownership.as_mut()) => {
                    // Gained: look for the shard's work in the log now, not at the next
                    // scan. (Lost: attempts stop by themselves, see `perform`.)
                    if self.owns() {
                        self.scan_soon.notify_one();
                    }
                    Some(Event::Tick)
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = tokio::time::Instant::now();
                    if now >= next_interval {
                        next_interval = now + SCAN_INTERVAL;
                        Some(Event::Interval)
                    } else {
                        Some(Event::Tick)
                    }
                }
            };
            let Some(event) = event else { break };
            self.handle(event);
        }
        // Attempts in flight finish and record (each is bounded by the attempt timeout).
        // Their answers are not awaited here: a task whose shard stopped listening still
        // records and ends.
        drop(answers);
        while self.attempts.join_next().await.is_some() {}
    }

    /// Gives `event` to the shard, performs the actions it returns, and gives it what
    /// they found, until nothing is left to do. Each event is applied at the time it is
    /// applied: a job committed while the task waited must not look early (it would wait
    /// for a timer and be overtaken by the next hand-off, breaking `fifo` order).
    fn handle(&mut self, event: Event) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            for action in self.shard.on(event, self.ctx.clock.now_ms()) {
                events.extend(self.perform(action));
            }
        }
    }

    /// Performs one action; the event that reports what a read found.
    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Start { attempt, job } if !self.owns() => {
                self.give_back(attempt, job);
                None
            }
            Action::Start { attempt, job } => {
                let random = self.draw();
                let (ctx, answered) = (Arc::clone(&self.ctx), self.answered.clone());
                self.attempts.spawn(async move {
                    let release = attempt::run(ctx, attempt, job, random, answered).await;
                    (attempt, release)
                });
                telemetry::deliveries_in_flight(1.0);
                None
            }
            Action::ReadSettings { endpoint_key } => Some(Event::Settings {
                endpoint_key,
                settings: self.read_settings(endpoint_key),
            }),
            Action::ScanSoon => {
                self.scan_soon.notify_one();
                None
            }
            Action::Refill {
                endpoint_key,
                from_seq,
            } => {
                let read = self.ctx.log.read(|rtxn, dbs| {
                    tables::endpoint_deliveries_from(
                        rtxn,
                        dbs,
                        endpoint_key,
                        from_seq,
                        REFILL_ROWS_MAX,
                    )
                });
                match read {
                    Ok((rows, ended)) => Some(Event::Refilled {
                        endpoint_key,
                        from_seq,
                        rows,
                        ended,
                    }),
                    Err(error) => {
                        tracing::error!(shard = self.index, %error, "Refill of a spilled lane failed.");
                        None
                    }
                }
            }
            Action::ExportGauges(gauges) => {
                self.export(gauges);
                None
            }
        }
    }

    /// The lease is gone (or going): attempt `attempt` sends nothing and gives its
    /// delivery back, as an attempt that sent nothing would (the owner has it in the log).
    fn give_back(&mut self, attempt: u64, job: DueJob) {
        let answered = self.answered.clone();
        self.attempts.spawn(async move {
            let finished = Finished {
                attempt,
                job,
                step: None,
                pause_until_ms: None,
                settings: None,
            };
            let _ = answered.send(finished).await;
            (attempt, Some((job.endpoint_key, job.seq)))
        });
        telemetry::deliveries_in_flight(1.0);
    }

    /// Whether this node may start attempts on this shard now.
    fn owns(&self) -> bool {
        self.ownership.as_ref().is_none_or(Ownership::owned)
    }

    /// The next time the shard could have something to do, as a runtime instant.
    fn wake_at(&self) -> tokio::time::Instant {
        let now_ms = self.ctx.clock.now_ms();
        let at_ms = self.shard.wake_at_ms().unwrap_or(u64::MAX);
        let delay = Duration::from_millis(at_ms.saturating_sub(now_ms).min(3_600_000));
        tokio::time::Instant::now() + delay
    }

    /// A number in [0, 1) for an attempt's retry jitter (xorshift64*).
    fn draw(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The endpoint's lane settings; defaults if it is gone or cannot be read (its
    /// attempts then skip it, or find out).
    fn read_settings(&self, endpoint_key: EndpointKey) -> LaneSettings {
        // Through the attempts' cache of decoded endpoints: a lane is made again for
        // every delivery to an endpoint that went idle in between (with many endpoints,
        // most of them), and decoding the row each time was 4 % of Sluice's CPU in the
        // fan-out run.
        let endpoint = self.ctx.log.read(|rtxn, dbs| {
            let stored = tables::endpoint_stored(rtxn, dbs, endpoint_key)?;
            self.ctx.endpoints.get(endpoint_key, stored, |stored| {
                tables::decode_endpoint(dbs, stored)
            })
        });
        match endpoint {
            Ok(Some(endpoint)) => self.ctx.settings.get().lane(&endpoint),
            _ => LaneSettings {
                fifo: false,
                in_flight_max: self.ctx.settings.get().in_flight_max,
                rate_per_sec: None,
            },
        }
    }

    /// Sets this shard's gauges (once per scan: they are samples, not counts).
    fn export(&self, gauges: Gauges) {
        let shard = self.index.to_string();
        metrics::gauge!(telemetry::name::SHARD_LANES, "shard" => shard.clone())
            .set(gauges.lanes as f64);
        metrics::gauge!(telemetry::name::SHARD_LANES_THROTTLED, "shard" => shard.clone())
            .set(gauges.throttled as f64);
        metrics::gauge!(telemetry::name::SHARD_RETRIES_IN_MEMORY, "shard" => shard)
            .set(gauges.retries_in_memory as f64);
    }
}
