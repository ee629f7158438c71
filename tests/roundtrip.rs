//! Lossless round trips (issue 11): every source × target × path, byte for byte.
//!
//! Sources: memory, a `record` file, SQS (LocalStack, fed by the raw AWS SDK with typed
//! attributes) and Pub/Sub (the emulator). Targets: memory, file, SQS, Pub/Sub and an HTTP
//! handler (axum on 127.0.0.1). Paths: forward (a rule forwards everything it can decode; the
//! rest is dead-lettered elsewhere), dead letter (every message is dead-lettered to the
//! target), and dead letter → `dlq replay` back out of the target where it can be read.
//!
//! Each source gets the messages its real producers can send: SQS bodies are XML-safe text
//! with at most 10 typed attributes; Pub/Sub bodies are any bytes with up to 100 string
//! attributes; memory and file carry anything (bytes that are not UTF-8, NUL, more than 10
//! attributes, empty values, names SQS rejects, ordering keys). Bodies: JSON with a 30-digit
//! integer, `1.10`, odd spacing and escapes; a JSON string; text; pretty-printed JSON; JSON
//! nested deeper than a parser goes; a body 8 KiB under the SQS limit. After every path the
//! body is identical and every attribute is back with its type and value.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::MessageAttributeValue;
use axum::body::Bytes as AxumBytes;
use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;
use common::localstack::{self, ENDPOINT};
use common::*;
use veltrix::replay::{replay, ReplayOptions};
use veltrix_pubsub::emulator::EmulatorAdmin;
use veltrix_pubsub::{PubSubSource, PubSubSourceOptions, PubSubTarget};
use veltrix_queue::file::{FileSource, FileSourceOptions, FileTarget, LineFormat};
use veltrix_queue::memory::MemoryQueue;
use veltrix_queue::record::attributes_from_json;
use veltrix_queue::{
    AttributeData, AttributeValue, Attributes, Delivery, OutboundMessage, Publisher, Received, Source,
};
use veltrix_sqs::SqsTarget;

/// Names each test message.
const ID: &str = "rt-id";
/// Longest wait for any one step.
const STEP: Duration = Duration::from_secs(90);
/// Attributes the worker adds to a forward.
const FORWARD_OWN: &[&str] = &["veltrix.message_id", "veltrix.rule", "veltrix.attempt"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    File,
    Sqs,
    PubSub,
    Http,
}

/// One message as it arrived somewhere.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    body: Bytes,
    attributes: Attributes,
    ordering_key: Option<String>,
}

impl From<Delivery> for Seen {
    fn from(d: Delivery) -> Self {
        Seen {
            body: d.body,
            attributes: d.attributes,
            ordering_key: d.ordering_key,
        }
    }
}

#[derive(Default)]
struct HttpSink {
    seen: Mutex<Vec<Seen>>,
}

/// What the HTTP handler got, with the attributes read back from the headers.
fn from_headers(headers: &HeaderMap, body: AxumBytes) -> Seen {
    let mut attributes = Attributes::new();
    for (name, value) in headers {
        let text = value.to_str().expect("visible ASCII header").to_string();
        match name.as_str() {
            "x-veltrix-message-id" => {
                attributes.insert("veltrix.message_id", text);
            }
            "x-veltrix-rule" => {
                attributes.insert("veltrix.rule", text);
            }
            "x-veltrix-attempt" => {
                attributes.insert("veltrix.attempt", text);
            }
            "x-veltrix-attributes" => {
                let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
                attributes.extend(attributes_from_json(&map).unwrap());
            }
            other => {
                if let Some(attr) = other.strip_prefix("x-veltrix-attr-") {
                    attributes.insert(attr, text);
                }
            }
        }
    }
    let ordering_key = match (
        headers.get("x-veltrix-ordering-key"),
        headers.get("x-veltrix-ordering-key-json"),
    ) {
        (Some(k), _) => Some(k.to_str().unwrap().to_string()),
        (None, Some(j)) => Some(serde_json::from_str(j.to_str().unwrap()).unwrap()),
        (None, None) => None,
    };
    Seen {
        body: Bytes::copy_from_slice(&body),
        attributes,
        ordering_key,
    }
}

async fn record(State(sink): State<Arc<HttpSink>>, headers: HeaderMap, body: AxumBytes) -> &'static str {
    sink.seen.lock().unwrap().push(from_headers(&headers, body));
    "ok"
}

