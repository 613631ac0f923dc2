//! Applying ops is deterministic: the same seeded sequence of every kind of op (refusals
//! included) applied to two fresh logs — one op per commit on one, batched on the other —
//! gives the same outcome for every op and byte-identical tables. And every op survives
//! its binary encoding, while garbage decodes to a typed error. Ops fed from a stream
//! (cluster mode) apply a message's batch whole and each message once.

use std::collections::BTreeSet;

use sluice::log::ops::{
    AppChanges, AppFields, AttemptRow, Change, EndpointChanges, EndpointFields, Envelope,
    EventTypeChanges, EventTypeFields, MessageApp, NewMessage, Op, OpDecodeError, Outcome,
    SourceFields,
};
use sluice::log::schema::{
    AttemptRecord, PollerTokenRecord, PortalGrant, PortalKind, ReplayFilter, Signing,
    SourceErrorRecord, TaskKind, TokenScope, Trigger, encode_json,
};
use sluice::log::tables::Step;
use sluice::log::{Log, StreamMessage};

use crate::harness::test_config;

/// A seeded xorshift64* generator: the same seed, the same ops.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(usize::try_from(self.below(items.len() as u64)).unwrap_or(0))
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

const EVENT_TYPES: [&str; 4] = ["user.created", "user.deleted", "invoice.paid", "ghost.type"];

/// What the ops so far created, learnt from their outcomes, so later ops can name it
/// (or name something that is not there, for refusals).
#[derive(Default)]
struct World {
    apps: Vec<(u64, String, Option<String>)>,
    endpoints: Vec<(u64, u64, String)>,
    messages: Vec<(u64, u64, String)>,
    tasks: Vec<u64>,
    /// Hashes of the tokens created (or tried).
    tokens: Vec<[u8; 32]>,
    /// Ingest sources: (key, id, uid).
    sources: Vec<(u64, String, Option<String>)>,
    /// Attempts as generated: (seq, id).
    attempts: Vec<(u64, String)>,
    /// Portal login codes' hashes and access links' ids, as generated.
    portal_codes: Vec<[u8; 32]>,
    portal_links: Vec<String>,
    serial: u64,
}

impl World {
    fn fresh(&mut self, prefix: &str) -> String {
        self.serial += 1;
        format!("{prefix}_{:06}", self.serial)
    }

    fn learn(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::App { app, created: true } => {
                self.apps.push((app.key, app.id.clone(), app.uid.clone()));
            }
            Outcome::Endpoint {
                endpoint,
                created: true,
            } => self
                .endpoints
                .push((endpoint.app_key, endpoint.key, endpoint.id.clone())),
            Outcome::Message { message, seq, .. } => {
                self.messages
                    .push((message.app_key, *seq, message.id.clone()));
            }
            Outcome::TaskCreated(task) => self.tasks.push(task.key),
            Outcome::Source {
                source,
                created: true,
            } => {
                self.sources
                    .push((source.key, source.id.clone(), source.uid.clone()));
                // Its application takes endpoints (the destinations) like any other.
                self.apps.push((source.key, source.id.clone(), None));
            }
            _ => {}
        }
    }
}

fn app_fields(rng: &mut Rng, world: &mut World) -> AppFields {
    let uid = match rng.below(3) {
        0 => None,
        1 => rng.pick(&world.apps).and_then(|a| a.2.clone()),
        _ => Some(world.fresh("uid")),
    };
    AppFields {
        uid,
        name: world.fresh("name"),
        throttle_rate: rng.chance(30).then(|| rng.below(100) as u16 + 1),
        metadata: [("k".to_owned(), world.fresh("v"))].into(),
    }
}

fn app_reference(rng: &mut Rng, world: &mut World) -> String {
    match rng.pick(&world.apps).cloned() {
        Some((_, id, uid)) if rng.chance(85) => uid.filter(|_| rng.chance(50)).unwrap_or(id),
        _ => world.fresh("missing"),
    }
}

fn app_key(rng: &mut Rng, world: &World) -> u64 {
    match rng.pick(&world.apps) {
        Some(app) if rng.chance(90) => app.0,
        _ => 9_999,
    }
}

fn endpoint_of(rng: &mut Rng, world: &mut World) -> (u64, String) {
    match rng.pick(&world.endpoints).cloned() {
        Some((app_key, _, id)) if rng.chance(90) => (app_key, id),
        _ => (app_key(rng, world), world.fresh("ep_missing")),
    }
}

fn event_types(rng: &mut Rng) -> Option<Vec<String>> {
    rng.chance(50).then(|| {
        let n = rng.below(3);
        (0..n)
            .map(|_| (*rng.pick(&EVENT_TYPES).expect("types")).to_owned())
            .collect()
    })
}

