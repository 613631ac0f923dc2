//! One shard's decisions as a pure state machine: which deliveries it holds (lanes, retry
//! timers, spilled lanes), when each attempt may start, and what to read from the log.
//!
//! `Shard::on(event, now_ms)` applies one event and returns the actions it calls for; the
//! shard's task (`engine.rs`) performs them — spawns attempts, reads the log, sets gauges —
//! and feeds what the reads found back as events. The `due` table is read for every shard
//! at once by one scanner (`scan.rs`), which hands each shard its rows. No I/O, no clock and no randomness here:
//! time comes in with each event, and the retry jitter is drawn by the task.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::attempt::Finished;
use super::lane::{Lane, LaneSettings, Later};
use crate::limits::{
    HORIZON_MS, LANE_QUEUE_MAX, SHARD_IN_FLIGHT_MAX, SHARD_RECORDING_MAX, TIMERS_MAX,
};
use crate::log::schema::{DeliveryRecord, DeliveryState};
use crate::log::tables::Step;
use crate::log::{DueJob, EndpointKey, Seq};

/// What happens to a shard.
#[derive(Debug)]
pub enum Event {
    /// The writer committed a pending delivery of one of this shard's endpoints.
    HandedOff(DueJob),
    /// An attempt's receiver answered (or nothing was sent): the endpoint's slot is free.
    Answered(Finished),
    /// An attempt's task ended: its record is durable (or failed). `release` is the
    /// delivery the shard may stop holding (none while a retry holds it).
    Recorded {
        attempt: u64,
        release: Option<(EndpointKey, Seq)>,
    },
    /// The time `wake_at_ms` named has come: a lane or a retry timer may be due.
    Tick,
    /// The scan interval has passed: as `Tick`, and export the gauges.
    Interval,
    /// An endpoint's lane settings, as `Action::ReadSettings` asked.
    Settings {
        endpoint_key: EndpointKey,
        settings: LaneSettings,
    },
    /// This shard's rows of the `due` table due within the horizon, from the scanner's
    /// latest read (some may be held already).
    DueRows(Vec<DueJob>),
    /// An endpoint's delivery rows from `from_seq` on, in seq order, as `Action::Refill`
    /// asked; `ended`: there are no more.
    Refilled {
        endpoint_key: EndpointKey,
        from_seq: Seq,
        rows: Vec<(Seq, DeliveryRecord)>,
        ended: bool,
    },
}

/// What a shard asks its task to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start attempt number `attempt` of `job` (its answer and its end come back as
    /// `Answered` and `Recorded` with this number).
    Start { attempt: u64, job: DueJob },
    /// Read the endpoint's lane settings (answer: `Settings`).
    ReadSettings { endpoint_key: EndpointKey },
    /// Ask the scanner to read the `due` table soon, not only at its interval (answer, in
    /// time: `DueRows`).
    ScanSoon,
    /// Read the endpoint's delivery rows from `from_seq` on (answer: `Refilled`).
    Refill {
        endpoint_key: EndpointKey,
        from_seq: Seq,
    },
    /// Export these samples.
    ExportGauges(Gauges),
}

/// A shard's gauges, sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauges {
    pub lanes: usize,
    pub throttled: usize,
    pub retries_in_memory: usize,
}

/// Where an attempt task is: its answer and its end can reach the shard in either order
/// (the task sends its answer and then ends, but the shard may see the end first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Started; neither its answer nor its end seen.
    Unanswered,
    /// Answered; its record is not yet durable.
    Recording,
    /// Ended before its answer was seen.
    Ended,
}

/// The settings a new lane holds until its endpoint's arrive; it starts nothing meanwhile.
const UNSETTLED: LaneSettings = LaneSettings {
    fifo: false,
    in_flight_max: 1,
    rate_per_sec: None,
};

