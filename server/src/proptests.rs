//! Property tests of every decoder and parser that takes outside input
//! (issue 13): account records, instruction arguments and singleton
//! configs, `Program data:` events and the log lines they come in, seed
//! rule JSON, CEL conditions, page tokens and the other request fields,
//! and config values from the TOML file and the environment.
//!
//! Random inputs and mutated valid encodings (bytes flipped or set,
//! lengths overwritten, truncated, extended, spliced) must never panic, and
//! every decode must finish within [`BOUND`]. Inputs are bounded in size,
//! so a decode that takes longer is doing unbounded work, not being slow
//! on a loaded machine. No byte layout is written here: valid encodings
//! come from the codec's encoders, applied to values that start as a
//! decoded all-zero record (fields then set by name), so the tests follow
//! the formats when a record gains a field.
//!
//! Each property runs [`CASES`] cases (the module takes a few seconds in a
//! debug build); `PROPTEST_CASES=5000 cargo test -p
//! valence-lifecycle-server --lib proptests` runs more.

use std::{
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use proptest::prelude::*;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 128;

/// Longest time one decode or parse may take. Decodes take microseconds
/// and a CEL compile at most some 100 ms in a debug build; this catches
/// runaway work with room for a noisy shared machine.
const BOUND: Duration = Duration::from_secs(5);

/// Runs `decode`, failing the case if it takes longer than [`BOUND`].
fn timed<T>(what: &str, input: &impl Debug, decode: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = decode();
    let took = started.elapsed();
    assert!(took < BOUND, "{what} took {took:?} on {input:?}");
    out
}

// ---------------------------------------------------------------- mutation

/// One change to a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit.
    Flip(usize, u8),
    /// Set one byte.
    Set(usize, u8),
    /// Overwrite four bytes with a little-endian u32: lands on length
    /// prefixes with huge, zero or off-by-one values.
    Length(usize, u32),
    /// Keep only the first bytes (modulo length + 1).
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Remove up to this many bytes.
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let length = prop_oneof![
        Just(u32::MAX),
        Just(u32::MAX / 2),
        Just(1 << 20),
        0u32..70,
        any::<u32>()
    ];
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        (any::<usize>(), length).prop_map(|(at, v)| Mutation::Length(at, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Remove(at, n)),
    ]
}

/// Up to eight mutations.
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..8)
}

fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in mutations {
        let len = out.len();
        match m {
            Mutation::Flip(at, bit) if len > 0 => out[at % len] ^= 1 << bit,
            Mutation::Set(at, byte) if len > 0 => out[at % len] = *byte,
            Mutation::Length(at, value) if len >= 4 => {
                let at = at % (len - 3);
                out[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            Mutation::Truncate(at) => out.truncate(at % (len + 1)),
            Mutation::Extend(tail) => out.extend(tail),
            Mutation::Insert(at, bytes) => {
                let at = at % (len + 1);
                out.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(at, n) if len > 0 => {
                let at = at % len;
                out.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
    out
}

/// A text mutated as bytes, read back lossily (the text parsers take
/// `&str`).
fn mutate_text(text: &str, mutations: &[Mutation]) -> String {
    String::from_utf8_lossy(&mutate(text.as_bytes(), mutations)).into_owned()
}

fn key() -> impl Strategy<Value = [u8; 32]> {
    prop_oneof![Just([0u8; 32]), any::<[u8; 32]>()]
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z_]{0,12}", ".{0,12}", Just(String::new())]
}

// ----------------------------------------------------- records (accounts)

mod records {
    use proptest::prelude::*;

    use super::{key, label, mutate, mutations, timed, CASES};
    use crate::chain::codec::{record_discriminator, Record, RECORD_NAMES};

    /// Discriminator and zeros: a record with every field zero or empty,
    /// whatever its layout (records may be zero padded).
    fn zeros(name: &str) -> Vec<u8> {
        let mut data = record_discriminator(name).to_vec();
        data.extend([0u8; 512]);
        data
    }

    /// The all-zero record of kind `name`, decoded.
    fn zero(name: &str) -> Record {
        Record::decode(&zeros(name)).expect("an all-zero record decodes")
    }

    /// Records with their fields random: the all-zero record with fields
    /// set by name, so a field added to a record is covered (as zero)
    /// without a change here.
    fn record() -> impl Strategy<Value = Record> {
        let caps = || prop::collection::vec(label(), 0..5);
        let keys = || prop::collection::vec(key(), 0..6);
        prop_oneof![
            (key(), key(), caps(), key(), any::<i64>()).prop_map(
                |(id, owner, capabilities, hash, created_at)| {
                    let Record::AccountRequest(mut r) = zero("AccountRequest") else {
                        unreachable!("decoded under its own discriminator")
                    };
                    (r.id, r.owner, r.capabilities) = (id, owner, capabilities);
                    (r.init_state_hash, r.created_at) = (hash, created_at);
                    Record::AccountRequest(r)
                }
            ),
            (key(), key(), caps(), key(), any::<bool>(), any::<i64>()).prop_map(
                |(id, owner, capabilities, hash, is_active, created_at)| {
                    let Record::Account(mut r) = zero("Account") else {
                        unreachable!("decoded under its own discriminator")
                    };
                    (r.id, r.owner, r.capabilities) = (id, owner, capabilities);
                    (r.state_hash, r.is_active, r.created_at) = (hash, is_active, created_at);
                    Record::Account(r)
                }
            ),
            (
                (key(), key(), keys(), label()),
                (any::<bool>(), any::<u64>(), any::<i64>()),
                prop::collection::vec(any::<u8>(), 0..48)
            )
                .prop_map(
                    |((id, owner, accounts, namespace), (consumed, nonce, at), metadata)| {
                        let Record::Session(mut r) = zero("Session") else {
                            unreachable!("decoded under its own discriminator")
                        };
                        (r.id, r.owner, r.accounts, r.namespace) = (id, owner, accounts, namespace);
                        (r.is_consumed, r.nonce, r.created_at) = (consumed, nonce, at);
                        r.metadata = metadata;
                        Record::Session(r)
                    }
                ),
            (key(), keys(), any::<[u8; 32]>(), any::<i64>()).prop_map(
                |(consumed_session, created_sessions, half, consumed_at)| {
                    let Record::SessionConsumption(mut r) = zero("SessionConsumption") else {
                        unreachable!("decoded under its own discriminator")
                    };
                    (r.consumed_session, r.created_sessions) = (consumed_session, created_sessions);
                    r.transaction_signature[..32].copy_from_slice(&half);
                    r.consumed_at = consumed_at;
                    Record::SessionConsumption(r)
                }
            ),
            (
                (any::<u8>(), any::<u8>(), any::<u32>()),
                key(),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|((kind, status, version), authority, config)| {
                    let Record::SingletonState(mut r) = zero("SingletonState") else {
                        unreachable!("decoded under its own discriminator")
                    };
                    (r.kind, r.status, r.version) = (kind, status, version);
                    (r.authority, r.config) = (authority, config);
                    Record::SingletonState(r)
                }),
        ]
    }

    fn zero_seed() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(RECORD_NAMES.to_vec()).prop_map(zeros)
    }

    /// What a decode of `data` must satisfy: no panic, bounded time, and a
    /// record that decodes is canonical: its encoding is what was read,
    /// followed only by zero padding.
    fn check(data: &[u8]) {
        let decoded = timed("Record::decode", &data, || Record::decode(data));
        if let Ok(record) = decoded {
            let encoded = record.encode();
            assert!(encoded.len() <= data.len(), "{record:?}");
            assert_eq!(encoded[..], data[..encoded.len()], "{record:?}");
            assert!(data[encoded.len()..].iter().all(|b| *b == 0), "{record:?}");
        }
    }

    #[test]
    fn zero_seeds_decode_as_their_record() {
        for name in RECORD_NAMES {
            assert_eq!(zero(name).name(), name);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn records_round_trip_with_and_without_padding(record in record(), pad in 0usize..64) {
            let mut data = record.encode();
            prop_assert_eq!(Record::decode(&data), Ok(record.clone()));
            data.extend(vec![0; pad]);
            prop_assert_eq!(Record::decode(&data), Ok(record));
        }

        #[test]
        fn mutated_records_never_panic(record in record(), mutations in mutations()) {
            check(&mutate(&record.encode(), &mutations));
        }

        #[test]
        fn mutated_zero_records_never_panic(seed in zero_seed(), mutations in mutations()) {
            check(&mutate(&seed, &mutations));
        }

        #[test]
        fn arbitrary_account_data_never_panics(
            name in prop::sample::select(RECORD_NAMES.to_vec()),
            body in prop::collection::vec(any::<u8>(), 0..600),
            known in any::<bool>(),
        ) {
            let mut data = if known { record_discriminator(name).to_vec() } else { vec![] };
            data.extend(body);
            check(&data);
        }
    }
}

// ------------------------------------------- instructions and their args

mod instructions {
    use proptest::prelude::*;

    use super::{key, label, mutate, mutations, timed, CASES};
    use crate::{
        chain::codec::{discriminator, instruction_data, BundleOperationArg, SessionTemplateArg},
        singletons::{
            config::{placeholder, SingletonConfig},
            kind::{Kind, INIT_ORDER},
        },
    };

    fn templates() -> impl Strategy<Value = Vec<SessionTemplateArg>> {
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..8),
                label(),
                prop::collection::vec(any::<u8>(), 0..32),
            )
                .prop_map(|(account_indices, namespace, metadata)| {
                    SessionTemplateArg {
                        account_indices,
                        namespace,
                        metadata,
                    }
                }),
            0..4,
        )
    }

    fn operations() -> impl Strategy<Value = Vec<BundleOperationArg>> {
        prop::collection::vec(
            (key(), prop::collection::vec(any::<u8>(), 0..48)).prop_map(|(function_hash, args)| {
                BundleOperationArg {
                    function_hash,
                    args,
                }
            }),
            0..4,
        )
    }

    /// A singleton config of every kind: the placeholder, or one decoded
    /// from random bytes (whatever the layout, some decode).
    fn config() -> impl Strategy<Value = SingletonConfig> {
        (
            prop::sample::select(INIT_ORDER.to_vec()),
            prop::collection::vec(any::<u8>(), 64),
            any::<bool>(),
        )
            .prop_map(|(kind, bytes, random)| {
                let decoded = random
                    .then(|| {
                        (0..bytes.len())
                            .find_map(|n| SingletonConfig::decode(kind, &bytes[..n]).ok())
                    })
                    .flatten();
                decoded.unwrap_or_else(|| placeholder(kind))
            })
    }

    /// Decodes instruction arguments of type `T` the way the program does
    /// (discriminator, then borsh with nothing after); canonical when it
    /// decodes.
    fn check_args<T>(name: &str, data: &[u8])
    where
        T: borsh::BorshDeserialize + borsh::BorshSerialize + std::fmt::Debug,
    {
        let decoded = timed(name, &data, || {
            let (disc, args) = data.split_at_checked(8)?;
            (disc == discriminator("global", name)).then_some(())?;
            borsh::from_slice::<T>(args).ok()
        });
        if let Some(args) = decoded {
            assert_eq!(instruction_data(name, &args), data, "{args:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn instruction_args_round_trip(templates in templates(), operations in operations()) {
            let data = instruction_data("consume_session", &templates);
            prop_assert_eq!(&data[..8], &discriminator("global", "consume_session"));
            let decoded: Vec<SessionTemplateArg> = borsh::from_slice(&data[8..]).unwrap();
            prop_assert_eq!(decoded, templates);
            let data = instruction_data("execute_sync_bundle", &operations);
            let decoded: Vec<BundleOperationArg> = borsh::from_slice(&data[8..]).unwrap();
            prop_assert_eq!(decoded, operations);
        }

        #[test]
        fn mutated_instruction_data_never_panics(
            templates in templates(),
            operations in operations(),
            mutations in mutations(),
        ) {
            let data = mutate(&instruction_data("consume_session", &templates), &mutations);
            check_args::<Vec<SessionTemplateArg>>("consume_session", &data);
            let data = mutate(&instruction_data("execute_sync_bundle", &operations), &mutations);
            check_args::<Vec<BundleOperationArg>>("execute_sync_bundle", &data);
        }

        #[test]
        fn singleton_configs_round_trip_and_mutations_never_panic(
            config in config(),
            mutations in mutations(),
            other in prop::sample::select(INIT_ORDER.to_vec()),
        ) {
            let kind: Kind = config.kind();
            let decoded = SingletonConfig::decode(kind, &config.encode()).ok();
            prop_assert_eq!(decoded, Some(config.clone()));
            let parsed = SingletonConfig::from_json(kind, &config.to_json()).ok();
            prop_assert_eq!(parsed, Some(config.clone()));
            let bytes = mutate(&config.encode(), &mutations);
            let decoded = timed("SingletonConfig::decode", &bytes, || {
                SingletonConfig::decode(other, &bytes)
            });
            if let Ok(decoded) = decoded {
                prop_assert_eq!(decoded.encode(), bytes);
            }
            let text = super::mutate_text(&config.to_json(), &mutations);
            let _ = timed("SingletonConfig::from_json", &text, || {
                SingletonConfig::from_json(other, &text)
            });
        }
    }
}

// ------------------------------------------------ `Program data:` events

mod events {
    use base64::Engine as _;
    use proptest::prelude::*;

    use super::{mutate, mutations, timed, CASES};
    use crate::chain::codec::{discriminator, program_data, ChainEvent, EVENT_NAMES};

    /// The shortest valid encoding of event `name`, all fields zero: its
    /// discriminator and as many zeros as its layout needs (found by
    /// decoding, since events allow no trailing bytes).
    fn zero_event(name: &str) -> Vec<u8> {
        let mut data = discriminator("event", name).to_vec();
        for _ in 0..1024 {
            if ChainEvent::decode(&data).is_ok() {
                return data;
            }
            data.push(0);
        }
        panic!("no all-zero encoding of {name} up to 1 KiB");
    }

    fn seed() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(EVENT_NAMES.to_vec()).prop_map(zero_event)
    }

    /// No panic, bounded time; a decoded event (other than those the
    /// codec only names) is canonical: its encoding is what was read.
    fn check(data: &[u8]) {
        let decoded = timed("ChainEvent::decode", &data, || ChainEvent::decode(data));
        match decoded {
            Ok(ChainEvent::Other(_)) | Err(_) => {}
            Ok(event) => assert_eq!(event.encode(), data, "{event:?}"),
        }
    }

    /// A log line of a transaction: invoke / success / failed lines of our
    /// program or another, data lines (ours, mutated, or not base64) and
    /// anything else.
    fn log_line(ours: &'static str) -> impl Strategy<Value = String> {
        let program = move || {
            prop_oneof![
                Just(ours.to_string()),
                Just("Other222".to_string()),
                "[A-Za-z0-9]{0,8}"
            ]
        };
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        prop_oneof![
            (program(), 1u8..5).prop_map(|(p, d)| format!("Program {p} invoke [{d}]")),
            program().prop_map(|p| format!("Program {p} success")),
            program().prop_map(|p| format!("Program {p} failed: custom program error: 0x1")),
            (seed(), mutations())
                .prop_map(move |(e, m)| format!("Program data: {}", b64(&mutate(&e, &m)))),
            "Program data: .{0,40}",
            "Program (log|consumed|return): .{0,40}",
            ".{0,60}",
        ]
    }

    #[test]
    fn every_event_has_a_zero_encoding() {
        for name in EVENT_NAMES {
            let data = zero_event(name);
            assert!(ChainEvent::decode(&data).is_ok(), "{name}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn mutated_events_never_panic(seed in seed(), mutations in mutations()) {
            check(&mutate(&seed, &mutations));
        }

        #[test]
        fn arbitrary_event_data_never_panics(
            name in prop::sample::select(EVENT_NAMES.to_vec()),
            body in prop::collection::vec(any::<u8>(), 0..300),
            known in any::<bool>(),
        ) {
            let mut data = if known { discriminator("event", name).to_vec() } else { vec![] };
            data.extend(body);
            check(&data);
        }

        #[test]
        fn log_lines_never_panic(logs in prop::collection::vec(log_line("Shard111"), 0..24)) {
            let payloads = timed("program_data", &logs, || program_data(&logs, "Shard111"));
            for data in payloads {
                check(&data);
            }
        }

        #[test]
        fn our_payloads_are_found_in_order_among_other_programs(
            events in prop::collection::vec((seed(), mutations()), 0..6),
            noise in prop::collection::vec(any::<bool>(), 0..6),
        ) {
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            let payloads: Vec<Vec<u8>> = events.iter().map(|(e, m)| mutate(e, m)).collect();
            let mut logs = vec!["Program Shard111 invoke [1]".to_string()];
            for (i, data) in payloads.iter().enumerate() {
                if noise.get(i).copied().unwrap_or(false) {
                    logs.push("Program Other222 invoke [2]".into());
                    logs.push(format!("Program data: {}", b64(b"not ours")));
                    logs.push("Program Other222 success".into());
                }
                logs.push(format!("Program data: {}", b64(data)));
            }
            logs.push("Program Shard111 success".into());
            prop_assert_eq!(program_data(&logs, "Shard111"), payloads);
        }
    }
}

// ------------------------------------------------------- seed rule JSON

mod seed_rules {
    use proptest::prelude::*;
    use valence_lifecycle_api::{rule_json::SeedRule, v1::ProgressionRule};

    use super::{mutate_text, mutations, timed, CASES};
    use crate::orchestrator::{engine::CompiledRule, rules::validate_rule};

    /// Valid rule bodies of every condition and action shape.
    const BODIES: [&str; 5] = [
        r#"{"id":"rule-1","name":"Auto-consume idle sessions","condition":{"SessionIdleFor":300},"action":{"ConsumeAndCreate":[{"account_indices":[0,1],"namespace":"recycled","metadata":[]}]},"enabled":true}"#,
        r#"{"id":"r.2","name":"vote","condition":{"AllAccountsHaveCapability":"vote"},"action":{"ExecuteBundle":{"operations":[{"function_hash":"0101010101010101010101010101010101010101010101010101010101010101","args_template":"{\"session\":\"{{session_id}}\"}"}]}}}"#,
        r#"{"id":"r-3","name":"hash","condition":{"StateHashMatches":"0202020202020202020202020202020202020202020202020202020202020202"},"action":{"NotifyWebhook":"https://example.com/hook"},"enabled":false}"#,
        r#"{"id":"r4","name":"bytes","condition":{"StateHashMatches":[3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3,3]},"action":{"NotifyWebhook":"http://127.0.0.1:9/x"}}"#,
        r#"{"id":"r5","name":"cel","condition":{"CustomPredicate":"session.namespace == 'games' && accounts.all(a, 'transfer' in a.capabilities) && idle_seconds > 600"},"action":{"ConsumeAndCreate":[{"account_indices":[1],"namespace":"next"}]}}"#,
    ];

    /// JSON values to put where a value was: other types, out-of-range
    /// numbers, deep nesting.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551616".to_string()),
            Just("1e400".to_string()),
            Just("\"\\u0000\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            (1usize..300).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
            any::<i64>().prop_map(|n| n.to_string()),
            "\"[^\"\\\\]{0,20}\"",
            Just("{}".to_string()),
            Just("[]".to_string()),
        ]
    }

    /// Replaces the `n`th value after a `:` in `body` (modulo their count).
    fn replace_value(body: &str, n: usize, value: &str) -> String {
        let colons: Vec<usize> = body.match_indices(':').map(|(i, _)| i + 1).collect();
        let Some(start) = colons.get(n % colons.len().max(1)).copied() else {
            return body.to_string();
        };
        let end = body[start..]
            .find([',', '}', ']'])
            .map_or(body.len(), |i| start + i);
        format!("{}{value}{}", &body[..start], &body[end..])
    }

    /// The gateway's parse and the service's checks: the body as seed
    /// JSON, then validation; a rule that validates must compile.
    fn check(body: &[u8]) {
        let parsed = timed("seed rule JSON", &String::from_utf8_lossy(body), || {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde_path_to_error::deserialize::<_, SeedRule>(&mut de)
        });
        let Ok(seed) = parsed else { return };
        let rule = ProgressionRule::from(seed);
        let as_seed = SeedRule::try_from(&rule).expect("a rule from seed JSON converts back");
        assert_eq!(
            ProgressionRule::from(as_seed),
            rule,
            "the round trip keeps the rule"
        );
        let valid = timed("validate_rule", &rule, || validate_rule(&rule, 32));
        if valid.is_ok() {
            let compiled = timed("CompiledRule::new", &rule, || {
                CompiledRule::new(rule.clone())
            });
            assert!(compiled.is_ok(), "a valid rule compiles: {rule:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn valid_bodies_round_trip(body in prop::sample::select(BODIES.to_vec())) {
            let seed: SeedRule = serde_json::from_str(body).unwrap();
            let text = serde_json::to_string(&seed).unwrap();
            let again: SeedRule = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&again, &seed);
            prop_assert!(validate_rule(&seed.into(), 32).is_ok());
        }

        #[test]
        fn mutated_bodies_never_panic(
            body in prop::sample::select(BODIES.to_vec()),
            mutations in mutations(),
        ) {
            check(mutate_text(body, &mutations).as_bytes());
        }

        #[test]
        fn bodies_with_odd_values_never_panic(
            body in prop::sample::select(BODIES.to_vec()),
            at in any::<usize>(),
            value in value(),
        ) {
            check(replace_value(body, at, &value).as_bytes());
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
            check(&body);
        }
    }
}

// --------------------------------------------------------- CEL conditions

mod cel_conditions {
    use proptest::prelude::*;

    use super::{mutate_text, mutations, timed, Arc, CASES};
    use crate::{
        orchestrator::conditions::{aggregate_hash, compile_cel, Condition, View, MAX_CEL_BYTES},
        store::{AccountFacts, LiveSession},
    };

    /// Predicates of the README and the tests.
    const VALID: &[&str] = &[
        "session.namespace == 'games' && accounts.all(a, 'transfer' in a.capabilities) \
         && idle_seconds > 600",
        "session.account_count == 2 && size(accounts) == 2",
        "accounts.exists(a, 'y' in a.capabilities)",
        "idle_seconds >= 10 && now == 2010",
        "session.metadata == b'\\x01\\x02'",
        "size(session.state_hash) == 64 || session.nonce % 2 == 1",
        "session.namespace.matches('^g[a-z]+$') ? true : size(accounts.filter(a, a.is_active)) > 1",
        "size([1, 2.5, 'x', {'k': [true]}].map(v, [v])) == 4 && r'''raw\\''' != \"\"",
    ];

    /// Tokens of the language, so random sequences get past the lexer.
    const TOKENS: &[&str] = &[
        "session",
        "accounts",
        "idle_seconds",
        "now",
        "a",
        "x",
        ".",
        ".namespace",
        ".capabilities",
        ".all(",
        ".exists(",
        ".map(",
        ".filter(",
        "size(",
        "has(",
        "int(",
        "string(",
        "matches(",
        "timestamp(",
        "duration(",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        "?",
        "!",
        "-",
        "+",
        "*",
        "/",
        "%",
        "==",
        "!=",
        "<",
        "<=",
        ">=",
        "&&",
        "||",
        " in ",
        "1",
        "0",
        "-9223372036854775808",
        "18446744073709551615u",
        "1.5e308",
        "'s'",
        "\"\\u0041\"",
        "b'\\xff'",
        "r'\\'",
        "true",
        "null",
        "'''a'''",
        "// c\n",
    ];

    fn token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 0..200)
            .prop_map(|tokens| tokens.concat())
    }

    /// Well-formed expressions of random shape over the variables, the
    /// literals at their edges, the operators and the standard functions
    /// and macros: they get past the parser and exercise evaluation.
    fn expression() -> impl Strategy<Value = String> {
        let leaf = prop::sample::select(vec![
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "0u",
            "18446744073709551615u",
            "1.5",
            "-0.0",
            "1e308",
            "'s'",
            "''",
            "b'\\xff'",
            "true",
            "false",
            "null",
            "[]",
            "{}",
            "session",
            "accounts",
            "idle_seconds",
            "now",
            "session.namespace",
            "session.nonce",
            "session.metadata",
            "session.state_hash",
            "accounts[0]",
            "accounts[0].capabilities",
            "accounts[1].is_active",
            "session.missing",
            "duration('1s')",
            "timestamp('2024-01-01T00:00:00Z')",
        ])
        .prop_map(str::to_string);
        leaf.prop_recursive(6, 48, 4, |inner| {
            let binary = prop::sample::select(vec![
                "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in",
            ]);
            let unary = prop::sample::select(vec!["!", "-"]);
            let function = prop::sample::select(vec![
                "size", "int", "uint", "double", "string", "bytes", "type", "dyn",
            ]);
            let method = prop::sample::select(vec![
                "startsWith",
                "endsWith",
                "contains",
                "matches",
                "size",
            ]);
            let comprehension =
                prop::sample::select(vec!["all", "exists", "exists_one", "map", "filter"]);
            prop_oneof![
                (inner.clone(), binary, inner.clone())
                    .prop_map(|(l, op, r)| format!("({l} {op} {r})")),
                (unary, inner.clone()).prop_map(|(op, e)| format!("{op}({e})")),
                (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(c, t, f)| format!("({c} ? {t} : {f})")),
                (function, inner.clone()).prop_map(|(f, e)| format!("{f}({e})")),
                (inner.clone(), method, inner.clone())
                    .prop_map(|(t, m, a)| format!("({t}).{m}({a})")),
                (inner.clone(), comprehension, inner.clone())
                    .prop_map(|(range, m, body)| format!("({range}).{m}(x, {body})")),
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(", "))),
                prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(|v| {
                    let entries: Vec<String> = v.iter().map(|(k, e)| format!("{k}: {e}")).collect();
                    format!("{{{}}}", entries.join(", "))
                }),
                (inner.clone(), inner.clone()).prop_map(|(e, i)| format!("({e})[{i}]")),
                inner.clone().prop_map(|e| format!("has(({e}).x)")),
                inner.prop_map(|e| format!("({e}).namespace")),
            ]
        })
    }

    /// Deep or long inputs around the limits.
    fn extreme() -> impl Strategy<Value = String> {
        let open = prop::sample::select(vec![
            "(",
            "[",
            "{1:",
            "int(",
            "!",
            "-",
            "true ? 1 : ",
            "[1].all(x,",
        ]);
        let link = prop::sample::select(vec!["+1", ".a", "[0]", ".f()", " && true", "==1"]);
        prop_oneof![
            (open, 0usize..120).prop_map(|(o, n)| format!("{}1", o.repeat(n))),
            (link, 0usize..2100).prop_map(|(l, n)| format!("1{}", l.repeat(n))),
            (MAX_CEL_BYTES - 8..MAX_CEL_BYTES + 8)
                .prop_map(|n| format!("'{}' == ''", "x".repeat(n))),
        ]
    }

    fn sample_view_holds(condition: &Condition) -> bool {
        let session = LiveSession {
            id: "S".into(),
            owner: "O".into(),
            accounts: vec!["A0".into(), "A1".into()],
            namespace: "games".into(),
            nonce: 3,
            created_at_ms: 1_000_000,
            last_activity_ms: 2_000_000,
            metadata: vec![1, 2],
        };
        let accounts = [
            Some(AccountFacts {
                id: "A0".into(),
                owner: "O".into(),
                capabilities: vec!["transfer".into()],
                state_hash: "01".repeat(32),
                is_active: true,
            }),
            None,
        ];
        let aggregate = aggregate_hash(&accounts);
        let view = View {
            session: &session,
            accounts: &accounts,
            aggregate,
            cel: &std::sync::OnceLock::new(),
            now_ms: 2_010_000,
        };
        condition.holds(&view, &Arc::new(cel::Env::stdlib()))
    }

    /// No panic (a parser panic is caught and reported as such: that
    /// counts), bounded time; a predicate that compiles evaluates on the
    /// test thread's ordinary stack without panicking.
    fn check(expr: &str) {
        let compiled = timed("compile_cel", &expr, || compile_cel(expr));
        match compiled {
            Err(e) => assert!(!e.contains("parser failed"), "{e}"),
            Ok(predicate) => {
                let condition = Condition::Cel(Box::new(predicate));
                timed("Condition::holds", &expr, || sample_view_holds(&condition));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn valid_predicates_compile_and_mutations_never_panic(
            expr in prop::sample::select(VALID.to_vec()),
            mutations in mutations(),
        ) {
            prop_assert!(compile_cel(expr).is_ok(), "{}", expr);
            check(&mutate_text(expr, &mutations));
        }

        #[test]
        fn token_soup_never_panics(expr in token_soup()) {
            check(&expr);
        }

        #[test]
        fn generated_predicates_never_panic(expr in expression()) {
            check(&expr);
        }

        #[test]
        fn deep_and_long_predicates_never_panic(expr in extreme()) {
            check(&expr);
        }

        #[test]
        fn arbitrary_text_never_panics(expr in ".{0,300}") {
            check(&expr);
        }
    }
}

// ----------------------------------------- page tokens and request fields

mod request_fields {
    use proptest::prelude::*;

    use super::{timed, CASES};
    use crate::{
        service::paging::{self, Listing, PageParams, PageRequest},
        store::CreatedKey,
        validate::{self, MAX_PAGE_SIZE},
    };

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just(format!("{}0", u64::MAX)),
            "[+-]?[0-9]{0,25}",
            "[A-Za-z0-9_-]{0,300}",
            ".{0,30}",
        ]
    }

    /// An issued token with one byte of its text changed, cut or grown.
    fn mutated_token() -> impl Strategy<Value = String> {
        (
            any::<i64>(),
            "[1-9A-HJ-NP-Za-km-z]{32,44}",
            any::<usize>(),
            any::<char>(),
            0..3u8,
        )
            .prop_map(|(ms, id, at, c, how)| {
                let listing = Listing::new("ListAccounts", &[""]);
                let mut token = paging::encode(
                    listing,
                    &CreatedKey {
                        created_at_ms: ms,
                        id,
                    },
                );
                let at = at % token.len();
                match how {
                    0 => token.truncate(at),
                    1 => token.insert(at, c),
                    _ => {
                        token.remove(at);
                        token.insert(at, c);
                    }
                }
                token
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn page_tokens_never_panic_and_errors_name_the_field(
            token in prop_oneof![token(), mutated_token()],
            size in any::<i32>(),
        ) {
            let listing = Listing::new("ListAccounts", &[""]);
            let page = PageParams { page_size: size, page_token: token.clone() };
            match timed("page_token", &token, || PageRequest::<CreatedKey>::parse(&page, listing)) {
                Ok(request) => prop_assert!((1..=MAX_PAGE_SIZE).contains(&request.limit)),
                Err(e) => {
                    let e = e.to_string();
                    prop_assert!(e.contains("page_token") || e.contains("page_size"), "{}", e);
                }
            }
            if let Ok(n) = validate::page_size("page_size", size) {
                prop_assert!((1..=MAX_PAGE_SIZE).contains(&n));
            }
        }

        #[test]
        fn issued_page_tokens_read_back_for_their_filter_only(
            ms in any::<i64>(),
            id in "[^\\x00]{1,32}",
            owner in ".{0,50}",
            other in ".{0,50}",
        ) {
            let key = CreatedKey { created_at_ms: ms, id };
            let listing = Listing::new("ListAccounts", &[&owner]);
            let token = paging::encode(listing, &key);
            prop_assert_eq!(paging::decode(listing, &token).unwrap(), Some(key));
            if other != owner {
                let foreign = Listing::new("ListAccounts", &[&other]);
                prop_assert!(paging::decode::<CreatedKey>(foreign, &token).is_err());
            }
        }

        #[test]
        fn other_request_fields_never_panic(value in ".{0,80}", sequence in any::<u64>()) {
            let _ = validate::pubkey("owner", &value);
            let _ = validate::hash_hex("hash", &value);
            let _ = validate::identifier("id", &value, 128);
            prop_assert_eq!(validate::text("namespace", &value).is_ok(), !value.contains('\0'));
            let in_range = sequence <= i64::MAX as u64;
            prop_assert_eq!(validate::sequence("after_sequence", sequence).is_ok(), in_range);
        }
    }
}

// --------------------------------------------------------- config values

mod config_values {
    use std::path::Path;

    use figment::{providers::Serialized, Figment};
    use proptest::prelude::*;

    use super::{mutate_text, mutations, timed};
    use crate::config::{env::check_value, Config};

    /// Every key of the config as a dotted path (what
    /// `VALENCE_LIFECYCLE_<SECTION>__<KEY>` sets), from the defaults.
    fn leaf_paths() -> Vec<String> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&path, v, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        let mut out = Vec::new();
        walk(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut out,
        );
        out
    }

    /// Values as an environment variable or a TOML value may hold them.
    fn raw_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("-1".to_string()),
            Just("0".to_string()),
            Just("65536".to_string()),
            Just("18446744073709551616".to_string()),
            Just("1e309".to_string()),
            Just("NaN".to_string()),
            Just("true".to_string()),
            Just("[1, \"a\"".to_string()),
            Just("{a = 1}".to_string()),
            // Deeper than figment's recursive parser takes (the check
            // before it refuses these).
            (1usize..5000, prop::sample::select(vec!["[", "{a=", " ["]))
                .prop_map(|(n, open)| format!("{}1", open.repeat(n))),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            ".{0,40}",
        ]
    }

    /// `text` with the key at `path` (`section.key`) set to `value` as
    /// written: in place when the file has it, else added to its section.
    fn set_value(text: &str, path: &str, value: &str) -> String {
        let (section, key) = path.split_once('.').unwrap_or(("", path));
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let header = format!("[{section}]");
        let Some(start) = lines.iter().position(|l| l.trim() == header) else {
            return format!("{text}\n{header}\n{key} = {value}\n");
        };
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.starts_with('['))
            .map_or(lines.len(), |i| start + 1 + i);
        let assignment = format!("{key} = {value}");
        let prefix = format!("{key} =");
        match (start + 1..end).find(|i| lines[*i].starts_with(&prefix)) {
            Some(i) => lines[i] = assignment,
            None => lines.insert(start + 1, assignment),
        }
        lines.join("\n")
    }

    /// Loads `overrides` over the defaults the way the server does, from
    /// no file (the environment merged in is the test process's).
    fn load(
        what: &str,
        input: &impl std::fmt::Debug,
        file: &Path,
        explicit: bool,
        overrides: Figment,
    ) {
        let _ = timed(what, input, || Config::load(file, explicit, overrides));
    }

    proptest! {
        // Each case reads a file and extracts the whole config: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(super::CASES / 2))]

        #[test]
        fn env_values_never_panic(
            path in prop::sample::select(leaf_paths()),
            value in raw_value(),
        ) {
            // Checked as Config::load checks our variables, then parsed
            // as figment's environment provider parses one.
            let name = format!("VALENCE_LIFECYCLE_{}", path.replace('.', "__").to_uppercase());
            if check_value(&name, &value).is_ok() {
                let parsed: figment::value::Value =
                    timed("env value", &value, || value.parse().expect("infallible"));
                let overrides = Figment::from(Serialized::default(&path, parsed));
                let no_file = Path::new("/nonexistent/config.toml");
                load("env value", &(&path, &value), no_file, false, overrides);
            }
        }

        #[test]
        fn toml_files_never_panic(
            mutations in mutations(),
            edits in prop::collection::vec((prop::sample::select(leaf_paths()), raw_value()), 0..4),
        ) {
            let mut text = Config::default().to_toml_redacted().unwrap();
            for (path, value) in &edits {
                text = set_value(&text, path, value);
            }
            let text = mutate_text(&text, &mutations);
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("config.toml");
            std::fs::write(&file, &text).unwrap();
            load("config.toml", &text, &file, true, Figment::new());
        }
    }
}
