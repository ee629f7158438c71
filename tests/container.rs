//! The worker's container image, run for real under podman: the image `deploy/build-image.sh`
//! builds (`VELTRIX_IMAGE`, default `localhost/veltrix:dev`) runs the worker against LocalStack
//! (SQS) and the Pub/Sub emulator on the host network (all traffic on 127.0.0.1), with a
//! read-only root filesystem, every capability dropped, as uid/gid 65532, the way
//! `deploy/kubernetes/deployment.yaml` runs it.
//!
//! Containers are started, stopped, paused and resumed through the `testcontainers` crate over
//! podman's Docker-compatible API (`DOCKER_HOST`, served by `podman system service`, which
//! scripts/test.sh starts); SIGKILL and `inspect` go through the podman CLI, which the crate
//! does not offer.
//!
//! Each scenario runs on SQS and on Pub/Sub, with uniquely numbered messages (9 in 10 forwarded,
//! 1 in 10 unmatched and dead-lettered), and checks every id, body and attribute at the end:
//! - **relay**: 10,000 messages, three containers in turn. The first gets `podman stop` mid-run:
//!   it drains and exits 0 within the grace period, repeats nothing and leaves nothing in flight.
//!   The second is SIGKILLed mid-run. The third drains the rest. Nothing is lost; every repeat has
//!   a copy from the killed container, and there are at most as many as it held (in flight, its
//!   flow-control window on Pub/Sub, and its acks still on their way).
//! - **fleet**: 30,000 messages, three replicas on one queue / subscription. Mid-run one is
//!   SIGKILLed and one is frozen (`podman pause`) for longer than the visibility timeout / ack
//!   deadline, then resumed, so its late acks and forwards race the replicas that took its
//!   messages over. Nothing is lost; no repeat comes from two healthy replicas; the killed
//!   replica repeats at most what it held, and so does the frozen one on SQS. On Pub/Sub the
//!   emulator keeps sending to the frozen stream, so the frozen replica repeats up to what it
//!   settled after its resume; its repeats and late acks are counted and printed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use common::localstack::{self, ENDPOINT};
use testcontainers::core::{AccessMode, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::time::Instant;
use veltrix_pubsub::emulator::EmulatorAdmin;
use veltrix_queue::{OutboundMessage, Publisher, Received, Source};

/// What each container may hold at once (forwarded or not, not yet settled).
const MAX_IN_FLIGHT: u64 = 64;
/// Pub/Sub flow control of the containers' one stream: messages leased to a replica ahead of
/// processing. A frozen replica holds these too, and after its resume forwards the ones whose
/// leases expired meanwhile (duplicates, never a loss).
const PUBSUB_OUTSTANDING: u64 = 64;
/// How long a settled message's ack may still be on its way to the provider when a container
/// dies: the worker's ack flush (10 ms) or the Pub/Sub client's ack flush period (100 ms), plus
/// the ack call itself. A killed or frozen container "held" its in-flight messages plus the
/// acks of this window, measured at its own settle rate.
const ACK_WINDOW: Duration = Duration::from_millis(200);
/// `podman stop` grace period: above the config's `drain_timeout_secs` (20).
const STOP_GRACE_SECS: i32 = 30;
/// The SQS source queue's visibility timeout.
const SQS_VISIBILITY_SECS: u64 = 5;
/// The Pub/Sub subscription's ack deadline (the emulator's default).
const PUBSUB_ACK_DEADLINE_SECS: u64 = 10;
/// The attribute each test message carries its number in.
const SEQ: &str = "seq";
/// Label on every container these tests start (scripts/test.sh removes leftovers by it).
const LABEL: &str = "veltrix-test";

// ---------------------------------------------------------------------------------------------
// The image and the containers.

/// The image under test, `(name, tag)`.
fn image() -> (String, String) {
    let reference = std::env::var("VELTRIX_IMAGE").unwrap_or_else(|_| "localhost/veltrix:dev".into());
    let (name, tag) = reference
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("VELTRIX_IMAGE={reference} has no tag"));
    (name.to_string(), tag.to_string())
}

