//! Delivery: turning committed deliveries into signed HTTP attempts, retries and records.
//!
//! `engine` runs the shards' tasks, each driving a pure `shard` state machine and its
//! lanes (`lane`), and the one `scan` of the `due` table for them all; `attempt` runs one attempt through the `client` transport under the
//! destination `policy`; `classify` and `schedule` are the pure decisions.

pub mod attempt;
pub mod classify;
pub mod client;
pub mod engine;
pub mod lane;
pub mod policy;
pub mod scan;
pub mod schedule;
pub mod shard;
