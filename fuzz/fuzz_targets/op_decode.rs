//! The log's op decoder (`sluice::log::ops::Envelope::decode`) and the op stream's
//! message decoder (`sluice::cluster::batch::decode`, a batch of ops) on arbitrary bytes.
//!
//! Ops are what cluster mode ships between nodes: bytes from the network or a torn file
//! must decode to a typed error, never a panic or an unbounded allocation. Where a decode
//! succeeds, the op must survive `encode` then `decode` unchanged, so every node applies
//! the same op.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::cluster::batch;
use sluice::log::ops::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        let again = Envelope::decode(&envelope.encode()).expect("a re-encoded op decodes");
        assert_eq!(again, envelope, "an op changed across encode/decode");
    }
    if let Ok(ops) = batch::decode(data, None) {
        let encoded: Vec<batch::BatchedOp> = ops
            .iter()
            .map(|op| batch::BatchedOp {
                id: op.id,
                op: op.envelope.encode(),
            })
            .collect();
        let again = batch::decode(&batch::encode(&encoded), None).expect("a re-encoded batch decodes");
        assert_eq!(again, ops, "a batch changed across encode/decode");
    }
});