/// One shard's state: every delivery it holds and every attempt it has started.
#[derive(Debug, Default)]
pub struct Shard {
    lanes: HashMap<EndpointKey, Lane>,
    /// Lanes whose settings were asked for and have not arrived: they start nothing yet.
    unsettled: HashSet<EndpointKey>,
    /// Every (endpoint, seq) this shard holds in a lane, a timer or in flight.
    known: HashSet<(EndpointKey, Seq)>,
    /// Retries waiting in memory: (due ms, endpoint, seq).
    timers: BTreeSet<(u64, EndpointKey, Seq)>,
    /// Every attempt whose answer or end has not been seen, by number.
    attempts: HashMap<u64, Phase>,
    next_attempt: u64,
    /// Attempts started whose answer has not been seen: the shard's in-flight count.
    unanswered: usize,
    /// Attempts answered whose record is not yet durable.
    recording: usize,
    /// A delivery due soon was left in the log because the timer map was full: scan soon.
    spilled: bool,
    /// Endpoints whose lane overflowed, with the seq their refill resumes at. Their
    /// hand-offs and scanned rows are left in the log too: the lane refills only from its
    /// delivery rows, in seq order, so a newer delivery never overtakes an older spilled
    /// one (which keeps `fifo` strict and the oldest first).
    spilled_lanes: HashMap<EndpointKey, Seq>,
    /// Deliveries answered with a retry that waits in the log (beyond the horizon), by
    /// attempt, until that attempt's record is durable. Until then the log still shows
    /// them due now, so a due row read before the record (the scanner's reads reach the
    /// shard later than they are made) must not start them again: they stay `known`.
    parked: HashMap<u64, (EndpointKey, Seq)>,
    /// Lanes the current event changed. After an event the shard looks only at these, the
    /// lanes whose time came (`wakes`) and the lanes its bounds held back (`waiting`):
    /// looking at every lane after every event cost a shard of a thousand endpoints more
    /// than its attempts did.
    touched: Vec<EndpointKey>,
    /// Lanes with an attempt ready that the shard's in-flight or recording bound held
    /// back, oldest first: each freed slot goes to the lane that has waited longest.
    waiting: VecDeque<EndpointKey>,
    /// The lanes in `waiting` (each is queued once).
    waiting_set: HashSet<EndpointKey>,
    /// (ms, endpoint): when a lane's pause or pacing ends and it may start again; the
    /// shard wakes for these.
    wakes: BTreeSet<(u64, EndpointKey)>,
    /// (ms, endpoint): when an idle lane's pause or pacing ends and it may be dropped; the
    /// shard drops it at its first turn after then.
    expiries: BTreeSet<(u64, EndpointKey)>,
    /// The one entry each lane has in `wakes` or `expiries`.
    noted: HashMap<EndpointKey, Later>,
}

impl Shard {
    pub fn new() -> Shard {
        Shard::default()
    }

