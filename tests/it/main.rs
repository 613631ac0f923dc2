//! The one integration-test binary: black-box tests over real HTTP and real LMDB.

// A scenario test reads best top to bottom, as one story; splitting it hides the story.
#![allow(clippy::too_many_lines)]

mod api;
mod cli;
mod cluster;
mod crash;
mod delivery;
mod determinism;
mod egress;
mod harness;
mod hostile;
mod ingest;
mod operational;
mod ops;
mod parity;
mod poller;
mod portal;
mod receiver;
mod recovery;
mod reserve;
mod sdk;
mod secrets;
mod tidy;
mod tls;
mod upgrade;