fn source_reference(rng: &mut Rng, world: &mut World) -> String {
    match rng.pick(&world.sources).cloned() {
        Some((_, id, uid)) if rng.chance(85) => uid.filter(|_| rng.chance(50)).unwrap_or(id),
        _ => world.fresh("src_missing"),
    }
}

fn source_key(rng: &mut Rng, world: &World) -> u64 {
    match rng.pick(&world.sources) {
        Some(source) if rng.chance(90) => source.0,
        _ => 9_998,
    }
}

fn event_type_fields(rng: &mut Rng) -> EventTypeFields {
    EventTypeFields {
        description: format!("d{}", rng.below(10)),
        archived: rng.chance(20),
        deprecated: rng.chance(20),
        schemas: rng
            .chance(60)
            .then(|| format!(r#"{{"1":{{"examples":[{{"n":{}}}]}}}}"#, rng.below(100))),
        feature_flag: rng.chance(20).then(|| "beta".to_owned()),
        group_name: rng.chance(30).then(|| "billing".to_owned()),
    }
}

/// One op of kind `kind` (an index into `Op::NAMES`).
fn op_of_kind(kind: usize, rng: &mut Rng, world: &mut World) -> Op {
    match kind {
        0 => Op::CreateApp {
            id: world.fresh("app"),
            fields: app_fields(rng, world),
            get_if_exists: rng.chance(50),
        },
        1 => Op::PutApp {
            reference: app_reference(rng, world),
            id: world.fresh("app"),
            fields: app_fields(rng, world),
        },
        2 => Op::PatchApp {
            reference: app_reference(rng, world),
            changes: AppChanges {
                name: rng.chance(50).then(|| world.fresh("name")),
                throttle_rate: if rng.chance(50) {
                    Change::Clear
                } else {
                    Change::Set(7)
                },
                uid: match rng.below(3) {
                    0 => Change::Keep,
                    1 => Change::Clear,
                    _ => Change::Set(world.fresh("uid")),
                },
                metadata: None,
            },
        },
        3 => Op::DeleteApp {
            reference: if rng.chance(20) {
                app_reference(rng, world)
            } else {
                world.fresh("missing")
            },
        },
        4..=7 => {
            let name = (*rng.pick(&EVENT_TYPES[..3]).expect("types")).to_owned();
            match kind {
                4 => Op::CreateEventType {
                    name,
                    fields: event_type_fields(rng),
                },
                5 => Op::PutEventType {
                    name,
                    fields: event_type_fields(rng),
                },
                6 => Op::PatchEventType {
                    name,
                    changes: EventTypeChanges {
                        archived: Some(rng.chance(30)),
                        schemas: Change::Set(r#"{"1":{"examples":[{"p":1}]}}"#.to_owned()),
                        group_name: if rng.chance(50) {
                            Change::Clear
                        } else {
                            Change::Set("g".to_owned())
                        },
                        ..EventTypeChanges::default()
                    },
                },
                _ => Op::DeleteEventType {
                    name,
                    expunge: rng.chance(30),
                },
            }
        }
        8 => Op::CreateEndpoint {
            app_key: app_key(rng, world),
            id: world.fresh("ep"),
            fields: Box::new(EndpointFields {
                uid: rng.chance(50).then(|| format!("e{}", rng.below(20))),
                url: "https://example.com/hook".to_owned(),
                description: String::new(),
                version: 1,
                disabled: rng.chance(10),
                throttle_rate: None,
                event_types: event_types(rng),
                channels: rng.chance(20).then(|| vec!["c1".to_owned()]),
                secret: rng.bytes(24),
                headers: [("X-A".to_owned(), "1".to_owned())].into(),
                metadata: Default::default(),
                fifo: rng.chance(20),
                signing: if rng.chance(20) {
                    Signing::StaticToken {
                        header: "X-Token".to_owned(),
                        token: "t".to_owned(),
                    }
                } else {
                    Signing::Hmac
                },
                sealed: false,
                polling_only: rng.chance(10),
            }),
        },
        9 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::UpdateEndpoint {
                app_key,
                endpoint,
                changes: Box::new(EndpointChanges {
                    disabled: Some(rng.chance(30)),
                    event_types: match event_types(rng) {
                        Some(types) => Change::Set(types),
                        None => Change::Keep,
                    },
                    uid: Change::Set(format!("e{}", rng.below(20))),
                    ..EndpointChanges::default()
                }),
            }
        }
        10 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::DeleteEndpoint { app_key, endpoint }
        }
        11 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::RotateSecret {
                app_key,
                endpoint,
                new_key: rng.bytes(24),
                grace_ms: rng.below(3) * 60_000,
            }
        }
        12 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::SetHeaders {
                app_key,
                endpoint,
                replace: rng.chance(50),
                delete: vec!["x-a".to_owned()],
                set: (0..rng.below(40))
                    .map(|i| (format!("X-H{i}"), rng.chance(90).then(|| "v".to_owned())))
                    .collect(),
            }
        }
        13 => Op::CreateMessage {
            app: if rng.chance(20) {
                // Inline: the uid may name an application already, or none yet.
                MessageApp::Inline {
                    id: world.fresh("app"),
                    fields: app_fields(rng, world),
                }
            } else {
                MessageApp::Existing(app_key(rng, world))
            },
            message: Box::new(NewMessage {
                id: world.fresh("msg"),
                event_type: (*rng.pick(&EVENT_TYPES).expect("types")).to_owned(),
                event_id: rng.chance(30).then(|| format!("evt{}", rng.below(50))),
                channels: rng.chance(30).then(|| vec!["c1".to_owned()]),
                payload: format!(r#"{{"n":{}}}"#, rng.next()).into_bytes(),
                retention_days: 1 + rng.below(90) as u16,
                tags: rng.chance(30).then(|| vec!["t1".to_owned()]),
                deliver_at_ms: rng
                    .chance(20)
                    .then(|| 1_700_000_000_000 + rng.below(10_000_000)),
            }),
            with_content: rng.chance(50),
        },
        14 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::SendExample {
                app_key,
                endpoint,
                id: world.fresh("msg"),
                event_type: if rng.chance(50) {
                    "svix.ping".to_owned()
                } else {
                    (*rng.pick(&EVENT_TYPES).expect("types")).to_owned()
                },
                example_index: rng.below(2) as u32,
            }
        }
        15 | 16 => {
            let (app_key, message) = match rng.pick(&world.messages).cloned() {
                Some((app_key, _, id)) => (app_key, id),
                None => (app_key(rng, world), world.fresh("msg_missing")),
            };
            if kind == 15 {
                Op::ExpungeContent { app_key, message }
            } else {
                let (_, endpoint) = endpoint_of(rng, world);
                Op::Resend {
                    app_key,
                    message,
                    endpoint,
                }
            }
        }
        17 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::CreateTask {
                app_key,
                endpoint,
                id: world.fresh("qtask"),
                kind: if rng.chance(50) {
                    TaskKind::Recover
                } else {
                    TaskKind::ReplayMissing
                },
                since_ms: 1_700_000_000_000,
                until_ms: 1_700_000_000_000 + rng.below(10_000_000),
            }
        }
        18 => Op::AdvanceTask {
            task_key: rng.pick(&world.tasks).copied().unwrap_or(77),
        },
        19 | 20 => {
            let endpoint_key = rng.pick(&world.endpoints).map_or(1, |e| e.1);
            let seq = rng.pick(&world.messages).map_or(1, |m| m.1);
            if kind == 20 {
                return Op::SkipDelivery { endpoint_key, seq };
            }
            let step = match rng.below(5) {
                0 => Step::Succeeded,
                1 => Step::RetryAt(1_700_000_000_000 + rng.below(100_000_000)),
                2 => Step::Exhausted,
                3 => Step::Gone,
                _ => Step::Failed,
            };
            let id = world.fresh("atmpt");
            world.attempts.push((seq, id.clone()));
            let record = AttemptRecord {
                id,
                msg_id: "msg".to_owned(),
                endpoint_id: "ep".to_owned(),
                seq,
                endpoint_key,
                app_key: 1,
                created_ms: 1_700_000_000_000,
                url: "https://example.com/hook".to_owned(),
                status_code: 200,
                outcome: "success".to_owned(),
                success: step == Step::Succeeded,
                duration_ms: rng.below(5_000),
                response: String::new(),
                trigger: Trigger::Scheduled,
            };
            Op::RecordAttempt {
                attempt: AttemptRow {
                    id: record.id.clone(),
                    seq,
                    endpoint_key,
                    success: record.success,
                    stored: encode_json(&record),
                },
                step,
                disable_after_ms: rng.below(2) * 10_000,
            }
        }
        21 => {
            let hash: [u8; 32] = rng.bytes(32).try_into().expect("32 bytes");
            world.tokens.push(hash);
            Op::CreateToken {
                hash,
                scope: match rng.pick(&world.apps) {
                    Some(app) if rng.chance(50) => TokenScope::App(app.0),
                    _ => TokenScope::Org,
                },
                name: if rng.chance(50) {
                    world.fresh("token")
                } else {
                    String::new()
                },
                expires_ms: rng
                    .chance(30)
                    .then(|| 1_700_000_000_000 + rng.below(2_000_000)),
            }
        }
        22 => Op::RetentionSweep {
            delete_before_ms: 1_700_000_000_000 + rng.below(2_000_000),
            payload_cursor: if rng.chance(50) { Some(None) } else { None },
            rows_max: 1 + rng.below(20) as u32,
        },
        23 => Op::ExpireIdempotency {
            after: None,
            rows_max: 1 + rng.below(20) as u32,
        },
        24 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::SetConsumer {
                app_key,
                endpoint,
                consumer: format!("c{}", rng.below(5)),
                seq: rng.pick(&world.messages).map_or(0, |m| m.1),
            }
        }
        25 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::SetPollerToken {
                app_key,
                endpoint,
                token: Box::new(PollerTokenRecord {
                    id: world.fresh("key"),
                    token: world.fresh("sk_poll"),
                    hash: rng.bytes(32).try_into().expect("32 bytes"),
                    created_ms: 0,
                    sealed: false,
                }),
                keep_existing: rng.chance(50),
                old_grace_ms: rng.below(3) * 60_000,
            }
        }
        26 => {
            let uid = match rng.below(3) {
                0 => None,
                1 => rng.pick(&world.sources).and_then(|s| s.2.clone()),
                _ => Some(world.fresh("srcuid")),
            };
            Op::PutSource {
                reference: rng.chance(40).then(|| source_reference(rng, world)),
                app_id: world.fresh("app"),
                source: Box::new(SourceFields {
                    id: world.fresh("src"),
                    uid,
                    name: world.fresh("name"),
                    kind: (*rng.pick(&["github", "stripe", "svix"]).expect("kinds")).to_owned(),
                    config: [("secret".to_owned(), world.fresh("s"))].into(),
                    metadata: Default::default(),
                    token: world.fresh("tok"),
                    token_hash: rng.bytes(32).try_into().expect("32 bytes"),
                    sealed: false,
                }),
            }
        }
        27 => Op::DeleteSource {
            reference: if rng.chance(20) {
                source_reference(rng, world)
            } else {
                world.fresh("src_missing")
            },
        },
        28 => Op::RotateSourceToken {
            reference: source_reference(rng, world),
            token: Box::new((
                world.fresh("tok"),
                rng.bytes(32).try_into().expect("32 bytes"),
            )),
            grace_ms: rng.below(3) * 3_600_000,
        },
        29 => Op::RecordSourceError {
            source_key: source_key(rng, world),
            error: Box::new(SourceErrorRecord {
                id: world.fresh("srcerr"),
                status: 401,
                reason: "invalid signature".to_owned(),
                headers: vec![("user-agent".to_owned(), "x".to_owned())],
                payload: "{}".to_owned(),
                created_ms: 0,
            }),
        },
        30 => Op::ReceiveMessage {
            source_key: source_key(rng, world),
            message: Box::new(NewMessage {
                id: world.fresh("msg"),
                event_type: "github".to_owned(),
                event_id: None,
                channels: None,
                payload: format!(r#"{{"n":{}}}"#, rng.next()).into_bytes(),
                retention_days: 90,
                tags: None,
                deliver_at_ms: None,
            }),
            headers: vec![("x-github-event".to_owned(), "push".to_owned())],
        },
        // A token created before, or (a refusal) one never created.
        31 => Op::RevokeToken {
            hash: match rng.pick(&world.tokens) {
                Some(hash) if rng.chance(80) => *hash,
                _ => rng.bytes(32).try_into().expect("32 bytes"),
            },
        },
        32 => Op::TouchToken {
            hash: match rng.pick(&world.tokens) {
                Some(hash) if rng.chance(80) => *hash,
                _ => rng.bytes(32).try_into().expect("32 bytes"),
            },
        },
        33 => Op::PurgeDeletedApps {
            rows_max: 1 + rng.below(50) as u32,
        },
        34 => {
            let (seq, attempt) = match rng.pick(&world.attempts).cloned() {
                Some(found) if rng.chance(90) => found,
                _ => (0, world.fresh("atmpt_missing")),
            };
            let (app_key, message) = match world.messages.iter().find(|m| m.1 == seq) {
                Some((app_key, _, id)) => (*app_key, id.clone()),
                None => (app_key(rng, world), world.fresh("msg_missing")),
            };
            Op::ExpungeAttemptContent {
                app_key,
                message,
                attempt,
            }
        }
        35 => {
            let (app_key, endpoint) = endpoint_of(rng, world);
            Op::CreateBulkReplay {
                app_key,
                endpoint,
                id: world.fresh("qtask"),
                since_ms: 1_700_000_000_000,
                until_ms: 1_700_000_000_000 + rng.below(10_000_000),
                filter: Box::new(ReplayFilter {
                    status: rng
                        .chance(50)
                        .then(|| u8::try_from(rng.below(5)).unwrap_or(0)),
                    event_types: rng
                        .chance(30)
                        .then(|| vec![(*rng.pick(&EVENT_TYPES).expect("types")).to_owned()]),
                    channel: rng.chance(20).then(|| "c1".to_owned()),
                    tag: rng.chance(20).then(|| "t1".to_owned()),
                }),
            }
        }
        // An operational endpoint: from then on, endpoint changes and attempts emit
        // operational events into its application (filtered on some event names).
        36 => Op::CreateOperationalEndpoint {
            app_id: world.fresh("app"),
            id: world.fresh("ep"),
            fields: Box::new(EndpointFields {
                uid: rng.chance(30).then(|| format!("op{}", rng.below(5))),
                url: "https://ops.example.com/hook".to_owned(),
                description: String::new(),
                version: 1,
                disabled: false,
                throttle_rate: None,
                event_types: rng.chance(50).then(|| {
                    vec![
                        "endpoint.created".to_owned(),
                        "message.attempt.exhausted".to_owned(),
                    ]
                }),
                channels: None,
                secret: rng.bytes(24),
                headers: Default::default(),
                metadata: Default::default(),
                fifo: false,
                signing: Signing::Hmac,
                sealed: false,
                polling_only: false,
            }),
        },
        // An access link; its code kept for 38, its link id and session id for 39.
        37 => {
            let (token_hash, code_hash): ([u8; 32], [u8; 32]) = (
                rng.bytes(32).try_into().expect("32 bytes"),
                rng.bytes(32).try_into().expect("32 bytes"),
            );
            world.portal_codes.push(code_hash);
            let link = world.fresh("portal");
            world.portal_links.push(link.clone());
            Op::CreatePortalAccess {
                app_key: app_key(rng, world),
                grant: Box::new(PortalGrant {
                    kind: PortalKind::Bearer,
                    link,
                    capabilities: (rng.below(64) as u8) | 1,
                    feature_flags: if rng.chance(50) {
                        vec!["beta".to_owned()]
                    } else {
                        Vec::new()
                    },
                    session_id: rng.chance(50).then(|| format!("s{}", rng.below(3))),
                }),
                token_hash,
                token_expires_ms: 1_700_000_000_000 + rng.below(4_000_000),
                code_hash,
                code_expires_ms: 1_700_000_000_000 + rng.below(4_000_000),
            }
        }
        // A code made before (used, expired or fresh), or one never made (a refusal).
        38 => Op::OpenPortalSession {
            code_hash: match rng.pick(&world.portal_codes) {
                Some(hash) if rng.chance(80) => *hash,
                _ => rng.bytes(32).try_into().expect("32 bytes"),
            },
            session_hash: rng.bytes(32).try_into().expect("32 bytes"),
            session_expires_ms: 1_700_000_000_000 + rng.below(4_000_000),
        },
        39 => Op::ExpirePortalAccess {
            app_key: app_key(rng, world),
            link: match rng.pick(&world.portal_links) {
                Some(link) if rng.chance(40) => Some(link.clone()),
                _ => None,
            },
            session_ids: rng.chance(40).then(|| vec![format!("s{}", rng.below(3))]),
            expires_ms: if rng.chance(50) {
                0
            } else {
                1_700_000_000_000 + rng.below(4_000_000)
            },
        },
        // Low enough that later creates meet it (a refusal), or back to the default.
        40 => Op::SetEndpointsPerAppMax {
            max: *rng.pick(&[0, 3, 50, 1_000]).expect("values"),
        },
        // An operator's code (org-scoped, no bearer token); 38 may open it.
        41 => {
            let code_hash: [u8; 32] = rng.bytes(32).try_into().expect("32 bytes");
            world.portal_codes.push(code_hash);
            Op::CreateOperatorAccess {
                grant: Box::new(PortalGrant {
                    kind: PortalKind::LoginCode,
                    // Half of them opened with a stored token (`RevokeApiToken` ends them).
                    link: {
                        let opened_by = rng.pick(&world.tokens).copied().filter(|_| rng.chance(50));
                        sluice::log::schema::operator_link(opened_by.as_ref(), &world.fresh(""))
                    },
                    capabilities: 63,
                    feature_flags: Vec::new(),
                    session_id: None,
                }),
                code_hash,
                code_expires_ms: 1_700_000_000_000 + rng.below(4_000_000),
            }
        }
        42 => Op::ExpireReplies {
            rows_max: 1 + rng.below(20) as u32,
        },
        // A token created before (its operator sessions go with it), or one never created.
        _ => Op::RevokeApiToken {
            hash: match rng.pick(&world.tokens) {
                Some(hash) if rng.chance(80) => *hash,
                _ => rng.bytes(32).try_into().expect("32 bytes"),
            },
        },
    }
}