/// A place messages can be written to and read from.
struct Carrier {
    kind: Kind,
    memory: MemoryQueue,
    _dir: tempfile::TempDir,
    path: PathBuf,
    queue_url: String,
    topic: String,
    subscription: String,
    admin: Option<EmulatorAdmin>,
    http: Option<(String, Arc<HttpSink>)>,
}

impl Carrier {
    async fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("messages.jsonl");
        let mut c = Carrier {
            kind,
            memory: MemoryQueue::named("rt"),
            _dir: dir,
            path,
            queue_url: String::new(),
            topic: String::new(),
            subscription: String::new(),
            admin: None,
            http: None,
        };
        match kind {
            Kind::Memory | Kind::File => {}
            Kind::Sqs => {
                c.queue_url = localstack::create_queue(&localstack::client(), "rt", false, &[]).await;
            }
            Kind::PubSub => {
                let admin = EmulatorAdmin::connect().await.expect("the Pub/Sub emulator");
                let (topic, subscription) = admin
                    .topic_with_subscription("rt", |s| veltrix_pubsub::emulator::SubscriptionSpec {
                        ordering: true,
                        ack_deadline_secs: 60,
                        ..s
                    })
                    .await
                    .unwrap();
                c.topic = topic;
                c.subscription = subscription;
                c.admin = Some(admin);
            }
            Kind::Http => {
                let sink = Arc::new(HttpSink::default());
                let app = axum::Router::new()
                    .route("/events", axum::routing::post(record))
                    .with_state(sink.clone());
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}/events", listener.local_addr().unwrap());
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
                c.http = Some((url, sink));
            }
        }
        c
    }

    /// A veltrix target writing here.
    async fn publisher(&self) -> Arc<dyn Publisher> {
        match self.kind {
            Kind::Memory => Arc::new(self.memory.clone()),
            Kind::File => Arc::new(FileTarget::open(&self.path).await.unwrap()),
            Kind::Sqs => Arc::new(SqsTarget::new(
                localstack::client(),
                self.queue_url.clone(),
                Some(ENDPOINT.into()),
            )),
            Kind::PubSub => Arc::new(
                PubSubTarget::open(&self.admin.as_ref().unwrap().connection, &self.topic)
                    .await
                    .unwrap(),
            ),
            Kind::Http => Arc::new(
                veltrix::targets::http::HttpTarget::new(veltrix::targets::http::HttpTargetOptions {
                    url: self.http.as_ref().unwrap().0.clone(),
                    timeout: Duration::from_secs(10),
                    headers: BTreeMap::new(),
                    bearer_token: None,
                })
                .unwrap(),
            ),
        }
    }

    /// A veltrix source reading what is here.
    async fn source(&self) -> Arc<dyn Source> {
        match self.kind {
            Kind::Memory => Arc::new(self.memory.clone()),
            Kind::File => Arc::new(
                FileSource::open(
                    &self.path,
                    FileSourceOptions {
                        format: LineFormat::Record,
                        ..FileSourceOptions::default()
                    },
                )
                .await
                .unwrap(),
            ),
            Kind::Sqs => Arc::new(
                localstack::try_open_source(&self.queue_url, Some(Duration::from_secs(60)))
                    .await
                    .unwrap(),
            ),
            Kind::PubSub => Arc::new(
                PubSubSource::open(
                    &self.admin.as_ref().unwrap().connection,
                    PubSubSourceOptions {
                        subscription: self.subscription.clone(),
                        streams: 1,
                        max_outstanding_messages: 1000,
                        max_outstanding_bytes: 100 << 20,
                        visibility_timeout: None,
                        max_hold: Duration::from_secs(600),
                    },
                )
                .await
                .unwrap(),
            ),
            Kind::Http => unreachable!("an HTTP handler is not read back by veltrix"),
        }
    }

    /// Puts `messages` here the way a real producer of this kind would.
    async fn inject(&self, messages: &[OutboundMessage]) {
        match self.kind {
            Kind::Sqs => {
                // The raw AWS SDK, with every attribute's own data type.
                let client = localstack::client();
                for m in messages {
                    let mut req = client
                        .send_message()
                        .queue_url(&self.queue_url)
                        .message_body(std::str::from_utf8(&m.body).expect("SQS bodies are text"));
                    for (k, v) in &m.attributes {
                        let b = MessageAttributeValue::builder().data_type(v.data_type());
                        let b = match v.data() {
                            AttributeData::Text(text) => b.string_value(text),
                            AttributeData::Binary(bytes) => b.binary_value(Blob::new(bytes.to_vec())),
                        };
                        req = req.message_attributes(k, b.build().unwrap());
                    }
                    req.send().await.expect("SendMessage");
                }
            }
            _ => {
                let publisher = self.publisher().await;
                for r in publisher.publish(messages.to_vec()).await {
                    r.expect("inject");
                }
            }
        }
    }

    /// Reads `n` messages back (acking them).
    async fn read(&self, n: usize) -> Vec<Seen> {
        if let Some((_, sink)) = &self.http {
            wait_until(STEP, "the handler got every message", || {
                sink.seen.lock().unwrap().len() >= n
            })
            .await;
            return sink.seen.lock().unwrap().clone();
        }
        let source = self.source().await;
        let deadline = tokio::time::Instant::now() + STEP;
        let mut got: Vec<Seen> = Vec::new();
        while got.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?}: {} of {n} read back",
                self.kind,
                got.len()
            );
            match source.receive(10, Duration::from_secs(1)).await.expect("receive") {
                Received::Messages(batch) => {
                    let tokens = batch.iter().map(|d| d.token.clone()).collect();
                    source.ack(tokens).await.expect("ack");
                    got.extend(batch.into_iter().map(Seen::from));
                }
                Received::Exhausted => break,
            }
        }
        source.close().await;
        got
    }
}

