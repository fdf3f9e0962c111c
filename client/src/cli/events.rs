//! `events list` and `events watch`.

use std::marker::PhantomData;

use clap::{ArgGroup, Args, Subcommand};
use futures::StreamExt;
use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::Value;
use valence_lifecycle_api::v1::{self, StartPosition};
use valence_lifecycle_client::{Backoff, ClientError, SubscriptionItem};

use super::{
    args::enum_value,
    output::{self, Table},
    Context,
};

/// Longest payload summary shown, so one event stays one terminal line.
const SUMMARY_WIDTH: usize = 120;

/// `events` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// List stored events: newest first, or oldest first after a sequence.
    List(ListArgs),
    /// Follow the log live until Ctrl-C, reconnecting and resuming on its own.
    Watch(WatchArgs),
}

/// Flags of `events list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Maximum events (server default 100, at most 1000).
    #[arg(long, value_name = "N")]
    limit: Option<u32>,
    /// Events to skip, newest first.
    #[arg(long, value_name = "N", conflicts_with = "after")]
    offset: Option<u64>,
    /// Only this event type (e.g. session_created).
    #[arg(long = "type", value_name = "TYPE", value_parser = enum_value::<v1::EventType>)]
    event_type: Option<i32>,
    /// Only events after this sequence, oldest first.
    #[arg(long, value_name = "SEQUENCE")]
    after: Option<u64>,
    /// Only events about this entity.
    #[arg(long, value_name = "ID")]
    entity: Option<String>,
    /// Only events of this shard program (its id or configured name).
    #[arg(long, value_name = "SHARD")]
    shard: Option<String>,
}

/// Flags of `events watch`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start").args(["from", "oldest"])))]
pub(crate) struct WatchArgs {
    /// Only these event types (repeatable).
    #[arg(long = "type", value_name = "TYPE", value_parser = enum_value::<v1::EventType>)]
    event_types: Vec<i32>,
    /// Only events about these entities (repeatable).
    #[arg(long = "entity", value_name = "ID")]
    entities: Vec<String>,
    /// Only events in these namespaces (repeatable).
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Only events of this shard program (its id or configured name).
    #[arg(long, value_name = "SHARD")]
    shard: Option<String>,
    /// Start at this sequence (inclusive) instead of at new events.
    #[arg(long, value_name = "SEQUENCE")]
    from: Option<u64>,
    /// Start at the oldest retained event instead of at new events.
    #[arg(long)]
    oldest: bool,
    /// Seconds between server heartbeats (server default 15).
    #[arg(long, value_name = "SECONDS")]
    heartbeat: Option<u32>,
}

impl WatchArgs {
    /// The Subscribe request these flags describe.
    fn request(&self) -> v1::SubscribeRequest {
        let start = match (self.from, self.oldest) {
            (Some(_), _) => StartPosition::FromSequence,
            (None, true) => StartPosition::Oldest,
            (None, false) => StartPosition::Now,
        };
        v1::SubscribeRequest {
            event_types: self.event_types.clone(),
            entity_ids: self.entities.clone(),
            namespaces: self.namespaces.clone(),
            start: start as i32,
            from_sequence: self.from.unwrap_or_default(),
            heartbeat_interval_seconds: self.heartbeat.unwrap_or_default(),
            shard: self.shard.clone().unwrap_or_default(),
        }
    }
}

/// Runs an `events` subcommand.
pub(crate) async fn run(ctx: &Context, command: EventsCommand) -> Result<(), ClientError> {
    match command {
        EventsCommand::List(args) => list(ctx, args).await,
        EventsCommand::Watch(args) => watch(ctx, args.request()).await,
    }
}

