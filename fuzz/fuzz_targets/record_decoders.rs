//! Every stored-record decoder of `sluice::log::schema` on arbitrary bytes.
//!
//! A record read back from LMDB may be torn, from another build or simply corrupt; the
//! decoders must answer `Err(LogError::Corrupt)`, never panic. Where a decode succeeds, the
//! record must survive `encode` then `decode` unchanged, because records are read, changed
//! and written back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::log::schema::{
    AppRecord, DeliveryRecord, EndpointRecord, EventTypeRecord, IdempotencyRecord,
    MessageRecord, TaskRecord, TokenRecord, db_name, decode_json, encode_json,
};

fuzz_target!(|data: &[u8]| {
    // Binary records.
    if let Ok(message) = MessageRecord::decode(data) {
        let again = MessageRecord::decode(&message.encode())
            .expect("a re-encoded MessageRecord decodes");
        assert_eq!(again, message, "MessageRecord changed across encode/decode");
    }
    if let Ok(delivery) = DeliveryRecord::decode(data) {
        // The layout is fixed-size with no spare bits: decoding is a bijection.
        assert_eq!(delivery.encode().as_slice(), data, "DeliveryRecord re-encodes differently");
    }
    if let Ok(idempotency) = IdempotencyRecord::decode(data) {
        assert_eq!(idempotency.encode(), data, "IdempotencyRecord re-encodes differently");
    }

    // Management records (version byte + JSON). Round trips are checked for the records
    // with no floating-point fields; `EventTypeRecord::schemas` holds arbitrary JSON whose
    // floats serde_json does not promise to round-trip bit for bit, so it is only decoded.
    if let Ok(app) = decode_json::<AppRecord>(db_name::APPS, data) {
        let again: AppRecord = decode_json(db_name::APPS, &encode_json(&app))
            .expect("a re-encoded AppRecord decodes");
        assert_eq!(again, app);
    }
    if let Ok(endpoint) = decode_json::<EndpointRecord>(db_name::ENDPOINTS, data) {
        let again: EndpointRecord = decode_json(db_name::ENDPOINTS, &encode_json(&endpoint))
            .expect("a re-encoded EndpointRecord decodes");
        assert_eq!(again, endpoint);
    }
    let _ = decode_json::<EventTypeRecord>(db_name::EVENT_TYPES, data);
    if let Ok(task) = decode_json::<TaskRecord>(db_name::TASKS, data) {
        let again: TaskRecord = decode_json(db_name::TASKS, &encode_json(&task))
            .expect("a re-encoded TaskRecord decodes");
        assert_eq!(again, task);
    }
    if let Ok(token) = decode_json::<TokenRecord>(db_name::TOKENS, data) {
        let again: TokenRecord = decode_json(db_name::TOKENS, &encode_json(&token))
            .expect("a re-encoded TokenRecord decodes");
        assert_eq!(again, token);
    }
});
