//! The log's op decoder (`sluice::log::ops::Envelope::decode`) on arbitrary bytes.
//!
//! Ops are what cluster mode ships between nodes: bytes from the network or a torn file
//! must decode to a typed error, never a panic or an unbounded allocation. Where a decode
//! succeeds, the op must survive `encode` then `decode` unchanged, so every node applies
//! the same op.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::log::ops::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(&envelope.encode()).expect("a re-encoded op decodes");
        assert_eq!(again, envelope, "an op changed across encode/decode");
    }
});
