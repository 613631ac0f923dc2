//! One endpoint's lane: its queue of due deliveries, in-flight count and limit, pause
//! (after 429/5xx throttling) and `throttleRate` pacing. Pure state transitions; the shard
//! that owns the lane supplies the time.
//!
//! A lane outlives its queue while its pause or pacing still lies ahead (`is_idle`): a
//! receiver's `Retry-After` and the endpoint's `throttleRate` hold for the endpoint's next
//! delivery too, not only for the ones queued when they were set.

use std::collections::VecDeque;

use crate::limits::LANE_QUEUE_MAX;
use crate::log::DueJob;

/// What a lane needs to know about its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneSettings {
    /// One in flight at a time, strictly in seq order.
    pub fifo: bool,
    /// Most attempts in flight at once.
    pub in_flight_max: usize,
    /// Most attempts started per second (`throttleRate`), if limited.
    pub rate_per_sec: Option<u16>,
}

/// What the end of a lane's pause or pacing changes (`Lane::later`), at that time (ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Later {
    /// It may start an attempt: the shard wakes for it.
    Start(u64),
    /// It holds nothing else: the shard drops it at its next turn after then (no wake of
    /// its own: an idle lane is no reason to spin).
    Drop(u64),
}

/// The lane of one endpoint.
#[derive(Debug)]
pub struct Lane {
    pub settings: LaneSettings,
    queue: VecDeque<DueJob>,
    in_flight: usize,
    /// No attempt starts before this time (ms): throttled by the receiver, or a FIFO
    /// lane waiting for its head's retry.
    paused_until_ms: u64,
    /// The earliest start allowed by `rate_per_sec` (ms).
    next_start_ms: u64,
}

impl Lane {
    pub fn new(settings: LaneSettings) -> Lane {
        Lane {
            settings,
            queue: VecDeque::new(),
            in_flight: 0,
            paused_until_ms: 0,
            next_start_ms: 0,
        }
    }

    fn limit(&self) -> usize {
        if self.settings.fifo {
            1
        } else {
            self.settings.in_flight_max.max(1)
        }
    }

    /// Queues a due delivery; `false` if the lane is full (the delivery stays in the log).
    /// FIFO lanes keep their queue in seq order.
    pub fn push(&mut self, job: DueJob) -> bool {
        if self.queue.len() >= LANE_QUEUE_MAX {
            return false;
        }
        if self.settings.fifo {
            let at = self.queue.partition_point(|queued| queued.seq < job.seq);
            self.queue.insert(at, job);
        } else {
            self.queue.push_back(job);
        }
        true
    }

    /// Takes the endpoint's current settings. A lane that becomes FIFO (a new lane's
    /// settings arrive, or the endpoint was changed) puts its queue in seq order.
    pub fn set_settings(&mut self, settings: LaneSettings) {
        if settings.fifo && !self.settings.fifo {
            self.queue.make_contiguous().sort_by_key(|job| job.seq);
        }
        self.settings = settings;
    }

    /// Puts a FIFO lane's failed head back in front, to be retried at `retry_at_ms`; the
    /// lane sends nothing else until then.
    pub fn hold_head(&mut self, job: DueJob, retry_at_ms: u64) {
        self.queue.push_front(DueJob {
            due_ms: retry_at_ms,
            ..job
        });
        self.paused_until_ms = self.paused_until_ms.max(retry_at_ms);
    }

    /// Pauses the lane until `until_ms` (a receiver asked us to slow down).
    pub fn pause_until(&mut self, until_ms: u64) {
        self.paused_until_ms = self.paused_until_ms.max(until_ms);
    }

    /// How many deliveries wait in the lane's queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the lane is held back now (throttled by its receiver, or a FIFO lane
    /// waiting for its head's retry).
    pub fn paused(&self, now_ms: u64) -> bool {
        now_ms < self.paused_until_ms
    }

    /// Whether an attempt may start now.
    pub fn ready(&self, now_ms: u64) -> bool {
        !self.queue.is_empty()
            && self.in_flight < self.limit()
            && now_ms >= self.paused_until_ms
            && now_ms >= self.next_start_ms
    }

    /// Starts the next attempt: takes the head and counts it in flight.
    pub fn start(&mut self, now_ms: u64) -> Option<DueJob> {
        if !self.ready(now_ms) {
            return None;
        }
        let job = self.queue.pop_front()?;
        self.in_flight += 1;
        if let Some(rate) = self.settings.rate_per_sec.filter(|r| *r > 0) {
            self.next_start_ms = self.next_start_ms.max(now_ms) + 1000 / u64::from(rate);
        }
        assert!(
            self.in_flight <= self.limit(),
            "in flight within the lane's limit"
        );
        Some(job)
    }

    /// An attempt of this lane finished.
    pub fn finish(&mut self) {
        assert!(self.in_flight > 0, "finish without start");
        self.in_flight -= 1;
    }