async fn list(ctx: &Context, args: ListArgs) -> Result<(), ClientError> {
    let request = v1::ListEventsRequest {
        limit: args
            .limit
            .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
        offset: args
            .offset
            .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        event_type: args.event_type.unwrap_or_default(),
        after_sequence: args.after,
        entity_id: args.entity.unwrap_or_default(),
        shard: args.shard.unwrap_or_default(),
    };
    let response = ctx
        .client()
        .await?
        .lifecycle()
        .list_events(request)
        .await?
        .into_inner();
    if ctx.json {
        output::print_json(&response);
        return Ok(());
    }
    let mut table = Table::new(&["SEQ", "TIME", "TYPE", "ENTITY", "SUMMARY"]);
    for event in &response.events {
        table.row(event_cells(event));
    }
    table.print("events");
    eprintln!(
        "log holds sequences {}..={}",
        response.oldest_sequence, response.head_sequence
    );
    Ok(())
}

/// Prints events as they arrive until Ctrl-C or an error retrying cannot
/// fix (for example a start sequence already pruned from the log).
async fn watch(ctx: &Context, request: v1::SubscribeRequest) -> Result<(), ClientError> {
    let mut subscription = ctx
        .client()
        .await?
        .subscribe_resilient(request, Backoff::default());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let item = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            item = subscription.next() => item,
        };
        let Some(item) = item else { return Ok(()) };
        let Some(line) = watch_line(ctx, &item?) else {
            continue;
        };
        // The reader went away (`| head`): stop like any Unix filter.
        if output::emit_line(&line).is_err() {
            return Ok(());
        }
    }
}

/// The line printed for one item; heartbeats only with --verbose.
fn watch_line(ctx: &Context, item: &SubscriptionItem) -> Option<String> {
    match (item, ctx.json) {
        (SubscriptionItem::Event(event), true) => Some(output::json_line(event)),
        (SubscriptionItem::Event(event), false) => Some(event_line(event)),
        (SubscriptionItem::Heartbeat(_), _) if !ctx.verbose => None,
        (SubscriptionItem::Heartbeat(h), true) => {
            // The stream's own message, so each line is one SubscribeResponse.
            let message = v1::SubscribeResponse {
                message: Some(v1::subscribe_response::Message::Heartbeat(*h)),
            };
            Some(output::json_line(&message))
        }
        (SubscriptionItem::Heartbeat(h), false) => Some(format!(
            "{:>8}  {}  heartbeat (head {})",
            "-",
            output::time(h.time.as_ref()),
            h.head_sequence
        )),
    }
}

/// One event as a fixed-width line; widths fit the longest type name and a
/// base58 address so a live stream stays aligned without buffering.
fn event_line(event: &v1::LifecycleEvent) -> String {
    let [sequence, time, kind, entity, summary] =
        <[String; 5]>::try_from(event_cells(event)).expect("event_cells returns five cells");
    format!("{sequence:>8}  {time}  {kind:<30}  {entity:<44}  {summary}")
        .trim_end()
        .to_string()
}

/// Sequence, time, type, entity and payload summary of an event.
fn event_cells(event: &v1::LifecycleEvent) -> Vec<String> {
    vec![
        event.sequence.to_string(),
        output::time(event.time.as_ref()),
        output::name::<v1::EventType>(event.event_type),
        output::or_dash(&event.entity_id),
        output::truncate(&summary(event), SUMMARY_WIDTH),
    ]
}