fn message(
    id: usize,
    body: impl Into<Bytes>,
    attrs: Vec<(&str, AttributeValue)>,
    key: Option<&str>,
) -> OutboundMessage {
    let mut attributes: Attributes = attrs.into_iter().collect();
    attributes.insert(ID, id.to_string());
    OutboundMessage {
        body: body.into(),
        attributes,
        ordering_key: key.map(str::to_string),
        dedup_id: None,
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::string(v)
}

/// Bodies every producer can send (XML-safe text).
fn text_bodies() -> Vec<Bytes> {
    let near_limit = format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024 - 8 * 1024));
    vec![
        Bytes::from_static(
            br#"{ "a" :1,	"big": 123456789012345678901234567890, "f": 1.10, "esc": "\u00e9\"\\\/", "k": [ ] }"#,
        ),
        Bytes::from_static(br#""a JSON string""#),
        Bytes::from_static("plain text, not JSON ✓".as_bytes()),
        Bytes::from_static(b"{\n  \"pretty\": true\n}"),
        Bytes::from(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
        Bytes::from(near_limit),
    ]
}

/// What an SQS producer can send: text bodies, at most 10 typed attributes.
fn sqs_messages() -> Vec<OutboundMessage> {
    let typed = || {
        vec![
            ("s", s("plain")),
            ("u", s("é😀 and \"quotes\"")),
            ("n", AttributeValue::typed_text("Number", "12.50")),
            (
                "ni",
                AttributeValue::typed_text("Number.int", "123456789012345678901234567890"),
            ),
            ("l", AttributeValue::typed_text("String.custom-label", "labelled")),
            (
                "b",
                AttributeValue::binary("Binary", Bytes::from_static(&[0, 255, 7, 128])),
            ),
            (
                "bp",
                AttributeValue::binary("Binary.png", Bytes::from_static(b"\x89PNG")),
            ),
            ("veltrix.reason", s("set by the producer")),
            ("x-9", s("nine")),
        ]
    };
    text_bodies()
        .into_iter()
        .enumerate()
        .map(|(i, body)| message(i, body, typed(), None))
        .collect()
}

/// What a Pub/Sub producer can send: any bytes, string attributes (up to 100), ordering keys.
fn pubsub_messages() -> Vec<OutboundMessage> {
    let mut out: Vec<OutboundMessage> = text_bodies()
        .into_iter()
        .enumerate()
        .map(|(i, body)| message(i, body, vec![("tenant", s("t-1")), ("u", s("é"))], Some("key-1")))
        .collect();
    let n = out.len();
    out.push(message(n, Bytes::from_static(b"\xff\xfe\x00 not UTF-8"), vec![], None));
    out.push(message(
        n + 1,
        Bytes::from_static(b"nul\x00inside"),
        vec![],
        Some("k/é"),
    ));
    let many: Vec<(String, AttributeValue)> = (0..98).map(|i| (format!("a{i:02}"), s(&format!("v{i}")))).collect();
    let mut m = message(n + 2, "{\"many\": true}", vec![], None);
    m.attributes.extend(many);
    out.push(m);
    out
}

/// What memory and file sources carry: anything.
fn any_messages() -> Vec<OutboundMessage> {
    let mut out = pubsub_messages();
    let n = out.len();
    let mut odd = message(
        n,
        "{\"odd\": 1}",
        vec![
            ("empty", s("")),
            ("with space", s("v")),
            ("Tenant", s("upper")),
            ("long", s(&"x".repeat(1500))),
            ("long-unicode", s(&"é".repeat(600))),
            ("AWS.reserved", s("r")),
            ("ctl", s("a\u{1}b")),
            ("n", AttributeValue::typed_text("Number", "1e3")),
            ("b", AttributeValue::binary("Binary.x", Bytes::from_static(&[1, 2, 3]))),
            ("googfoo", s("reserved by Pub/Sub")),
        ],
        Some("customer/é/42"),
    );
    odd.attributes.extend((0..20).map(|i| (format!("extra{i}"), s("x"))));
    out.push(odd);
    out.push(message(n + 1, Bytes::new(), vec![], None));
    out
}

fn messages_for(source: Kind) -> Vec<OutboundMessage> {
    match source {
        Kind::Sqs => sqs_messages(),
        Kind::PubSub => pubsub_messages(),
        _ => any_messages(),
    }
}

/// The id of a message seen somewhere.
fn id_of(a: &Attributes) -> usize {
    a.get_str(ID).expect("every message keeps its id").parse().unwrap()
}

fn by_id(seen: Vec<Seen>) -> BTreeMap<usize, Seen> {
    let mut out = BTreeMap::new();
    for m in seen {
        let id = id_of(&m.attributes);
        assert!(out.insert(id, m).is_none(), "message {id} arrived twice");
    }
    out
}

/// How a message looks to the worker: producer-set `veltrix.*` kept as `veltrix.upstream.*`.
fn as_received(m: &OutboundMessage) -> Attributes {
    let mut a = m.attributes.clone();
    veltrix::pipeline::own_attributes::rename_at_ingress(&mut a);
    a
}

fn decodable(m: &OutboundMessage) -> bool {
    std::str::from_utf8(&m.body).is_ok()
}

const FORWARD_EVERYTHING: &str = r#"
[[rules]]
name = "everything"
match = { source = { kind = [{ exists = true }] } }
actions = [{ type = "forward", target = "out" }]
"#;

const DEAD_LETTER_EVERYTHING: &str = r#"
[[rules]]
name = "everything"
match = { source = { kind = [{ exists = true }] } }
actions = [{ type = "dead_letter", reason = "round trip" }]
"#;

/// Runs a worker from `source` until `n` messages settled; `out` and `dlq` are the targets.
async fn run_worker(
    source: Arc<dyn Source>,
    rules_toml: &str,
    out: Arc<dyn Publisher>,
    dlq: Arc<dyn Publisher>,
    n: usize,
) -> veltrix::pipeline::stats::Summary {
    let worker = veltrix::pipeline::Worker::new(
        source,
        rules(rules_toml),
        vec![
            (
                "audit".into(),
                Arc::new(MemoryQueue::named("audit")) as Arc<dyn Publisher>,
            ),
            ("dlq".into(), dlq),
            ("out".into(), out),
        ],
        1,
        settings(),
    );
    let stats = worker.stats();
    run_until(worker, STEP, "every message settled", || {
        let s = stats.snapshot();
        (s.forwarded + s.dead_lettered) as usize >= n
    })
    .await
}

/// Source → target, forward, dead letter and replay; everything compared byte for byte.
async fn round_trip(source_kind: Kind, target_kind: Kind) {
    let sent = messages_for(source_kind);
    let n = sent.len();
    let expected: BTreeMap<usize, &OutboundMessage> = sent.iter().map(|m| (id_of(&m.attributes), m)).collect();

    // Forward: what decodes goes to the target, the rest to a memory dead-letter queue.
    let source = Carrier::new(source_kind).await;
    source.inject(&sent).await;
    let target = Carrier::new(target_kind).await;
    let undecodable = MemoryQueue::named("undecodable");
    let summary = run_worker(
        source.source().await,
        FORWARD_EVERYTHING,
        target.publisher().await,
        Arc::new(undecodable.clone()),
        n,
    )
    .await;
    let forwardable = sent.iter().filter(|m| decodable(m)).count();
    assert_eq!(
        summary.forwarded as usize,
        forwardable,
        "{summary}; dead letters: {:?}",
        undecodable
            .snapshot()
            .iter()
            .map(|m| m.attributes.get_str("veltrix.error").unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    );
    let got = by_id(target.read(forwardable).await);
    for (id, m) in &expected {
        if !decodable(m) {
            continue;
        }
        let seen = got.get(id).unwrap_or_else(|| panic!("forward of {id} missing"));
        assert_eq!(seen.body, m.body, "forward {id}: body");
        let mut attrs = seen.attributes.clone();
        for own in FORWARD_OWN {
            assert!(attrs.remove(own).is_some(), "forward {id}: {own} added");
        }
        assert_eq!(attrs, as_received(m), "forward {id}: attributes");
        assert_eq!(seen.ordering_key, m.ordering_key, "forward {id}: ordering key");
    }
    for d in undecodable.snapshot() {
        let id = id_of(&d.attributes);
        assert_eq!(d.body, expected[&id].body, "undecodable {id} dead-lettered as it came");
        assert_eq!(d.attributes["veltrix.reason"], "undecodable_body");
    }

    // Dead letter: every message goes to the target with the envelope.
    let source = Carrier::new(source_kind).await;
    source.inject(&sent).await;
    let dead = Carrier::new(target_kind).await;
    let summary = run_worker(
        source.source().await,
        DEAD_LETTER_EVERYTHING,
        Arc::new(MemoryQueue::named("unused")),
        dead.publisher().await,
        n,
    )
    .await;
    assert_eq!(summary.dead_lettered as usize, n, "{summary}");
    if target_kind == Kind::Http {
        let got = by_id(dead.read(n).await);
        for (id, m) in &expected {
            check_dead_letter(*id, m, &got[id]);
        }
        return;
    }
    // Read the dead letters with `dlq replay` into memory: the body and the attributes the
    // message arrived with, plus the replay count.
    let replayed = MemoryQueue::named("replayed");
    let options = ReplayOptions {
        receive_wait: Duration::from_secs(5),
        ..ReplayOptions::default()
    };
    let summary = replay(dead.source().await, &replayed, &options, |_| {})
        .await
        .expect("replay");
    assert_eq!(summary.replayed as usize, n, "{summary}");
    let got = by_id(
        replayed
            .snapshot()
            .into_iter()
            .map(|m| Seen {
                body: m.body,
                attributes: m.attributes,
                ordering_key: m.ordering_key,
            })
            .collect(),
    );
    for (id, m) in &expected {
        let seen = &got[id];
        assert_eq!(seen.body, m.body, "replay {id}: body");
        let mut arrived = m.attributes.clone();
        arrived.insert("veltrix.replays", "1");
        assert_eq!(seen.attributes, arrived, "replay {id}: attributes");
        assert_eq!(seen.ordering_key, m.ordering_key, "replay {id}: ordering key");
    }
}

fn check_dead_letter(id: usize, sent: &OutboundMessage, seen: &Seen) {
    assert_eq!(seen.body, sent.body, "dead letter {id}: body");
    let received = as_received(sent);
    for (k, v) in &received {
        assert_eq!(seen.attributes.get(k), Some(v), "dead letter {id}: attribute {k}");
    }
    for k in seen.attributes.keys() {
        assert!(
            received.contains_key(k) || k.starts_with("veltrix."),
            "dead letter {id}: unexpected attribute {k}"
        );
    }
    assert!(
        seen.attributes.contains_key("veltrix.reason"),
        "dead letter {id}: reason"
    );
    assert_eq!(seen.ordering_key, sent.ordering_key, "dead letter {id}: ordering key");
}

macro_rules! round_trips {
    ($($name:ident: $source:ident -> $target:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                round_trip(Kind::$source, Kind::$target).await;
            }
        )*
    };
}

round_trips! {
    memory_to_memory: Memory -> Memory;
    memory_to_file: Memory -> File;
    memory_to_sqs: Memory -> Sqs;
    memory_to_pubsub: Memory -> PubSub;
    memory_to_http: Memory -> Http;
    file_to_memory: File -> Memory;
    file_to_file: File -> File;
    file_to_sqs: File -> Sqs;
    file_to_pubsub: File -> PubSub;
    file_to_http: File -> Http;
    sqs_to_memory: Sqs -> Memory;
    sqs_to_file: Sqs -> File;
    sqs_to_sqs: Sqs -> Sqs;
    sqs_to_pubsub: Sqs -> PubSub;
    sqs_to_http: Sqs -> Http;
    pubsub_to_memory: PubSub -> Memory;
    pubsub_to_file: PubSub -> File;
    pubsub_to_sqs: PubSub -> Sqs;
    pubsub_to_pubsub: PubSub -> PubSub;
    pubsub_to_http: PubSub -> Http;
}