    /// When the lane could start its next attempt, if it has work and room.
    pub fn wake_at(&self) -> Option<u64> {
        (!self.queue.is_empty() && self.in_flight < self.limit())
            .then(|| self.paused_until_ms.max(self.next_start_ms))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// What the end of the lane's pause or pacing will change, if it lies after `now_ms`:
    /// the lane may start then (work queued, room in flight), or it may be dropped then
    /// (idle). `None`: only an event can change what the lane may do.
    pub fn later(&self, now_ms: u64) -> Option<Later> {
        let at_ms = self.paused_until_ms.max(self.next_start_ms);
        if at_ms <= now_ms {
            None
        } else if !self.queue.is_empty() && self.in_flight < self.limit() {
            Some(Later::Start(at_ms))
        } else if self.queue.is_empty() && self.in_flight == 0 {
            Some(Later::Drop(at_ms))
        } else {
            None
        }
    }

    /// Whether the lane holds nothing that still matters at `now_ms`: no queued or
    /// in-flight delivery, no pause and no pacing still ahead. Only then can it be dropped
    /// (a new lane would start at once).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.queue.is_empty()
            && self.in_flight == 0
            && now_ms >= self.paused_until_ms
            && now_ms >= self.next_start_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{EndpointKey, Seq};

    fn job(seq: u64) -> DueJob {
        DueJob {
            endpoint_key: EndpointKey(1),
            seq: Seq(seq),
            due_ms: 0,
        }
    }

    fn settings(fifo: bool, in_flight_max: usize, rate_per_sec: Option<u16>) -> LaneSettings {
        LaneSettings {
            fifo,
            in_flight_max,
            rate_per_sec,
        }
    }

    #[test]
    fn in_flight_never_exceeds_the_limit() {
        let mut lane = Lane::new(settings(false, 2, None));
        for seq in 0..5 {
            assert!(lane.push(job(seq)));
        }
        assert_eq!(lane.start(0).map(|j| j.seq.0), Some(0));
        assert_eq!(lane.start(0).map(|j| j.seq.0), Some(1));
        assert_eq!(lane.start(0), None, "limit reached");
        lane.finish();
        assert_eq!(lane.start(0).map(|j| j.seq.0), Some(2));
        assert_eq!(lane.in_flight(), 2);
    }

    #[test]
    fn fifo_sends_one_at_a_time_in_seq_order_and_holds_a_failed_head() {
        let mut lane = Lane::new(settings(true, 16, None));
        for seq in [3, 1, 2] {
            lane.push(job(seq));
        }
        let head = lane.start(0).expect("head");
        assert_eq!(head.seq, Seq(1));
        assert_eq!(lane.start(0), None, "one in flight");
        lane.finish();
        lane.hold_head(head, 500);
        assert_eq!(lane.start(499), None, "waits for the head's retry");
        assert_eq!(lane.wake_at(), Some(500));
        assert_eq!(
            lane.start(500).map(|j| j.seq.0),
            Some(1),
            "the same head again, before 2 and 3"
        );
    }

    #[test]
    fn throttle_rate_spaces_starts_and_pause_blocks() {
        let mut lane = Lane::new(settings(false, 16, Some(4)));
        for seq in 0..3 {
            lane.push(job(seq));
        }
        assert!(lane.start(1_000).is_some());
        assert_eq!(lane.start(1_000), None, "next start in 250 ms");
        assert!(lane.start(1_250).is_some());
        lane.pause_until(5_000);
        assert_eq!(lane.start(4_999), None);
        assert!(lane.start(5_000).is_some());
    }

    #[test]
    fn pacing_outlives_the_queue() {
        // One message at a time: each start finds the lane empty again.
        let mut lane = Lane::new(settings(false, 16, Some(5)));
        lane.push(job(0));
        assert!(lane.start(1_000).is_some());
        lane.finish();
        assert!(!lane.is_idle(1_010), "the next start is 200 ms away");
        assert_eq!(lane.wake_at(), None, "nothing queued: nothing to wake for");
        lane.push(job(1));
        assert_eq!(lane.start(1_010), None, "paced");
        assert_eq!(lane.wake_at(), Some(1_200));
        assert!(lane.start(1_200).is_some());
        lane.finish();
        assert!(!lane.is_idle(1_399));
        assert!(lane.is_idle(1_400), "pacing in the past: the lane can go");
    }

    #[test]
    fn a_pause_outlives_the_queue() {
        let mut lane = Lane::new(settings(false, 16, None));
        lane.push(job(0));
        assert!(lane.start(1_000).is_some());
        lane.finish();
        lane.pause_until(6_000); // 429 with Retry-After: 5
        assert!(!lane.is_idle(2_000), "paused: kept though empty");
        assert_eq!(lane.wake_at(), None, "an empty paused lane wakes nobody");
        lane.push(job(1));
        assert_eq!(lane.start(2_000), None, "the next delivery waits too");
        assert_eq!(lane.wake_at(), Some(6_000));
        assert_eq!(lane.start(6_000).map(|j| j.seq.0), Some(1));
        lane.finish();
        assert!(lane.is_idle(6_000));
    }

    #[test]
    fn a_lane_with_work_is_never_idle() {
        let mut lane = Lane::new(settings(false, 16, None));
        assert!(lane.is_idle(0));
        lane.push(job(0));
        assert!(!lane.is_idle(u64::MAX), "queued");
        assert!(lane.start(0).is_some());
        assert!(!lane.is_idle(u64::MAX), "in flight");
        lane.finish();
        assert!(lane.is_idle(0));
    }

    #[test]
    fn a_lane_that_becomes_fifo_sorts_its_queue() {
        let mut lane = Lane::new(settings(false, 4, None));
        for seq in [3, 1, 2] {
            lane.push(job(seq));
        }
        lane.set_settings(settings(true, 4, None));
        let order: Vec<u64> = std::iter::from_fn(|| {
            let job = lane.start(0)?;
            lane.finish();
            Some(job.seq.0)
        })
        .collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_full_lane_refuses() {
        let mut lane = Lane::new(settings(false, 1, None));
        for seq in 0..LANE_QUEUE_MAX as u64 {
            assert!(lane.push(job(seq)));
        }
        assert!(!lane.push(job(u64::MAX)));
    }
}