/// The payload as `key=value` pairs, in proto field order. Built from the
/// payload's proto3 JSON form rather than per type, so new event types are
/// summarized without code changes. Empty, zero, false and UNSPECIFIED
/// values (proto3 defaults, so mostly "not set"), and the entity id
/// repeated, are left out; lists show their length.
fn summary(event: &v1::LifecycleEvent) -> String {
    // In proto3 JSON the oneof is inlined: `{"sessionCreated": {<fields>}}`
    // among the event's own fields, and the only object among them when
    // the others are left empty. JSON text keeps the field order;
    // serde_json's Value would sort it, hence OrderedMap.
    let payload_only = v1::LifecycleEvent {
        payload: event.payload.clone(),
        ..Default::default()
    };
    let Ok(text) = serde_json::to_string(&payload_only) else {
        return String::new();
    };
    let Some(fields) = payload_fields(&text) else {
        return String::new();
    };
    fields
        .iter()
        .filter_map(|(key, value)| {
            let text = summary_value(value)?;
            (text != event.entity_id).then(|| format!("{key}={text}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The payload object's entries, in order, from an event's JSON text.
fn payload_fields(text: &str) -> Option<Vec<(String, Value)>> {
    let OrderedMap(entries) = serde_json::from_str::<OrderedMap<RawOrValue>>(text).ok()?;
    entries.into_iter().find_map(|(_, v)| match v {
        RawOrValue::Object(OrderedMap(fields)) => Some(fields),
        RawOrValue::Other(_) => None,
    })
}

/// An object kept in document order, or any other JSON value.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawOrValue {
    Object(OrderedMap<Value>),
    Other(serde::de::IgnoredAny),
}

/// A JSON object's entries in document order.
struct OrderedMap<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }

        deserializer.deserialize_map(Entries(PhantomData))
    }
}

/// One value of a summary, or `None` to leave it out.
fn summary_value(value: &Value) -> Option<String> {
    match value {
        Value::Null | Value::Bool(false) => None,
        Value::Number(n) if n.as_f64() == Some(0.0) => None,
        // 64-bit zeros are strings in proto3 JSON; enums default to UNSPECIFIED.
        Value::String(s) if s.is_empty() || s == "0" || s.ends_with("_UNSPECIFIED") => None,
        Value::Array(items) if items.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(format!("[{}]", items.len())),
        // Nested messages (a rule) are named by their id when they have one.
        Value::Object(fields) => match fields.get("id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => Some(value.to_string()),
        },
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use v1::lifecycle_event::Payload;

    use super::*;

    fn session_created() -> v1::LifecycleEvent {
        v1::LifecycleEvent {
            sequence: 12,
            entity_id: "S1".into(),
            event_type: v1::EventType::SessionCreated as i32,
            payload: Some(Payload::SessionCreated(v1::SessionCreated {
                session_id: "S1".into(),
                owner: "O1".into(),
                accounts: vec!["A".into(), "B".into()],
                namespace: "ns".into(),
                nonce: 3,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn summary_shows_payload_fields_but_not_the_entity_again() {
        assert_eq!(
            summary(&session_created()),
            "owner=O1 accounts=[2] namespace=ns nonce=3"
        );
    }

    #[test]
    fn nested_rules_are_named_by_id() {
        let event = v1::LifecycleEvent {
            payload: Some(Payload::RuleCreated(v1::RuleChanged {
                rule: Some(v1::ProgressionRule {
                    id: "r1".into(),
                    ..Default::default()
                }),
            })),
            ..Default::default()
        };
        assert_eq!(summary(&event), "rule=r1");
    }

    #[test]
    fn event_line_is_aligned() {
        let line = event_line(&session_created());
        assert!(line.starts_with("      12  -  session_created "), "{line}");
        assert!(
            line.ends_with("owner=O1 accounts=[2] namespace=ns nonce=3"),
            "{line}"
        );
    }

    #[test]
    fn watch_flags_build_the_request() {
        let args = WatchArgs {
            event_types: vec![4],
            entities: vec!["e".into()],
            namespaces: vec![],
            shard: Some("alpha".into()),
            from: Some(9),
            oldest: false,
            heartbeat: Some(5),
        };
        let request = args.request();
        assert_eq!(request.shard, "alpha");
        assert_eq!(request.start, StartPosition::FromSequence as i32);
        assert_eq!(request.from_sequence, 9);
        assert_eq!(request.heartbeat_interval_seconds, 5);
        let now = WatchArgs { from: None, ..args };
        assert_eq!(now.request().start, StartPosition::Now as i32);
    }
}