    /// Applies `event` at `now_ms`; returns what to do, in order.
    pub fn on(&mut self, event: Event, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::HandedOff(job) => {
                // Taken unless its lane has older work still in the log (then the lane's
                // refill brings both, in order).
                if !self.left_to_refill(&job) {
                    self.accept(job, now_ms, &mut out);
                }
            }
            Event::Answered(finished) => {
                let endpoint_key = finished.job.endpoint_key;
                self.answered(finished, now_ms, &mut out);
                self.refill_if_drained(endpoint_key, &mut out);
            }
            Event::Recorded { attempt, release } => self.recorded(attempt, release),
            Event::Tick => self.tick(now_ms, false, &mut out),
            Event::Interval => self.tick(now_ms, true, &mut out),
            Event::Settings {
                endpoint_key,
                settings,
            } => {
                self.unsettled.remove(&endpoint_key);
                if let Some(lane) = self.lanes.get_mut(&endpoint_key) {
                    lane.set_settings(settings);
                    self.touched.push(endpoint_key);
                }
            }
            Event::DueRows(jobs) => {
                for job in jobs {
                    let held = self.known.contains(&(job.endpoint_key, job.seq));
                    if !held && !self.left_to_refill(&job) {
                        self.accept(job, now_ms, &mut out);
                    }
                }
            }
            Event::Refilled {
                endpoint_key,
                from_seq,
                rows,
                ended,
            } => self.refilled(endpoint_key, from_seq, rows, ended, now_ms, &mut out),
        }
        self.start_ready(now_ms, &mut out);
        out
    }

    /// The next time (ms) something could become ready without an event: a lane's pause
    /// or pacing ending, a retry timer. `None` while the shard may start nothing (at its
    /// in-flight or recording bound only an answer or a record frees it) and holds no
    /// timer.
    pub fn wake_at_ms(&self) -> Option<u64> {
        let lanes = if self.may_start() {
            self.wakes.first().map(|(at_ms, _)| *at_ms)
        } else {
            None
        };
        let timer = self.timers.first().map(|(due_ms, _, _)| *due_ms);
        lanes.into_iter().chain(timer).min()
    }

    fn may_start(&self) -> bool {
        self.unanswered < SHARD_IN_FLIGHT_MAX && self.recording < SHARD_RECORDING_MAX
    }

    /// Fires the due timers, refills drained spilled lanes, asks for a scan soon if a
    /// spill left work due soon in the log, and exports the gauges at each `interval`.
    fn tick(&mut self, now_ms: u64, interval: bool, out: &mut Vec<Action>) {
        self.fire_timers(now_ms, out);
        let spilled: Vec<EndpointKey> = self.spilled_lanes.keys().copied().collect();
        for endpoint_key in spilled {
            self.refill_if_drained(endpoint_key, out);
        }
        if self.spilled {
            self.spilled = false;
            out.push(Action::ScanSoon);
        }
        if interval {
            out.push(Action::ExportGauges(self.gauges(now_ms)));
        }
    }

    fn gauges(&self, now_ms: u64) -> Gauges {
        Gauges {
            lanes: self.lanes.len(),
            throttled: self.lanes.values().filter(|l| l.paused(now_ms)).count(),
            retries_in_memory: self.timers.len(),
        }
    }

    /// Whether `job` is at or past where its spilled lane's refill resumes: the refill will
    /// bring it, in order. (An earlier one, such as a retry coming due, is taken at once.)
    fn left_to_refill(&self, job: &DueJob) -> bool {
        self.spilled_lanes
            .get(&job.endpoint_key)
            .is_some_and(|&resume| job.seq >= resume)
    }

    /// Takes a delivery: due now into its lane; due within the horizon into a timer; later
    /// (or with the timer map full) left in the log for a scan.
    fn accept(&mut self, job: DueJob, now_ms: u64, out: &mut Vec<Action>) {
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
            self.enqueue(job, out);
        }
    }

    /// Queues a due job in its lane (creating the lane, and asking for its settings); a
    /// full lane spills: the job stays in the log and the lane refills from it.
    fn enqueue(&mut self, job: DueJob, out: &mut Vec<Action>) {
        let endpoint_key = job.endpoint_key;
        let lane = match self.lanes.entry(endpoint_key) {
            Entry::Occupied(lane) => lane.into_mut(),
            Entry::Vacant(vacant) => {
                self.unsettled.insert(endpoint_key);
                out.push(Action::ReadSettings { endpoint_key });
                vacant.insert(Lane::new(UNSETTLED))
            }
        };
        if lane.push(job) {
            self.known.insert((endpoint_key, job.seq));
            self.touched.push(endpoint_key);
        } else {
            let resume = self.spilled_lanes.entry(endpoint_key).or_insert(job.seq);
            *resume = (*resume).min(job.seq);
        }
    }

    fn fire_timers(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        while let Some(&(due_ms, endpoint_key, seq)) = self.timers.first() {
            if due_ms > now_ms {
                break;
            }
            self.timers.pop_first();
            self.known.remove(&(endpoint_key, seq));
            let job = DueJob {
                endpoint_key,
                seq,
                due_ms,
            };
            self.accept(job, now_ms, out);
        }
    }

    /// Asks for a spilled lane's refill once its queue has drained to half (not after
    /// every attempt: one read refills many slots).
    fn refill_if_drained(&self, endpoint_key: EndpointKey, out: &mut Vec<Action>) {
        let Some(&from_seq) = self.spilled_lanes.get(&endpoint_key) else {
            return;
        };
        let drained = self
            .lanes
            .get(&endpoint_key)
            .is_none_or(|lane| lane.queued() <= LANE_QUEUE_MAX / 2);
        if drained {
            out.push(Action::Refill {
                endpoint_key,
                from_seq,
            });
        }
    }

    /// Queues the refilled rows that are pending and due, in seq order, until the lane is
    /// full again (still spilled, resuming there) or the rows run out (no longer spilled,
    /// if they were the last).
    fn refilled(
        &mut self,
        endpoint_key: EndpointKey,
        from_seq: Seq,
        rows: Vec<(Seq, DeliveryRecord)>,
        ended: bool,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.spilled_lanes.get(&endpoint_key) != Some(&from_seq) {
            return; // Stale: the next refill reads from where the lane resumes now.
        }
        let resume = rows.last().map_or(from_seq, |(seq, _)| Seq(seq.0 + 1));
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
                self.spilled_lanes.insert(endpoint_key, seq);
                return;
            }
            let job = DueJob {
                endpoint_key,
                seq,
                due_ms: delivery.next_due_ms,
            };
            self.enqueue(job, out);
        }
        if ended {
            self.spilled_lanes.remove(&endpoint_key);
        } else {
            self.spilled_lanes.insert(endpoint_key, resume);
        }
    }

    fn answered(&mut self, finished: Finished, now_ms: u64, out: &mut Vec<Action>) {
        let record_pending = match self.attempts.get(&finished.attempt) {
            Some(Phase::Unanswered) => {
                self.attempts.insert(finished.attempt, Phase::Recording);
                self.recording += 1;
                true
            }
            Some(Phase::Ended) => {
                self.attempts.remove(&finished.attempt);
                false
            }
            Some(Phase::Recording) | None => unreachable!("an attempt answers once"),
        };
        self.unanswered -= 1;
        let job = finished.job;
        let Some(lane) = self.lanes.get_mut(&job.endpoint_key) else {
            unreachable!("a lane with an attempt in flight is never dropped");
        };
        lane.finish();
        self.touched.push(job.endpoint_key);
        if let Some(settings) = finished.settings {
            lane.set_settings(settings);
        }
        if let Some(until) = finished.pause_until_ms {
            lane.pause_until(until);
        }
        match finished.step {
            Some(Step::RetryAt(at)) if lane.settings.fifo => lane.hold_head(job, at),
            Some(Step::RetryAt(at)) => {
                // The retry's timer holds the delivery from here, recorded or not.
                let key = (job.endpoint_key, job.seq);
                self.known.remove(&key);
                self.accept(DueJob { due_ms: at, ..job }, now_ms, out);
                if record_pending && self.known.insert(key) {
                    // No timer took it: it waits in the log, held until its record is.
                    self.parked.insert(finished.attempt, key);
                }
            }
            // Held until the attempt's record is durable (`Event::Recorded`).
            _ => {}
        }
    }

    fn recorded(&mut self, attempt: u64, release: Option<(EndpointKey, Seq)>) {
        if let Some(key) = release.or_else(|| self.parked.remove(&attempt)) {
            self.known.remove(&key);
        }
        match self.attempts.get(&attempt) {
            Some(Phase::Recording) => {
                self.attempts.remove(&attempt);
                self.recording -= 1;
            }
            // Its answer is on its way; it still counts as in flight until it arrives.
            Some(Phase::Unanswered) => {
                self.attempts.insert(attempt, Phase::Ended);
            }
            Some(Phase::Ended) | None => unreachable!("an attempt ends once"),
        }
    }

    /// Starts every attempt the shard's bounds allow, from the lanes that waited for a
    /// slot (oldest first), the lanes whose pause or pacing ended and the lanes this event
    /// changed; drops the lanes among them that hold nothing that still matters.
    fn start_ready(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for due in [&mut self.wakes, &mut self.expiries] {
            while let Some(&(at_ms, endpoint_key)) = due.first() {
                if at_ms > now_ms {
                    break;
                }
                due.pop_first();
                self.noted.remove(&endpoint_key);
                self.touched.push(endpoint_key);
            }
        }
        while self.may_start()
            && let Some(endpoint_key) = self.waiting.pop_front()
        {
            self.waiting_set.remove(&endpoint_key);
            self.look_at(endpoint_key, now_ms, out);
        }
        let mut touched = std::mem::take(&mut self.touched);
        for &endpoint_key in &touched {
            self.look_at(endpoint_key, now_ms, out);
        }
        touched.clear();
        self.touched = touched; // Its allocation serves the next event.
    }

    /// Starts what lane `endpoint_key` may start now; queues it to wait for a slot if the
    /// shard's bounds stop it; drops it if it is idle, or notes when to look again.
    fn look_at(&mut self, endpoint_key: EndpointKey, now_ms: u64, out: &mut Vec<Action>) {
        // An unsettled lane starts nothing; the arrival of its settings touches it.
        if !self.unsettled.is_empty() && self.unsettled.contains(&endpoint_key) {
            return;
        }
        let Some(lane) = self.lanes.get_mut(&endpoint_key) else {
            return; // Dropped since it was noted.
        };
        while self.unanswered < SHARD_IN_FLIGHT_MAX && self.recording < SHARD_RECORDING_MAX {
            let Some(job) = lane.start(now_ms) else { break };
            let attempt = self.next_attempt;
            self.next_attempt += 1;
            self.attempts.insert(attempt, Phase::Unanswered);
            self.unanswered += 1;
            out.push(Action::Start { attempt, job });
        }
        if lane.ready(now_ms) && self.waiting_set.insert(endpoint_key) {
            self.waiting.push_back(endpoint_key); // Held back by the shard's bounds.
        }
        // A lane stays while its pause or pacing lies ahead, so they hold for the
        // endpoint's next delivery; its expiry drops it once they end.
        let later = if lane.is_idle(now_ms) {
            self.lanes.remove(&endpoint_key);
            None
        } else {
            lane.later(now_ms)
        };
        let noted = self.noted.get(&endpoint_key).copied();
        if noted != later {
            match noted {
                Some(Later::Start(at_ms)) => self.wakes.remove(&(at_ms, endpoint_key)),
                Some(Later::Drop(at_ms)) => self.expiries.remove(&(at_ms, endpoint_key)),
                None => false,
            };
            match later {
                Some(Later::Start(at_ms)) => self.wakes.insert((at_ms, endpoint_key)),
                Some(Later::Drop(at_ms)) => self.expiries.insert((at_ms, endpoint_key)),
                None => false,
            };
            match later {
                Some(later) => self.noted.insert(endpoint_key, later),
                None => self.noted.remove(&endpoint_key),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;

    /// A shard and a make-believe log: performs the shard's reads against `settings`,
    /// `due` and `deliveries`, and keeps the attempts it started until a test answers them.
    struct World {
        now: u64,
        shard: Shard,
        settings: HashMap<u64, LaneSettings>,
        /// The `due` table: (due ms, endpoint, seq).
        due: BTreeSet<(u64, u64, u64)>,
        deliveries: BTreeMap<(u64, u64), DeliveryRecord>,
        /// Attempts started and not yet answered: number → job.
        started: BTreeMap<u64, DueJob>,
        /// Every start, in order: (time, job).
        starts: Vec<(u64, DueJob)>,
        /// Every read of the `due` table and every refill asked for.
        reads: Vec<Action>,
    }

    fn unordered(in_flight_max: usize) -> LaneSettings {
        LaneSettings {
            fifo: false,
            in_flight_max,
            rate_per_sec: None,
        }
    }

    fn job(endpoint_key: u64, seq: u64, due_ms: u64) -> DueJob {
        DueJob {
            endpoint_key: EndpointKey(endpoint_key),
            seq: Seq(seq),
            due_ms,
        }
    }

    impl World {
        fn new() -> World {
            World {
                now: 1_000,
                shard: Shard::new(),
                settings: HashMap::new(),
                due: BTreeSet::new(),
                deliveries: BTreeMap::new(),
                started: BTreeMap::new(),
                starts: Vec::new(),
                reads: Vec::new(),
            }
        }

        /// Applies `event` now and everything it leads to; returns the jobs started.
        fn on(&mut self, event: Event) -> Vec<DueJob> {
            let mut started = Vec::new();
            let mut events = VecDeque::from([event]);
            while let Some(event) = events.pop_front() {
                for action in self.shard.on(event, self.now) {
                    match action {
                        Action::Start { attempt, job } => {
                            assert!(self.started.insert(attempt, job).is_none());
                            self.starts.push((self.now, job));
                            started.push(job);
                        }
                        Action::ReadSettings { endpoint_key } => {
                            let settings = self.settings.get(&endpoint_key.0).copied();
                            events.push_back(Event::Settings {
                                endpoint_key,
                                settings: settings.unwrap_or(unordered(4)),
                            });
                        }
                        Action::ScanSoon => self.reads.push(action.clone()),
                        Action::Refill {
                            endpoint_key,
                            from_seq,
                        } => {
                            self.reads.push(action.clone());
                            let rows = self
                                .deliveries
                                .range((endpoint_key.0, from_seq.0)..=(endpoint_key.0, u64::MAX))
                                .map(|(&(_, seq), row)| (Seq(seq), *row))
                                .collect();
                            events.push_back(Event::Refilled {
                                endpoint_key,
                                from_seq,
                                rows,
                                ended: true,
                            });
                        }
                        Action::ExportGauges(_) => {}
                    }
                }
            }
            started
        }

        /// The scanner reads the `due` table now and hands the shard what is due within
        /// the horizon.
        fn scan(&mut self) -> Vec<DueJob> {
            let until_ms = self.now + HORIZON_MS;
            let jobs = self
                .due
                .iter()
                .take_while(|row| row.0 <= until_ms)
                .map(|&(due_ms, endpoint_key, seq)| job(endpoint_key, seq, due_ms))
                .collect();
            self.on(Event::DueRows(jobs))
        }

        fn hand_off(&mut self, endpoint_key: u64, seq: u64) -> Vec<DueJob> {
            let job = job(endpoint_key, seq, self.now);
            self.deliveries
                .insert((endpoint_key, seq), pending(self.now));
            self.due.insert((self.now, endpoint_key, seq));
            self.on(Event::HandedOff(job))
        }

        /// The receiver answers attempt `attempt` with `step` (and a pause); its record is
        /// made in the log, not yet durable as far as the shard knows.
        fn answer(&mut self, attempt: u64, step: Option<Step>, pause: Option<u64>) -> Vec<DueJob> {
            let job = self.started.remove(&attempt).expect("started");
            let settings = self.settings.get(&job.endpoint_key.0).copied();
            self.log_step(job, step);
            let finished = Finished {
                attempt,
                job,
                step,
                pause_until_ms: pause,
                settings: Some(settings.unwrap_or(unordered(4))),
            };
            self.on(Event::Answered(finished))
        }

        /// Attempt `attempt`'s task ends: its record is durable.
        fn record(&mut self, attempt: u64, job: DueJob, step: Option<Step>) -> Vec<DueJob> {
            let release =
                (!matches!(step, Some(Step::RetryAt(_)))).then_some((job.endpoint_key, job.seq));
            self.on(Event::Recorded { attempt, release })
        }

        /// Answers and records the attempt of `job` that is in flight.
        fn complete(&mut self, job: DueJob, step: Option<Step>) -> Vec<DueJob> {
            let attempt = self.attempt_of(job);
            let mut started = self.answer(attempt, step, None);
            started.extend(self.record(attempt, job, step));
            started
        }

        fn attempt_of(&self, job: DueJob) -> u64 {
            let found = self
                .started
                .iter()
                .find(|(_, j)| (j.endpoint_key, j.seq) == (job.endpoint_key, job.seq));
            *found.expect("in flight").0
        }

        /// What recording `step` does to the log's rows.
        fn log_step(&mut self, job: DueJob, step: Option<Step>) {
            let key = (job.endpoint_key.0, job.seq.0);
            let Some(row) = self.deliveries.get_mut(&key) else {
                return;
            };
            self.due.remove(&(row.next_due_ms, key.0, key.1));
            match step {
                Some(Step::RetryAt(at)) => {
                    row.next_due_ms = at;
                    self.due.insert((at, key.0, key.1));
                }
                Some(_) => row.state = DeliveryState::Succeeded,
                None => row.state = DeliveryState::Skipped,
            }
        }

        fn advance_to(&mut self, now: u64) -> Vec<DueJob> {
            self.now = now;
            self.on(Event::Tick)
        }

        fn seqs(jobs: &[DueJob]) -> Vec<u64> {
            jobs.iter().map(|j| j.seq.0).collect()
        }
    }

    fn pending(next_due_ms: u64) -> DeliveryRecord {
        DeliveryRecord {
            state: DeliveryState::Pending,
            manual: false,
            attempts: 0,
            next_due_ms,
            updated_ms: next_due_ms,
        }
    }

    #[test]
    fn a_failing_endpoint_does_not_hold_up_a_healthy_one() {
        let mut world = World::new();
        world.settings.insert(1, unordered(2));
        world.settings.insert(2, unordered(2));
        for seq in 1..=4 {
            world.hand_off(1, seq);
            world.hand_off(2, 10 + seq);
        }
        let in_flight: Vec<DueJob> = world.started.values().copied().collect();
        assert_eq!(in_flight.len(), 4, "two per endpoint");
        // Endpoint 1 fails every attempt; endpoint 2 succeeds.
        let retry_at = world.now + 10_000;
        let mut delivered = Vec::new();
        let mut queue: VecDeque<DueJob> = in_flight.into();
        while let Some(job) = queue.pop_front() {
            let step = if job.endpoint_key == EndpointKey(1) {
                Step::RetryAt(retry_at)
            } else {
                delivered.push(job.seq.0);
                Step::Succeeded
            };
            queue.extend(world.complete(job, Some(step)));
        }
        delivered.sort_unstable();
        assert_eq!(delivered, [11, 12, 13, 14], "all of endpoint 2's went out");
        assert_eq!(
            world.shard.timers.len(),
            4,
            "endpoint 1's wait for their retries"
        );
        assert_eq!(world.shard.wake_at_ms(), Some(retry_at));
        assert!(world.advance_to(retry_at - 1).is_empty());
        let retried = world.advance_to(retry_at);
        assert_eq!(retried.len(), 2, "the retries start, two at a time");
        assert!(retried.iter().all(|j| j.endpoint_key == EndpointKey(1)));
    }

    #[test]
    fn a_fifo_lane_holds_its_failed_head_and_keeps_order() {
        let mut world = World::new();
        world.settings.insert(
            1,
            LaneSettings {
                fifo: true,
                ..unordered(4)
            },
        );
        let first = world.hand_off(1, 1);
        assert_eq!(World::seqs(&first), [1]);
        assert!(world.hand_off(1, 2).is_empty(), "one in flight");
        assert!(world.hand_off(1, 3).is_empty());
        let retry_at = world.now + 500;
        assert!(
            world
                .complete(first[0], Some(Step::RetryAt(retry_at)))
                .is_empty()
        );
        assert_eq!(
            world.shard.wake_at_ms(),
            Some(retry_at),
            "held until its retry"
        );
        assert!(world.advance_to(retry_at - 1).is_empty());
        let again = world.advance_to(retry_at);
        assert_eq!(World::seqs(&again), [1], "the head again, before 2 and 3");
        let second = world.complete(again[0], Some(Step::Succeeded));
        assert_eq!(World::seqs(&second), [2]);
        let third = world.complete(second[0], Some(Step::Succeeded));
        assert_eq!(World::seqs(&third), [3]);
    }

    #[test]
    fn retry_after_pauses_the_endpoint_beyond_its_queue() {
        // 429 and 503 with Retry-After reach the shard alike: a step and a pause.
        let mut world = World::new();
        let first = world.hand_off(1, 1)[0];
        world.now += 10;
        let until = world.now + 5_000;
        let attempt = world.attempt_of(first);
        let step = Some(Step::RetryAt(until));
        assert!(world.answer(attempt, step, Some(until)).is_empty());
        world.record(attempt, first, step);
        world.now += 1_000;
        assert!(
            world.hand_off(1, 2).is_empty(),
            "the next message waits too"
        );
        assert_eq!(world.shard.wake_at_ms(), Some(until));
        assert!(world.advance_to(until - 1).is_empty());
        let mut resumed = World::seqs(&world.advance_to(until));
        resumed.sort_unstable();
        assert_eq!(resumed, [1, 2], "the retry and the next message");
    }

    #[test]
    fn an_empty_paused_lane_is_kept_but_wakes_nobody() {
        let mut world = World::new();
        let first = world.hand_off(1, 1)[0];
        let until = world.now + 5_000;
        let attempt = world.attempt_of(first);
        // A manual attempt answered 503 with Retry-After: failed, not retried.
        world.answer(attempt, Some(Step::Failed), Some(until));
        world.record(attempt, first, Some(Step::Failed));
        assert_eq!(world.shard.lanes.len(), 1, "kept for its pause");
        assert_eq!(
            world.shard.wake_at_ms(),
            None,
            "nothing to start: no spinning"
        );
        world.advance_to(until);
        assert!(
            world.shard.lanes.is_empty(),
            "dropped once the pause is over"
        );
    }

    #[test]
    fn throttle_rate_paces_deliveries_that_arrive_one_at_a_time() {
        let mut world = World::new();
        world.settings.insert(
            1,
            LaneSettings {
                rate_per_sec: Some(5),
                ..unordered(4)
            },
        );
        for seq in 1..=6 {
            world.now += 10;
            let mut started = world.hand_off(1, seq);
            if started.is_empty() {
                let at = world.shard.wake_at_ms().expect("paced");
                started = world.advance_to(at);
            }
            assert_eq!(World::seqs(&started), [seq]);
            world.complete(started[0], Some(Step::Succeeded));
        }
        let times: Vec<u64> = world.starts.iter().map(|(at, _)| *at).collect();
        assert!(
            times.windows(2).all(|w| w[1] - w[0] >= 200),
            "5 per second: {times:?}"
        );
    }

    #[test]
    fn a_retry_waits_in_a_timer_within_the_horizon_and_in_the_log_beyond_it() {
        let mut world = World::new();
        let near = world.hand_off(1, 1)[0];
        let far = world.hand_off(1, 2)[0];
        let near_at = world.now + 30_000;
        let far_at = world.now + HORIZON_MS + 30_000;
        world.complete(near, Some(Step::RetryAt(near_at)));
        world.complete(far, Some(Step::RetryAt(far_at)));
        assert_eq!(world.shard.timers.len(), 1, "only the near retry in memory");
        // A scan finds the near one held already, and the far one beyond the horizon.
        assert!(world.scan().is_empty());
        assert_eq!(world.shard.timers.len(), 1);
        assert_eq!(
            World::seqs(&world.advance_to(near_at)),
            [1],
            "its timer fired"
        );
        world.now = far_at - HORIZON_MS / 2;
        assert!(world.scan().is_empty(), "due later: now a timer");
        assert_eq!(world.shard.timers.len(), 1);
        assert_eq!(World::seqs(&world.advance_to(far_at)), [2]);
        assert!(world.reads.is_empty(), "no early scan was needed");
    }

    #[test]
    fn a_full_timer_map_leaves_retries_to_a_scan_soon() {
        let mut shard = Shard::new();
        for seq in 0..=TIMERS_MAX as u64 {
            let actions = shard.on(Event::HandedOff(job(1, seq, 5_000)), 0);
            assert!(actions.is_empty());
        }
        assert_eq!(shard.timers.len(), TIMERS_MAX);
        assert!(shard.spilled, "one left in the log though due soon");
        let actions = shard.on(Event::Tick, 1);
        assert!(
            actions.contains(&Action::ScanSoon),
            "the next tick asks for a scan soon"
        );
        assert!(
            !shard.on(Event::Tick, 2).contains(&Action::ScanSoon),
            "once"
        );
    }

    #[test]
    fn a_spilled_lane_refills_from_the_log_in_order() {
        let mut world = World::new();
        world.settings.insert(1, unordered(1));
        let total = LANE_QUEUE_MAX as u64 + 20;
        for seq in 1..=total {
            world.hand_off(1, seq);
        }
        // One in flight, a full queue, the rest in the log.
        assert_eq!(
            world.shard.spilled_lanes.get(&EndpointKey(1)),
            Some(&Seq(LANE_QUEUE_MAX as u64 + 2))
        );
        let mut order = vec![world.started.values().next().expect("one").seq.0];
        while let Some(&job) = world.started.values().next() {
            let next = world.complete(job, Some(Step::Succeeded));
            order.extend(World::seqs(&next));
        }
        assert_eq!(order, (1..=total).collect::<Vec<_>>(), "strict seq order");
        let refills = world
            .reads
            .iter()
            .filter(|r| matches!(r, Action::Refill { .. }));
        assert_eq!(refills.count(), 1, "one read refilled the lane");
        assert!(world.shard.spilled_lanes.is_empty(), "no longer spilled");
    }

    #[test]
    fn an_endpoint_disabled_mid_flight_skips_and_releases_after_the_record() {
        let mut world = World::new();
        world.settings.insert(1, unordered(1));
        let first = world.hand_off(1, 1)[0];
        world.hand_off(1, 2);
        world.hand_off(1, 3);
        // The endpoint is disabled: the attempt skips the delivery (no step).
        let attempt = world.attempt_of(first);
        let next = world.answer(attempt, None, None);
        assert_eq!(World::seqs(&next), [2], "the slot is free for the next");
        assert!(
            world.shard.known.contains(&(EndpointKey(1), Seq(1))),
            "held until the skip is durable"
        );
        let stale = (first.due_ms, 1, 1);
        world.due.insert(stale); // The skip is not durable: a scan still sees it due.
        assert!(world.scan().is_empty(), "and does not send it again");
        world.record(attempt, first, None);
        world.due.remove(&stale);
        assert!(
            !world.shard.known.contains(&(EndpointKey(1), Seq(1))),
            "released"
        );
        // Deleted meanwhile: its attempt knows no settings; the lane keeps its own.
        let attempt = world.attempt_of(next[0]);
        world.started.remove(&attempt);
        let finished = Finished {
            attempt,
            job: next[0],
            step: None,
            pause_until_ms: None,
            settings: None,
        };
        let last = world.on(Event::Answered(finished));
        assert_eq!(World::seqs(&last), [3]);
        let settings = world
            .shard
            .lanes
            .get(&EndpointKey(1))
            .map(|lane| lane.settings);
        assert_eq!(settings, Some(unordered(1)));
    }

    #[test]
    fn an_answer_may_arrive_before_or_after_its_record() {
        let mut world = World::new();
        world.settings.insert(1, unordered(2));
        let a = world.hand_off(1, 1)[0];
        let b = world.hand_off(1, 2)[0];
        let (attempt_a, attempt_b) = (world.attempt_of(a), world.attempt_of(b));
        world.answer(attempt_a, Some(Step::Succeeded), None);
        assert_eq!((world.shard.unanswered, world.shard.recording), (1, 1));
        world.record(attempt_a, a, Some(Step::Succeeded));
        assert_eq!((world.shard.unanswered, world.shard.recording), (1, 0));
        // B's task is seen to end before its answer is.
        world.record(attempt_b, b, Some(Step::Succeeded));
        assert_eq!(
            (world.shard.unanswered, world.shard.recording),
            (1, 0),
            "still in flight until its answer"
        );
        world.answer(attempt_b, Some(Step::Succeeded), None);
        assert_eq!((world.shard.unanswered, world.shard.recording), (0, 0));
        assert!(world.shard.attempts.is_empty());
        assert!(world.shard.known.is_empty());
    }

    #[test]
    fn the_shard_starts_nothing_past_its_in_flight_and_recording_bounds() {
        let mut world = World::new();
        let endpoints = 8u64;
        for endpoint_key in 1..=endpoints {
            world
                .settings
                .insert(endpoint_key, unordered(LANE_QUEUE_MAX));
            for seq in 0..LANE_QUEUE_MAX as u64 {
                world.hand_off(endpoint_key, endpoint_key * 10_000 + seq);
            }
        }
        assert_eq!(world.started.len(), SHARD_IN_FLIGHT_MAX);
        // Every answer frees a slot while fewer than the bound wait for their records.
        let answering: Vec<(u64, DueJob)> = world.started.iter().map(|(a, j)| (*a, *j)).collect();
        let mut restarted = 0;
        for &(attempt, _) in &answering {
            restarted += world.answer(attempt, Some(Step::Succeeded), None).len();
        }
        assert_eq!(world.shard.recording, SHARD_RECORDING_MAX);
        assert_eq!(
            world.shard.unanswered, restarted,
            "starts stopped at the recording bound"
        );
        assert_eq!(
            world.shard.wake_at_ms(),
            None,
            "at the bound: wait for a record, not a timer"
        );
        let (attempt, job) = answering[0];
        let started = world.record(attempt, job, Some(Step::Succeeded));
        assert_eq!(started.len(), 1, "one record, one start");
    }

    #[test]
    fn slots_freed_at_the_bound_go_to_the_lanes_held_back_longest_in_turn() {
        let mut world = World::new();
        let per_lane = 16u64;
        let full_lanes = SHARD_IN_FLIGHT_MAX as u64 / per_lane;
        let held_back = [full_lanes + 1, full_lanes + 2, full_lanes + 3];
        for endpoint_key in 1..=full_lanes + 3 {
            world.settings.insert(endpoint_key, unordered(16));
            for seq in 0..per_lane {
                world.hand_off(endpoint_key, endpoint_key * 1_000 + seq);
            }
        }
        assert_eq!(world.started.len(), SHARD_IN_FLIGHT_MAX);
        let first_lane: Vec<u64> = world
            .started
            .iter()
            .filter(|(_, job)| job.endpoint_key == EndpointKey(1))
            .map(|(attempt, _)| *attempt)
            .collect();
        // Each answer frees one slot; the held-back lanes take them in the order they
        // were held back, one each, though each could take them all.
        let mut took = Vec::new();
        for attempt in first_lane.into_iter().take(4) {
            let started = world.answer(attempt, Some(Step::Succeeded), None);
            assert_eq!(started.len(), 1, "one freed slot, one start");
            took.push(started[0].endpoint_key.0);
        }
        assert_eq!(
            took,
            [held_back[0], held_back[1], held_back[2], held_back[0]]
        );
    }

    #[test]
    fn a_retry_beyond_the_horizon_is_not_started_again_before_its_record_is_durable() {
        let mut world = World::new();
        let first = world.hand_off(1, 1)[0];
        let attempt = world.attempt_of(first);
        let retry_at = world.now + HORIZON_MS + 1_000;
        world.answer(attempt, Some(Step::RetryAt(retry_at)), None);
        assert!(
            world.shard.timers.is_empty(),
            "beyond the horizon: in the log"
        );
        // A read of the due table made before the record: the delivery still due now.
        let stale = world.on(Event::DueRows(vec![first]));
        assert!(
            stale.is_empty(),
            "not started again before its record is durable"
        );
        world.record(attempt, first, Some(Step::RetryAt(retry_at)));
        assert!(
            world.shard.known.is_empty() && world.shard.parked.is_empty(),
            "released by its record"
        );
        // After the record the log shows it due later: a scan leaves it in the log.
        assert!(world.scan().is_empty());
        assert!(world.shard.timers.is_empty());
    }
}