fn open(dir: &std::path::Path) -> (Log, sluice::log::WriterJoin) {
    let mut config = test_config(dir);
    // The ops carry their secrets as stored; two logs are compared byte for byte, so
    // neither makes a key of its own (whose check value would differ).
    config.storage.seal_secrets = false;
    Log::open(
        dir,
        &config.storage,
        Some(sluice::api::render_reply),
        None,
        sluice::log::Upgrade::Refuse,
    )
    .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ops_make_the_same_log_whether_batched_or_not() {
    const OPS: usize = 3_000;
    const CHUNK: usize = 64;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let ((batched, writer_a), (single, writer_b)) = (open(dir_a.path()), open(dir_b.path()));
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut world = World::default();
    let mut at_ms = 1_700_000_000_000u64;
    let mut seen = BTreeSet::new();
    let mut refusals = 0;
    let mut queued = Vec::new();
    let mut expected = Vec::new();
    for i in 0..OPS {
        // Every kind once at the start, then a mix weighted toward messages and attempts.
        let kind = if i < Op::NAMES.len() {
            i
        } else if rng.chance(30) {
            [13, 19, 8][usize::try_from(rng.below(3)).unwrap_or(0)]
        } else {
            usize::try_from(rng.below(Op::NAMES.len() as u64)).unwrap_or(0)
        };
        let op = op_of_kind(kind, &mut rng, &mut world);
        seen.insert(op.name());
        // Mostly forward, sometimes a clock that went back (apply clamps it).
        at_ms = if rng.chance(5) {
            at_ms - 10_000
        } else {
            at_ms + rng.below(5_000)
        };
        let remember = rng
            .chance(10)
            .then(|| rng.bytes(32).try_into().expect("32 bytes"));
        let envelope = Envelope::new(op, at_ms).remembered(remember);

        // The binary encoding round-trips every op.
        let decoded = Envelope::decode(&envelope.encode()).expect("decodes");
        assert_eq!(decoded, envelope, "op {i} changed across encode/decode");

        queued.push(batched.submit_queued(envelope.clone()).expect("queued"));
        let outcome = single.submit(envelope).await.expect("applied");
        refusals += u64::from(matches!(outcome, Outcome::Refused(_)));
        world.learn(&outcome);
        expected.push(outcome);
        if queued.len() == CHUNK || i + 1 == OPS {
            for (q, want) in queued.drain(..).zip(expected.drain(..)) {
                assert_eq!(q.durable().await.expect("applied"), want);
            }
        }
    }
    assert_eq!(seen.len(), Op::NAMES.len(), "every kind of op was applied");
    assert!(refusals > 100, "refusals were applied too ({refusals})");
    assert!(world.messages.len() > 100, "messages were created");

    let (a, b) = (
        batched.table_digests().expect("a"),
        single.table_digests().expect("b"),
    );
    assert_eq!(a.len(), 29);
    for ((name, da), (_, db)) in a.iter().zip(&b) {
        assert_eq!(da, db, "table {name} differs");
    }
    // And the digests do see the contents: a different log digests differently.
    let empty_dir = tempfile::tempdir().expect("c");
    let (empty, writer_c) = open(empty_dir.path());
    let c = empty.table_digests().expect("c");
    assert_ne!(a, c);
    for (log, writer) in [(batched, writer_a), (single, writer_b), (empty, writer_c)] {
        drop(log);
        tokio::task::spawn_blocking(move || writer.wait())
            .await
            .expect("writer");
    }
}

/// The writer holds how many delivery rows await their index rows and counts them again
/// from the tables when it loads: a log whose writer restarts between ops indexes its
/// batches at the same places as one that ran throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_index_batches_alike_across_restarts() {
    const ENDPOINTS: usize = 48;
    const MESSAGES: usize = 1_200;
    const RESTART_EVERY: usize = 250;
    // 48 rows a message: 57,600 rows, three batches and more.
    assert!((ENDPOINTS * MESSAGES) as u64 > 3 * sluice::limits::DELIVERY_INDEX_BATCH_ROWS);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (steady, writer_a) = open(dir_a.path());
    let (mut restarted, mut writer_b) = open(dir_b.path());
    let mut rng = Rng(0x5EED_0000_0BA7_C4E5);
    let mut world = World::default();
    let mut ops = vec![op_of_kind(0, &mut rng, &mut world)];
    let mut at_ms = 1_700_000_000_000u64;
    for i in 0..1 + ENDPOINTS + MESSAGES {
        let op = if i == 0 {
            ops.pop().expect("the application")
        } else if i <= ENDPOINTS {
            // Every endpoint takes every message.
            let mut op = op_of_kind(8, &mut rng, &mut world);
            if let Op::CreateEndpoint {
                app_key, fields, ..
            } = &mut op
            {
                *app_key = world.apps[0].0;
                // Uids drawn from a few would collide.
                fields.uid = None;
                fields.event_types = None;
                fields.channels = None;
                fields.disabled = false;
                fields.polling_only = false;
            }
            op
        } else {
            Op::CreateMessage {
                app: MessageApp::Existing(world.apps[0].0),
                message: Box::new(NewMessage {
                    id: world.fresh("msg"),
                    event_type: EVENT_TYPES[0].to_owned(),
                    event_id: None,
                    channels: None,
                    payload: format!(r#"{{"n":{i}}}"#).into_bytes(),
                    retention_days: 30,
                    tags: None,
                    deliver_at_ms: None,
                }),
                with_content: false,
            }
        };
        at_ms += 1 + rng.below(50);
        let envelope = Envelope::new(op, at_ms);
        let want = steady.submit(envelope.clone()).await.expect("applied");
        world.learn(&want);
        assert_eq!(
            restarted.submit(envelope).await.expect("applied"),
            want,
            "op {i}"
        );
        if i % RESTART_EVERY == RESTART_EVERY - 1 {
            drop(restarted);
            tokio::task::spawn_blocking(move || writer_b.wait())
                .await
                .expect("writer");
            (restarted, writer_b) = open(dir_b.path());
        }
    }
    assert_eq!(world.endpoints.len(), ENDPOINTS);
    assert_eq!(world.messages.len(), MESSAGES);
    let (a, b) = (
        steady.table_digests().expect("a"),
        restarted.table_digests().expect("b"),
    );
    for ((name, da), (_, db)) in a.iter().zip(&b) {
        assert_eq!(da, db, "table {name} differs");
    }
    // The batches did run: the index is not empty.
    let empty_dir = tempfile::tempdir().expect("c");
    let (empty, writer_c) = open(empty_dir.path());
    let index_of = |digests: &[(&str, [u8; 32])]| {
        digests
            .iter()
            .find(|(name, _)| *name == "endpoint_deliveries")
            .map(|(_, digest)| *digest)
    };
    let empty_digests = empty.table_digests().expect("c");
    assert!(index_of(&a).is_some());
    assert_ne!(
        index_of(&a),
        index_of(&empty_digests),
        "no batch was indexed"
    );
    for (log, writer) in [(steady, writer_a), (restarted, writer_b), (empty, writer_c)] {
        drop(log);
        tokio::task::spawn_blocking(move || writer.wait())
            .await
            .expect("writer");
    }
}

type Applied = tokio::sync::oneshot::Receiver<Result<Outcome, sluice::log::LogError>>;

/// Hands `ops` to the writer as the stream message `seq`; where each op's outcome comes.
fn feed_only(log: &Log, seq: u64, ops: Vec<Envelope>) -> Vec<Applied> {
    let (ops, applied): (Vec<_>, Vec<_>) = ops
        .into_iter()
        .map(|envelope| {
            let (waiter, applied) = tokio::sync::oneshot::channel();
            ((envelope, Some(waiter)), applied)
        })
        .unzip();
    if log.feed(StreamMessage { seq, ops }).is_err() {
        panic!("the writer took message {seq}");
    }
    applied
}

/// Feeds `ops` as the stream message `seq` and waits until every op is applied; returns
/// their outcomes.
async fn feed(log: &Log, seq: u64, ops: Vec<Envelope>) -> Vec<Outcome> {
    let applied = feed_only(log, seq, ops);
    let mut outcomes = Vec::new();
    for applied in applied {
        outcomes.push(applied.await.expect("answered").expect("applied"));
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_message_applies_whole_and_once() {
    const MESSAGES: u64 = 200;
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let ((twice, writer_a), (once, writer_b)) = (open(dir_a.path()), open(dir_b.path()));
    let mut rng = Rng(0x5EED_1234_ABCD_0002);
    let mut world = World::default();
    let mut at_ms = 1_700_000_000_000u64;
    let mut sent: Vec<(u64, Vec<Envelope>)> = Vec::new();
    for seq in 1..=MESSAGES {
        // Batches of 1 to 16 ops, mostly messages and attempts.
        let size = 1 + rng.below(16);
        let ops: Vec<Envelope> = (0..size)
            .map(|_| {
                let kind = if rng.chance(60) {
                    [13, 19, 8][usize::try_from(rng.below(3)).unwrap_or(0)]
                } else {
                    usize::try_from(rng.below(Op::NAMES.len() as u64)).unwrap_or(0)
                };
                at_ms += rng.below(1_000);
                Envelope::new(op_of_kind(kind, &mut rng, &mut world), at_ms)
            })
            .collect();
        let outcomes = feed(&once, seq, ops.clone()).await;
        for outcome in &outcomes {
            world.learn(outcome);
        }
        assert_eq!(
            feed(&twice, seq, ops.clone()).await,
            outcomes,
            "message {seq}"
        );
        sent.push((seq, ops));
        // A consumer that reads the stream again: an earlier message, fed again, changes
        // nothing (its ops are answered as done by nobody: they are skipped).
        if rng.chance(20) {
            let (old_seq, old_ops) = &sent[usize::try_from(rng.below(seq)).unwrap_or(0)];
            feed_only(&twice, *old_seq, old_ops.clone());
        }
    }
    // One more message to each, so the re-fed ones are behind us on both.
    let last = vec![Envelope::new(Op::AdvanceTask { task_key: 1 }, at_ms + 1)];
    feed(&once, MESSAGES + 1, last.clone()).await;
    feed(&twice, MESSAGES + 1, last).await;
    assert_eq!(once.applied_seq(), MESSAGES + 1);
    assert_eq!(twice.applied_seq(), MESSAGES + 1);
    let (a, b) = (
        twice.table_digests().expect("a"),
        once.table_digests().expect("b"),
    );
    for ((name, da), (_, db)) in a.iter().zip(&b) {
        assert_eq!(da, db, "table {name} differs");
    }
    for (log, writer) in [(twice, writer_a), (once, writer_b)] {
        drop(log);
        tokio::task::spawn_blocking(move || writer.wait())
            .await
            .expect("writer");
    }
}

#[test]
fn garbage_never_decodes_into_a_panic() {
    let mut rng = Rng(0xBAD5_EED5);
    let mut world = World::default();
    let valid = Envelope::new(op_of_kind(13, &mut rng, &mut world), 5).encode();
    for len in 0..valid.len() {
        // Every truncation is an error (the last byte completes the op).
        assert!(
            Envelope::decode(&valid[..len]).is_err(),
            "a prefix of {len} bytes decoded"
        );
    }
    for _ in 0..20_000 {
        let n = usize::try_from(rng.below(64)).unwrap_or(0);
        let mut bytes = rng.bytes(n);
        if let Some(first) = bytes.first_mut() {
            *first = sluice::log::ops::OP_VERSION;
        }
        if let Ok(envelope) = Envelope::decode(&bytes) {
            assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }
    }
    assert_eq!(Envelope::decode(&[]), Err(OpDecodeError::Empty));
}

/// Remembered replies leave the log when their day is up, oldest first, in batches of
/// at most `rows_max`, from the front of `replies` (`ExpireReplies`); a key remembered
/// again keeps only its new reply, found by a lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replies_expire_oldest_first_in_bounded_batches() {
    use sluice::limits::IDEMPOTENCY_TTL_MS as TTL;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, writer) = open(dir.path());
    let t0 = 1_700_000_000_000u64;
    let remember = |n: u8, at_ms: u64| {
        let op = Op::CreateApp {
            id: format!("app_{n}_{at_ms}"),
            fields: AppFields {
                uid: None,
                name: format!("app {n}"),
                throttle_rate: None,
                metadata: std::collections::BTreeMap::new(),
            },
            get_if_exists: false,
        };
        Envelope::new(op, at_ms).remembered(Some([n; 32]))
    };
    for n in 0..7u8 {
        let at = t0 + u64::from(n) * 1_000;
        log.submit(remember(n, at)).await.expect("remembered");
    }
    assert_eq!(log.idempotency_rows().expect("rows"), (7, 0));
    let app_of = |n: u8| {
        log.read(|rtxn, dbs| sluice::log::tables::idempotency(rtxn, dbs, &[n; 32]))
            .expect("read")
            .map(|reply| String::from_utf8_lossy(&reply.body).into_owned())
    };
    assert!(app_of(3).expect("remembered").contains("\"app 3\""));
    assert_eq!(
        expire_replies(&log, t0 + TTL - 1).await,
        (0, false),
        "none is a day old"
    );
    // Four are a day old (0 to 3): a batch of three, then the one left.
    assert_eq!(expire_replies(&log, t0 + TTL + 3_500).await, (3, true));
    assert_eq!(expire_replies(&log, t0 + TTL + 3_500).await, (1, false));
    assert_eq!(log.idempotency_rows().expect("rows"), (3, 0));
    assert_eq!(app_of(3), None, "expired and deleted");
    // Key 4, remembered again (for another app), is a day old only a day after that.
    log.submit(remember(4, t0 + TTL + 3_600))
        .await
        .expect("remembered again");
    assert_eq!(log.idempotency_rows().expect("rows"), (3, 0), "replaced");
    let created = format!("\"app_4_{}\"", t0 + TTL + 3_600);
    assert!(
        app_of(4).expect("remembered").contains(&created),
        "the new reply"
    );
    assert_eq!(
        expire_replies(&log, t0 + TTL + 6_500).await,
        (2, false),
        "5 and 6, not 4"
    );
    assert_eq!(log.idempotency_rows().expect("rows"), (1, 0));
    assert_eq!(expire_replies(&log, t0 + 3 * TTL).await, (1, false));
    assert_eq!(log.idempotency_rows().expect("rows"), (0, 0));
    assert_eq!(app_of(4), None);
    drop(log);
    writer.wait();
}

/// One `ExpireReplies` batch of at most 3 rows at `at_ms`: (deleted, more).
async fn expire_replies(log: &Log, at_ms: u64) -> (u64, bool) {
    let op = Op::ExpireReplies { rows_max: 3 };
    match log.submit(Envelope::new(op, at_ms)).await.expect("applied") {
        Outcome::RepliesExpired(expired) => (expired.deleted, expired.more),
        other => panic!("{other:?}"),
    }
}