/// Fails loudly unless podman, its API socket and the image are there.
fn require_podman_and_image() {
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    let socket = host.strip_prefix("unix://").unwrap_or_else(|| {
        panic!(
            "DOCKER_HOST is {host:?}: the container tests need podman's API socket. Run scripts/test.sh \
             (it starts `podman system service` and builds the image), or start it by hand: \
             `podman system service --time=0 unix:///run/veltrix-podman/podman.sock &` and \
             `export DOCKER_HOST=unix:///run/veltrix-podman/podman.sock`"
        )
    });
    assert!(
        Path::new(socket).exists(),
        "DOCKER_HOST names {socket}, which does not exist: is `podman system service` running?"
    );
    let (name, tag) = image();
    let exists = podman(&["image", "exists", &format!("{name}:{tag}")]);
    assert!(
        exists.status.success(),
        "the image {name}:{tag} is missing: build it with deploy/build-image.sh"
    );
}

/// Runs the podman CLI with the project's settings (deploy/podman/containers.conf).
fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .env(
            "CONTAINERS_CONF",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/podman/containers.conf"),
        )
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e} (install podman: apt-get install podman runc)"))
}

/// A free loopback port for a container's metrics server (host network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One worker container and its metrics address.
struct Worker {
    container: ContainerAsync<GenericImage>,
    metrics: String,
    http: reqwest::Client,
}

