//! The op stream's message format: one stream message carries a batch of ops, each with
//! the id its node's waiting request knows it by.
//!
//! A node publishes whatever ops its requests submitted while its earlier publishes were
//! on their way (at most `CLUSTER_BATCH_OPS_MAX` ops and `CLUSTER_BATCH_BYTES_MAX` bytes):
//! the stream's cost per message — the leader's replication, every node's consumer —
//! is paid once per batch, not once per op, as the writer's group commit pays one fsync
//! per batch. Every node applies a batch's ops in order, in one write transaction, so
//! `applied_seq` (a stream sequence) always falls between whole batches.
//!
//! Format: `BATCH_FORMAT`, then the postcard encoding of the ops. A message that starts
//! with `OP_VERSION` is one op on its own (the format before batches), whose id is the
//! message's `Nats-Msg-Id`.

use serde::{Deserialize, Serialize};

use crate::limits::CLUSTER_BATCH_OPS_MAX;
use crate::log::ops::{Envelope, OP_VERSION, OpDecodeError};

/// The first byte of a batch (an op on its own starts with `OP_VERSION`).
pub const BATCH_FORMAT: u8 = 0x81;

/// Bytes of an op id.
pub const OP_ID_BYTES: usize = 16;

/// An op id: random, given by the publishing node; its waiter finds the outcome by it.
pub type OpId = [u8; OP_ID_BYTES];

/// One op of a batch: its id and its encoding (`Envelope::encode`, made by the request
/// that submitted it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchedOp {
    pub id: OpId,
    pub op: Vec<u8>,
}

/// One op of a stream message, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamedOp {
    pub id: OpId,
    pub envelope: Envelope,
}

/// Encodes a batch (at least one op, at most `CLUSTER_BATCH_OPS_MAX`).
pub fn encode(ops: &[BatchedOp]) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    postcard::to_extend(ops, vec![BATCH_FORMAT]).expect("batches serialise")
}

/// Decodes a stream message: a batch, or an op on its own whose id is `single_id` (its
/// `Nats-Msg-Id`; `None` if it has none, and then nobody here waits for it).
pub fn decode(bytes: &[u8], single_id: Option<OpId>) -> Result<Vec<StreamedOp>, OpDecodeError> {
    match bytes.first() {
        Some(&BATCH_FORMAT) => {
            let (ops, rest) = postcard::take_from_bytes::<Vec<BatchedOp>>(&bytes[1..])
                .map_err(|e| OpDecodeError::Malformed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(OpDecodeError::TrailingBytes(rest.len()));
            }
            if ops.is_empty() || ops.len() > CLUSTER_BATCH_OPS_MAX {
                return Err(OpDecodeError::Malformed(format!(
                    "a batch of {} ops (1 to {CLUSTER_BATCH_OPS_MAX})",
                    ops.len()
                )));
            }
            ops.into_iter()
                .map(|op| {
                    Ok(StreamedOp {
                        id: op.id,
                        envelope: Envelope::decode(&op.op)?,
                    })
                })
                .collect()
        }
        Some(&OP_VERSION) => Ok(vec![StreamedOp {
            id: single_id.unwrap_or_default(),
            envelope: Envelope::decode(bytes)?,
        }]),
        Some(&other) => Err(OpDecodeError::UnknownVersion(other)),
        None => Err(OpDecodeError::Empty),
    }
}

/// An op id as the hex text of a `Nats-Msg-Id` header.
pub fn id_hex(id: &OpId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The op id a `Nats-Msg-Id` header names (`None` if it is not one).
pub fn id_from_hex(text: &str) -> Option<OpId> {
    let bytes = text.as_bytes();
    if bytes.len() != OP_ID_BYTES * 2 {
        return None;
    }
    let mut id = OpId::default();
    for (byte, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::ops::Op;

    fn envelope(n: u64) -> Envelope {
        Envelope::new(Op::AdvanceTask { task_key: n }, 1_000 + n)
    }

    fn op(n: u64) -> BatchedOp {
        BatchedOp {
            id: [n as u8; OP_ID_BYTES],
            op: envelope(n).encode(),
        }
    }

    #[test]
    fn a_batch_survives_encode_and_decode_in_order() {
        let ops: Vec<BatchedOp> = (1..=5).map(op).collect();
        let decoded: Vec<(OpId, Envelope)> = decode(&encode(&ops), None)
            .expect("decodes")
            .into_iter()
            .map(|op| (op.id, op.envelope))
            .collect();
        let expected: Vec<(OpId, Envelope)> = (1..=5)
            .map(|n| ([n as u8; OP_ID_BYTES], envelope(n)))
            .collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn an_op_on_its_own_decodes_with_its_message_id() {
        let single = op(7);
        let id = Some(single.id);
        assert_eq!(
            decode(&single.op, id),
            Ok(vec![StreamedOp {
                id: single.id,
                envelope: envelope(7)
            }])
        );
        assert_eq!(id_from_hex(&id_hex(&single.id)), Some(single.id));
        assert_eq!(id_from_hex("not hex"), None);
    }

    #[test]
    fn garbage_and_bounds_are_typed_errors() {
        assert_eq!(decode(&[], None), Err(OpDecodeError::Empty));
        assert_eq!(
            decode(&[0x7f, 1], None),
            Err(OpDecodeError::UnknownVersion(0x7f))
        );
        assert!(matches!(
            decode(&[BATCH_FORMAT, 0xff, 0xff], None),
            Err(OpDecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(&encode(&[]), None),
            Err(OpDecodeError::Malformed(_))
        ));
        let too_many: Vec<BatchedOp> = (0..=CLUSTER_BATCH_OPS_MAX as u64).map(op).collect();
        assert!(matches!(
            decode(&encode(&too_many), None),
            Err(OpDecodeError::Malformed(_))
        ));
        let garbage_op = BatchedOp {
            id: [1; OP_ID_BYTES],
            op: vec![OP_VERSION, 0xff, 0xff],
        };
        assert!(matches!(
            decode(&encode(&[garbage_op]), None),
            Err(OpDecodeError::Malformed(_))
        ));
        let mut trailing = encode(&[op(1)]);
        trailing.push(0);
        assert_eq!(
            decode(&trailing, None),
            Err(OpDecodeError::TrailingBytes(1))
        );
    }
}
