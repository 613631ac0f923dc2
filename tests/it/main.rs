//! The one integration-test binary: black-box tests over real HTTP and real LMDB.

mod api;
mod crash;
mod harness;
mod hostile;
mod sdk;
mod tidy;