impl Worker {
    /// Starts the image as replica `replica` of the configs in `config_dir` and waits (bounded)
    /// until `/readyz` says it is ready.
    async fn start(config_dir: &Path, replica: usize) -> Worker {
        let (name, tag) = image();
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let config = format!("/etc/veltrix/veltrix-{replica}.toml");
        let container = GenericImage::new(name, tag)
            .with_cmd([
                "run",
                "-c",
                config.as_str(),
                "--metrics-addr",
                metrics.as_str(),
                "--log-format",
                "json",
            ])
            // Host network by HostConfig: `with_network("host")` makes the crate look for a
            // network of that name first, which podman's API does not list, then try to create it.
            .with_host_config_modifier(|host| host.network_mode = Some("host".into()))
            .with_user("65532:65532")
            .with_readonly_rootfs(true)
            .with_cap_drop("ALL")
            .with_label(LABEL, "container")
            .with_mount(
                Mount::bind_mount(config_dir.to_str().unwrap(), "/etc/veltrix").with_access_mode(AccessMode::ReadOnly),
            )
            // The Deployment's emptyDir for pipeline.state_dir.
            .with_mount(Mount::tmpfs_mount("/var/lib/veltrix").with_mode(0o1777))
            .with_env_var("AWS_ACCESS_KEY_ID", "test")
            .with_env_var("AWS_SECRET_ACCESS_KEY", "test")
            .with_env_var("AWS_REGION", "us-east-1")
            .with_env_var("AWS_EC2_METADATA_DISABLED", "true")
            .with_startup_timeout(Duration::from_secs(30))
            .start()
            .await
            .expect("start the worker container (through podman's API)");
        let worker = Worker {
            container,
            metrics,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = worker.get("/readyz").await;
            if ready.as_ref().is_some_and(|(status, _)| *status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the worker container is not ready after 30 s ({ready:?}); its log:\n{}",
                worker.logs().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker
    }

    fn id(&self) -> &str {
        self.container.id()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.metrics))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The sum of a metric's series (0 when it has none yet).
    async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("the worker serves /metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (bounded) until these workers settled at least `n` messages between them, by their
    /// own metrics: the trigger for a fault "mid-run" (reading the targets lags behind).
    async fn wait_settled(workers: &[&Worker], n: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut settled = 0.0;
            for w in workers {
                settled += w.metric("veltrix_messages_settled_total").await;
            }
            if settled >= n as f64 {
                return;
            }
            assert!(Instant::now() < deadline, "only {settled} of {n} settled after 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Messages settled per second, over the last half second (by the worker's own metrics).
    async fn settle_rate(&self) -> f64 {
        let before = self.metric("veltrix_messages_settled_total").await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = self.metric("veltrix_messages_settled_total").await;
        (after - before) / started.elapsed().as_secs_f64()
    }

    /// The most this worker can hold when it dies or freezes now: its in-flight limit, what the
    /// source leases to it ahead of processing (`prefetch`), and the acks of the last
    /// [`ACK_WINDOW`] at its current rate.
    async fn holds_at_most(&self, prefetch: u64) -> u64 {
        MAX_IN_FLIGHT + prefetch + (self.settle_rate().await * ACK_WINDOW.as_secs_f64()).ceil() as u64
    }

    async fn logs(&self) -> String {
        let out = self.container.stderr_to_vec().await.unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The container runs as uid/gid 65532 on a read-only root filesystem: read from the
    /// kernel's view of its main process, not from the image's metadata.
    fn assert_hardened(&self) {
        let out = podman(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.HostConfig.ReadonlyRootfs}}",
            self.id(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (pid, read_only) = text.split_once(' ').expect("pid and read-only flag");
        assert_eq!(read_only, "true", "read-only root filesystem");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the container's process");
        for key in ["Uid:", "Gid:"] {
            let ids: Vec<&str> = status
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap()
                .split_whitespace()
                .skip(1)
                .collect();
            assert_eq!(ids, ["65532"; 4], "{key} of the worker process in the container");
        }
        let cap_eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        assert!(cap_eff.ends_with("0000000000000000"), "no capabilities: {cap_eff}");
    }

    /// `podman stop`: SIGTERM, SIGKILL after the grace period. Asserts exit 0 within it.
    async fn stop_gracefully(self) {
        let started = Instant::now();
        self.container
            .stop_with_timeout(Some(STOP_GRACE_SECS))
            .await
            .expect("stop the container");
        let took = started.elapsed();
        let code = self.container.exit_code().await.expect("exit code");
        assert_eq!(
            code,
            Some(0),
            "podman stop: the worker drains and exits 0 (took {took:?}); its log:\n{}",
            self.logs().await
        );
        assert!(
            took < Duration::from_secs(STOP_GRACE_SECS as u64),
            "within the grace period: {took:?}"
        );
        self.container.rm().await.expect("remove the container");
    }

    /// `podman kill`: SIGKILL, no drain.
    async fn kill(self) {
        let out = podman(&["kill", "--signal", "KILL", self.id()]);
        assert!(
            out.status.success(),
            "podman kill: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `podman wait` rather than the API's inspect: podman 4.3 reports a transient `stopped`
        // state that the crate's Docker models cannot parse.
        let waited = podman(&["wait", self.id()]);
        let code = String::from_utf8_lossy(&waited.stdout).trim().to_string();
        assert_eq!(code, "137", "exit code after SIGKILL");
        self.container.rm().await.expect("remove the container");
    }
}

// ---------------------------------------------------------------------------------------------
// The queues, the messages and the tally.

/// Message `n`: 9 in 10 are `"kind": "ok"` (forwarded), 1 in 10 `"kind": "unrouted"` (no rule
/// matches: dead-lettered).
fn body_of(n: u64) -> String {
    let kind = if n.is_multiple_of(10) { "unrouted" } else { "ok" };
    format!(r#"{{"n":{n},"kind":"{kind}"}}"#)
}

fn message(n: u64) -> OutboundMessage {
    OutboundMessage {
        body: Bytes::from(body_of(n)),
        attributes: [(SEQ.to_string(), n.to_string())].into_iter().collect(),
        ..Default::default()
    }
}

/// The rules of replica `r`: its rule names say which replica forwarded or dead-lettered a
/// message (`veltrix.rule`), so every duplicate can be traced to the replica that caused it.
fn rules(r: usize) -> String {
    format!(
        r#"
[[rules]]
name = "ok-{r}"
match = {{ body = {{ kind = ["ok"] }} }}
actions = [{{ type = "forward", target = "out" }}]

[[rules]]
name = "unrouted-{r}"
match = {{ body = {{ kind = ["unrouted"] }} }}
actions = [{{ type = "dead_letter", reason = "unrouted" }}]
"#
    )
}

/// Replicas (config files) a stack has: `veltrix-0.toml` … in its config directory.
const REPLICAS: usize = 3;

/// Where the provider's messages are, for the end-of-run checks.
enum Origin {
    Sqs {
        client: aws_sdk_sqs::Client,
        source: String,
        queues: Vec<String>,
    },
    PubSub {
        admin: EmulatorAdmin,
        subscription: String,
    },
}

/// One run's queues (or topics and subscriptions), its config directory, and readers of the
/// forward and dead-letter targets.
struct Stack {
    provider: &'static str,
    /// Messages `0..sent` were published to the source.
    sent: u64,
    /// Messages the source leases to a replica ahead of processing (Pub/Sub flow control).
    prefetch: u64,
    origin: Origin,
    config: tempfile::TempDir,
    out: Arc<dyn Source>,
    dlq: Arc<dyn Source>,
}

/// The configs of a stack's replicas: small in-flight limit, quick receives, the rules above.
fn write_config(dir: &Path, source: &str, targets: &str) {
    use std::os::unix::fs::PermissionsExt;
    for r in 0..REPLICAS {
        let text = format!(
            "{source}max_in_flight = {MAX_IN_FLIGHT}\n{targets}\n\
             [pipeline]\ndead_letter = \"dlq\"\ndrain_timeout_secs = 20\nstate_dir = \"/var/lib/veltrix\"\n{}",
            rules(r)
        );
        let file = dir.join(format!("veltrix-{r}.toml"));
        std::fs::write(&file, text).unwrap();
        // The container's uid 65532 reads the mounted directory.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Stack {
    async fn sqs(what: &str, n: u64) -> Stack {
        let client = localstack::client();
        let visibility = [(QueueAttributeName::VisibilityTimeout, SQS_VISIBILITY_SECS.to_string())];
        let source = localstack::create_queue(&client, what, false, &visibility).await;
        let out = localstack::create_queue(&client, &format!("{what}-out"), false, &[]).await;
        let dlq = localstack::create_queue(&client, &format!("{what}-dlq"), false, &[]).await;
        let target = veltrix_sqs::SqsTarget::new(client.clone(), source.clone(), Some(ENDPOINT.into()));
        publish(&target, n).await;
        let config = tempfile::tempdir().unwrap();
        let sqs = |url: &str| format!("type = \"sqs\"\nqueue_url = \"{url}\"\nendpoint_url = \"{ENDPOINT}\"\n");
        write_config(
            config.path(),
            &format!("[source]\n{}wait_time_secs = 1\n", sqs(&source)),
            &format!("[targets.out]\n{}[targets.dlq]\n{}", sqs(&out), sqs(&dlq)),
        );
        Stack {
            provider: "SQS",
            sent: n,
            // A receive asks only for what the in-flight limit has room for.
            prefetch: 0,
            out: Arc::new(localstack::open_source(&out, None).await),
            dlq: Arc::new(localstack::open_source(&dlq, None).await),
            origin: Origin::Sqs {
                client,
                source: source.clone(),
                queues: vec![source, out, dlq],
            },
            config,
        }
    }

    async fn pubsub(what: &str, n: u64) -> Stack {
        let admin = EmulatorAdmin::connect().await.expect("connect to the Pub/Sub emulator");
        let pair = |name: String| {
            let admin = &admin;
            async move {
                admin
                    .topic_with_subscription(&name, |s| s)
                    .await
                    .expect("topic and subscription")
            }
        };
        let (topic, subscription) = pair(what.to_string()).await;
        let (out_topic, out_sub) = pair(format!("{what}-out")).await;
        let (dlq_topic, dlq_sub) = pair(format!("{what}-dlq")).await;
        let target = veltrix_pubsub::PubSubTarget::open(&admin.connection, &topic)
            .await
            .expect("open the source topic");
        publish(&target, n).await;
        let config = tempfile::tempdir().unwrap();
        let endpoint = veltrix_pubsub::emulator::endpoint();
        let pubsub = |topic: &str| format!("type = \"pubsub\"\ntopic = \"{topic}\"\nendpoint = \"{endpoint}\"\n");
        write_config(
            config.path(),
            &format!(
                "[source]\ntype = \"pubsub\"\nsubscription = \"{subscription}\"\nendpoint = \"{endpoint}\"\n\
                 streams = 1\nmax_outstanding_messages = {PUBSUB_OUTSTANDING}\n"
            ),
            &format!(
                "[targets.out]\n{}[targets.dlq]\n{}",
                pubsub(&out_topic),
                pubsub(&dlq_topic)
            ),
        );
        let out = common::open_pubsub_source(&admin, &out_sub, None).await;
        let dlq = common::open_pubsub_source(&admin, &dlq_sub, None).await;
        Stack {
            provider: "Pub/Sub",
            sent: n,
            prefetch: PUBSUB_OUTSTANDING,
            out: Arc::new(out),
            dlq: Arc::new(dlq),
            origin: Origin::PubSub { admin, subscription },
            config,
        }
    }

    fn dir(&self) -> &Path {
        self.config.path()
    }

    /// Reads and acks what is waiting on the forward and dead-letter targets, checking each
    /// message against what was sent. Returns how many it read.
    async fn collect(&self, tally: &mut Tally) -> usize {
        let mut read = 0;
        for (reader, dead) in [(&self.out, false), (&self.dlq, true)] {
            for _ in 0..20 {
                let batch = match reader.receive(1000, Duration::from_millis(200)).await.expect("receive") {
                    Received::Messages(batch) if !batch.is_empty() => batch,
                    _ => break,
                };
                read += batch.len();
                for d in &batch {
                    tally.record(d, dead);
                }
                reader
                    .ack(batch.into_iter().map(|d| d.token).collect())
                    .await
                    .expect("ack what was read");
            }
        }
        read
    }

    /// Collects until `done` holds for the number of distinct ids accounted for, or `limit`.
    async fn collect_until(&self, tally: &mut Tally, limit: Duration, done: impl Fn(u64) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(tally.accounted()) {
            assert!(
                Instant::now() < deadline,
                "{}: only {} of {} ids accounted for after {limit:?}",
                self.provider,
                tally.accounted(),
                tally.sent
            );
            self.collect(tally).await;
        }
    }

    /// After every container that wrote has exited: collects until two reads in a row find
    /// both targets empty, so late duplicates are counted too.
    async fn collect_rest(&self, tally: &mut Tally) {
        let mut empty_reads = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while empty_reads < 2 {
            assert!(Instant::now() < deadline, "{}: the targets do not empty", self.provider);
            if self.collect(tally).await == 0 {
                empty_reads += 1;
            } else {
                empty_reads = 0;
            }
        }
    }

    /// Messages of the source in flight (leased, not settled), where the provider tells (SQS).
    async fn in_flight(&self) -> Option<u64> {
        match &self.origin {
            Origin::Sqs { client, source, .. } => Some(localstack::depth(client, source).await.1),
            Origin::PubSub { .. } => None,
        }
    }

    /// Nothing is left on the source: SQS says so; on Pub/Sub nothing arrives on the
    /// subscription for longer than its ack deadline (after which anything leased and never
    /// acked would come back).
    async fn assert_source_settled(&self) {
        match &self.origin {
            Origin::Sqs { client, source, .. } => {
                assert_eq!(
                    localstack::depth(client, source).await,
                    (0, 0),
                    "nothing left on the source queue"
                );
            }
            Origin::PubSub { admin, subscription } => {
                let source = common::open_pubsub_source(admin, subscription, None).await;
                let deadline = Instant::now() + Duration::from_secs(PUBSUB_ACK_DEADLINE_SECS + 2);
                while Instant::now() < deadline {
                    if let Received::Messages(batch) =
                        source.receive(1000, Duration::from_secs(1)).await.expect("receive")
                    {
                        assert!(
                            batch.is_empty(),
                            "{} messages left unacked on the subscription",
                            batch.len()
                        );
                    }
                }
                source.close().await;
            }
        }
    }

    /// What the frozen replica repeated. On SQS a replica leases only what its in-flight limit
    /// has room for, so it repeats at most what it held at the freeze. A frozen Pub/Sub stream
    /// keeps being sent messages while the leases of the ones it holds expire (the emulator
    /// does not stop at the flow-control limit once those leases lapse), and the replica
    /// forwards that backlog when it resumes: at most what it settled after its resume.
    fn assert_frozen_duplicates(&self, by_frozen: u64, held_at_freeze: u64, settled_after_resume: f64) {
        let bound = match self.origin {
            Origin::Sqs { .. } => held_at_freeze,
            Origin::PubSub { .. } => held_at_freeze + settled_after_resume as u64,
        };
        assert!(
            by_frozen <= bound,
            "{}: {by_frozen} duplicates from the frozen replica, more than it held ({bound})",
            self.provider
        );
    }

    async fn cleanup(self) {
        if let Origin::Sqs { client, queues, .. } = &self.origin {
            for url in queues {
                localstack::delete_queue(client, url).await;
            }
        }
    }
}

/// Publishes messages `0..n` to a source, 100 per call.
async fn publish(target: &dyn Publisher, n: u64) {
    let all: Vec<OutboundMessage> = (0..n).map(message).collect();
    for chunk in all.chunks(100) {
        for r in target.publish(chunk.to_vec()).await {
            r.expect("publish a test message");
        }
    }
}

/// Every arrival on the targets: `(id, replica that sent it)`, with repeats.
struct Tally {
    sent: u64,
    arrivals: Vec<(u64, usize)>,
}

impl Tally {
    fn new(sent: u64) -> Tally {
        Tally {
            sent,
            arrivals: Vec::new(),
        }
    }

    /// Checks one arrival against what was sent: body byte for byte, the `seq` attribute, the
    /// target its kind goes to, the dead letter's reason; notes the replica (`veltrix.rule`).
    fn record(&mut self, d: &veltrix_queue::Delivery, dead: bool) {
        let n: u64 = d
            .attributes
            .get_str(SEQ)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a message without its {SEQ} attribute: {:?} {:?}", d.body, d.attributes));
        assert_eq!(
            d.body,
            Bytes::from(body_of(n)),
            "message {n}: the body left exactly as it came"
        );
        assert_eq!(dead, n.is_multiple_of(10), "message {n} went to the right target");
        if dead {
            assert_eq!(d.attributes.get_str("veltrix.reason"), Some("unrouted"), "message {n}");
        }
        let rule = d.attributes.get_str("veltrix.rule").unwrap_or_default();
        let replica = rule
            .rsplit_once('-')
            .and_then(|(_, r)| r.parse().ok())
            .unwrap_or_else(|| panic!("message {n}: veltrix.rule {rule:?} names no replica"));
        self.arrivals.push((n, replica));
    }

    fn ids(&self) -> BTreeSet<u64> {
        self.arrivals.iter().map(|(n, _)| *n).collect()
    }

    fn accounted(&self) -> u64 {
        self.ids().len() as u64
    }

    fn duplicates(&self) -> u64 {
        self.arrivals.len() as u64 - self.accounted()
    }

    /// Repeats that no replica in `faulty` took part in: ids that arrived more than once, with
    /// no copy sent by a replica that was killed or frozen.
    fn unexplained_duplicates(&self, faulty: &[usize]) -> Vec<u64> {
        let mut copies: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
        for (n, r) in &self.arrivals {
            copies.entry(*n).or_default().push(*r);
        }
        copies
            .into_iter()
            .filter(|(_, rs)| rs.len() > 1 && !rs.iter().any(|r| faulty.contains(r)))
            .map(|(n, _)| n)
            .collect()
    }

    /// Repeats with a copy sent by `replica`.
    fn duplicates_involving(&self, replica: usize) -> u64 {
        let mut copies: std::collections::BTreeMap<u64, (u64, bool)> = Default::default();
        for (n, r) in &self.arrivals {
            let entry = copies.entry(*n).or_default();
            entry.0 += 1;
            entry.1 |= *r == replica;
        }
        copies.values().filter(|(_, by)| *by).map(|(c, _)| c - 1).sum()
    }

    fn missing(&self) -> Vec<u64> {
        let seen = self.ids();
        (0..self.sent).filter(|n| !seen.contains(n)).collect()
    }

    fn forwarded_and_dead(&self) -> (usize, usize) {
        let ids = self.ids();
        let dead = ids.iter().filter(|n| n.is_multiple_of(10)).count();
        (ids.len() - dead, dead)
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

/// Three containers in turn on 10,000 messages: `podman stop` mid-run, SIGKILL mid-run, then one
/// that drains the rest.
async fn relay(stack: Stack) {
    let n = stack.sent;
    let mut tally = Tally::new(n);

    let first = Worker::start(stack.dir(), 0).await;
    first.assert_hardened();
    Worker::wait_settled(&[&first], n / 5).await;
    first.stop_gracefully().await;
    stack.collect_rest(&mut tally).await;
    let after_stop = tally.accounted();
    assert!(
        after_stop < n,
        "{}: the stop came before the end of the run",
        stack.provider
    );
    assert_eq!(
        tally.duplicates(),
        0,
        "{}: a drain finishes or releases what it holds",
        stack.provider
    );
    if let Some(in_flight) = stack.in_flight().await {
        assert_eq!(
            in_flight, 0,
            "the drain left nothing in flight: every message was acked or released"
        );
    }

    let second = Worker::start(stack.dir(), 1).await;
    Worker::wait_settled(&[&second], n / 5).await;
    let killed_held = second.holds_at_most(stack.prefetch).await;
    second.kill().await;
    stack.collect_rest(&mut tally).await;
    assert!(
        tally.accounted() < n,
        "{}: the kill came before the end of the run",
        stack.provider
    );

    let third = Worker::start(stack.dir(), 2).await;
    stack
        .collect_until(&mut tally, Duration::from_secs(180), |done| done >= n)
        .await;
    third.stop_gracefully().await;
    stack.collect_rest(&mut tally).await;

    let (forwarded, dead) = tally.forwarded_and_dead();
    println!(
        "relay on {}: {n} sent, {forwarded} forwarded, {dead} dead-lettered, {} duplicates (the killed \
         container held at most {killed_held}), {} missing",
        stack.provider,
        tally.duplicates(),
        tally.missing().len()
    );
    assert_eq!(tally.missing(), Vec::<u64>::new(), "{}: nothing lost", stack.provider);
    assert_eq!(
        tally.unexplained_duplicates(&[1]),
        Vec::<u64>::new(),
        "{}: repeats without a copy from the killed container",
        stack.provider
    );
    assert!(
        tally.duplicates() <= killed_held,
        "{}: {} duplicates, more than the killed container could hold ({killed_held})",
        stack.provider,
        tally.duplicates()
    );
    stack.assert_source_settled().await;
    stack.cleanup().await;
}

/// Three replicas on 30,000 messages; one SIGKILLed, one frozen past its lease and resumed.
async fn fleet(stack: Stack, lease: Duration) {
    let n = stack.sent;
    let mut tally = Tally::new(n);
    let mut replicas = Vec::new();
    for r in 0..REPLICAS {
        replicas.push(Worker::start(stack.dir(), r).await);
    }
    Worker::wait_settled(&replicas.iter().collect::<Vec<_>>(), n / 5).await;
    let (survivor, killed, frozen) = (0, 1, 2);
    let frozen_worker = replicas.pop().unwrap();
    let killed_worker = replicas.pop().unwrap();
    let survivor_worker = replicas.pop().unwrap();
    let killed_held = killed_worker.holds_at_most(stack.prefetch).await;
    killed_worker.kill().await;
    let frozen_held = frozen_worker.holds_at_most(stack.prefetch).await;
    let settled_before = frozen_worker.metric("veltrix_messages_settled_total").await;
    frozen_worker.container.pause().await.expect("podman pause");
    // The freeze is the fault itself: it must outlast the lease, so the replicas left take its
    // messages over while it holds them.
    let frozen_until = Instant::now() + lease + Duration::from_secs(3);
    while Instant::now() < frozen_until {
        stack.collect(&mut tally).await;
    }
    frozen_worker.container.unpause().await.expect("podman unpause");
    stack
        .collect_until(&mut tally, Duration::from_secs(240), |done| done >= n)
        .await;
    let late_settled = frozen_worker.metric("veltrix_messages_settled_total").await - settled_before;
    let late_ack_failures = frozen_worker.metric("veltrix_ack_failures_total").await;
    survivor_worker.stop_gracefully().await;
    frozen_worker.stop_gracefully().await;
    stack.collect_rest(&mut tally).await;

    let by_killed = tally.duplicates_involving(killed);
    let by_frozen = tally.duplicates_involving(frozen);
    println!(
        "fleet on {}: {n} sent, {} duplicates ({by_killed} with a copy from the killed replica, which held at \
         most {killed_held}; {by_frozen} with a copy from the frozen one, which held at most {frozen_held} at its \
         freeze and settled {late_settled} after its resume, {late_ack_failures} acks failing), {} missing",
        stack.provider,
        tally.duplicates(),
        tally.missing().len()
    );
    assert_eq!(tally.missing(), Vec::<u64>::new(), "{}: nothing lost", stack.provider);
    assert_eq!(
        tally.unexplained_duplicates(&[killed, frozen]),
        Vec::<u64>::new(),
        "{}: repeats between healthy replicas (replica {survivor} and a replica that was not faulted)",
        stack.provider
    );
    assert!(
        by_killed <= killed_held,
        "{}: {by_killed} duplicates from the killed replica, more than it could hold ({killed_held})",
        stack.provider
    );
    stack.assert_frozen_duplicates(by_frozen, frozen_held, late_settled);
    stack.assert_source_settled().await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_relay_stop_kill_restart_loses_nothing() {
    require_podman_and_image();
    relay(Stack::sqs("ctr-relay", 10_000).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_relay_stop_kill_restart_loses_nothing() {
    require_podman_and_image();
    relay(Stack::pubsub("ctr-relay", 10_000).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fleet_of_three_survives_a_kill_and_a_freeze() {
    require_podman_and_image();
    fleet(
        Stack::sqs("ctr-fleet", 30_000).await,
        Duration::from_secs(SQS_VISIBILITY_SECS),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_fleet_of_three_survives_a_kill_and_a_freeze() {
    require_podman_and_image();
    fleet(
        Stack::pubsub("ctr-fleet", 30_000).await,
        Duration::from_secs(PUBSUB_ACK_DEADLINE_SECS),
    )
    .await;
}
