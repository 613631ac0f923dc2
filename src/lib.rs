//! Sluice: a self-hosted, single-binary webhook delivery appliance.
//!
//! Start with `ARCHITECTURE.md` at the repository root: it has the bird's-eye view, the
//! code map and the invariants. Modules are listed here in reading order.

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod heartbeat;
pub mod ids;
pub mod limits;
pub mod live;
pub mod log;
pub mod portal;
pub mod service;
pub mod signing;
pub mod sweeper;
pub mod tasks;
pub mod telemetry;
pub mod text;
pub mod verify;
