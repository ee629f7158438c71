//! The container harness shared by tests/container.rs and benches/fleet.rs: the image under
//! test (`VELTRIX_IMAGE`, built by deploy/build-image.sh), worker containers started through
//! the `testcontainers` crate over podman's Docker-compatible API (`DOCKER_HOST`) on the host
//! network, hardened as deploy/kubernetes/deployment.yaml runs them; the queues or topics of
//! one run with its replicas' configs; and the tally that checks every arrival byte for byte.
//!
//! Included with `#[path]` next to a `mod common` (tests/common) in the including crate.
#![allow(dead_code)] // the tests and the bench each use part of it

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use testcontainers::core::{AccessMode, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::time::Instant;
use veltrix_pubsub::emulator::EmulatorAdmin;
use veltrix_queue::{OutboundMessage, Publisher, Received, Source};

use crate::common;
use crate::common::localstack::{self, ENDPOINT};

/// What each container may hold at once (forwarded or not, not yet settled).
pub const MAX_IN_FLIGHT: u64 = 64;
/// Pub/Sub flow control of the containers' one stream: messages leased to a replica ahead of
/// processing. A frozen replica holds these too, and after its resume forwards the ones whose
/// leases expired meanwhile (duplicates, never a loss).
pub const PUBSUB_OUTSTANDING: u64 = 64;
/// How long a settled message's ack may still be on its way to the provider when a container
/// dies: the worker's ack flush (10 ms) or the Pub/Sub client's ack flush period (100 ms), plus
/// the ack call itself. A killed or frozen container "held" its in-flight messages plus the
/// acks of this window, measured at its own settle rate.
pub const ACK_WINDOW: Duration = Duration::from_millis(200);
/// `podman stop` grace period: above the config's `drain_timeout_secs` (20).
pub const STOP_GRACE_SECS: i32 = 30;
/// `podman stop`'s (and `docker stop`'s) own grace period when none is given.
pub const PODMAN_DEFAULT_STOP_SECS: i32 = 10;
/// The SQS source queue's visibility timeout.
pub const SQS_VISIBILITY_SECS: u64 = 5;
/// The Pub/Sub subscription's ack deadline (the emulator's default).
pub const PUBSUB_ACK_DEADLINE_SECS: u64 = 10;
/// The attribute each test message carries its number in.
pub const SEQ: &str = "seq";
/// Label on every container these tests start (scripts/test.sh removes leftovers by it).
pub const LABEL: &str = "veltrix-test";

// ---------------------------------------------------------------------------------------------
// The image and the containers.

/// The image under test, `(name, tag)`.
pub fn image() -> (String, String) {
    let reference = std::env::var("VELTRIX_IMAGE").unwrap_or_else(|_| "localhost/veltrix:dev".into());
    let (name, tag) = reference
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("VELTRIX_IMAGE={reference} has no tag"));
    (name.to_string(), tag.to_string())
}

/// Fails loudly unless podman, its API socket and the image are there.
pub fn require_podman_and_image() {
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
pub fn podman(args: &[&str]) -> std::process::Output {
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
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One worker container and its metrics address.
pub struct Worker {
    pub container: ContainerAsync<GenericImage>,
    metrics: String,
    http: reqwest::Client,
}

impl Worker {
    /// Starts the image as replica `replica` of the configs in `config_dir` and waits (bounded)
    /// until `/readyz` says it is ready.
    pub async fn start(config_dir: &Path, replica: usize) -> Worker {
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

    pub fn id(&self) -> &str {
        self.container.id()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
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
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await.expect("the worker serves /metrics");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits (bounded) until these workers settled at least `n` messages between them, by their
    /// own metrics: the trigger for a fault "mid-run" (reading the targets lags behind).
    pub async fn wait_settled(workers: &[&Worker], n: u64) {
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
    pub async fn settle_rate(&self) -> f64 {
        let before = self.metric("veltrix_messages_settled_total").await;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = self.metric("veltrix_messages_settled_total").await;
        (after - before) / started.elapsed().as_secs_f64()
    }

    /// The most this worker can hold when it dies or freezes now: its in-flight limit, what the
    /// source leases to it ahead of processing (`prefetch`), and the acks of the last
    /// [`ACK_WINDOW`] at its current rate.
    pub async fn holds_at_most(&self, prefetch: u64) -> u64 {
        MAX_IN_FLIGHT + prefetch + (self.settle_rate().await * ACK_WINDOW.as_secs_f64()).ceil() as u64
    }

    pub async fn logs(&self) -> String {
        let out = self.container.stderr_to_vec().await.unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The container runs as uid/gid 65532 on a read-only root filesystem: read from the
    /// kernel's view of its main process, not from the image's metadata.
    pub fn assert_hardened(&self) {
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
    pub async fn stop_gracefully(self) {
        self.stop_within(Some(STOP_GRACE_SECS)).await;
    }

    /// `podman stop` with a grace period of `grace_secs` (`None`: [`PODMAN_DEFAULT_STOP_SECS`],
    /// what `podman stop` and `docker stop` give a container created by their CLI; one created
    /// through the API, as here, has a stop timeout of 0 unless told). Asserts exit 0 within
    /// it; returns how long the stop took.
    pub async fn stop_within(self, grace_secs: Option<i32>) -> Duration {
        let grace_secs = grace_secs.unwrap_or(PODMAN_DEFAULT_STOP_SECS);
        let started = Instant::now();
        self.container
            .stop_with_timeout(Some(grace_secs))
            .await
            .expect("stop the container");
        let took = started.elapsed();
        let grace = Duration::from_secs(grace_secs as u64);
        let code = self.container.exit_code().await.expect("exit code");
        assert_eq!(
            code,
            Some(0),
            "podman stop: the worker drains and exits 0 (took {took:?}); its log:\n{}",
            self.logs().await
        );
        assert!(took < grace, "within the grace period ({grace:?}): {took:?}");
        self.container.rm().await.expect("remove the container");
        took
    }

    /// `podman kill`: SIGKILL, no drain.
    pub async fn kill(self) {
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
pub fn body_of(n: u64) -> String {
    let kind = if n.is_multiple_of(10) { "unrouted" } else { "ok" };
    format!(r#"{{"n":{n},"kind":"{kind}"}}"#)
}

pub fn message(n: u64) -> OutboundMessage {
    OutboundMessage {
        body: Bytes::from(body_of(n)),
        attributes: [(SEQ.to_string(), n.to_string())].into_iter().collect(),
        ..Default::default()
    }
}

/// The rules of replica `r`: its rule names say which replica forwarded or dead-lettered a
/// message (`veltrix.rule`), so every duplicate can be traced to the replica that caused it.
pub fn rules(r: usize) -> String {
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
pub const REPLICAS: usize = 3;

/// Where the provider's messages are, for the end-of-run checks.
pub enum Origin {
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
pub struct Stack {
    pub provider: &'static str,
    /// Messages `0..sent` were published to the source.
    pub sent: u64,
    /// Messages the source leases to a replica ahead of processing (Pub/Sub flow control), as
    /// [`Tuning::Bounded`] sets it (the fault tests' bounds use it).
    pub prefetch: u64,
    origin: Origin,
    config: tempfile::TempDir,
    /// The forward target, when it is the provider's (not with [`Out::Http`]).
    out: Option<Arc<dyn Source>>,
    dlq: Arc<dyn Source>,
}

/// Where a stack's replicas forward to (dead letters always go to the provider).
#[derive(Debug, Clone)]
pub enum Out {
    /// A queue (topic) of the stack's provider, read back by [`Stack::collect`].
    Queue,
    /// An HTTP handler at `url`, sent at most `concurrency` messages at a time by each replica
    /// (`max_concurrency`); the caller counts what arrives there.
    Http { url: String, concurrency: u32 },
}

impl Out {
    /// The `[targets.out]` table, or `provider_table` for [`Out::Queue`].
    fn table(&self, provider_table: &str) -> String {
        match self {
            Out::Queue => format!("[targets.out]\n{provider_table}"),
            Out::Http { url, concurrency } => {
                format!("[targets.out]\ntype = \"http\"\nurl = \"{url}\"\nmax_concurrency = {concurrency}\n")
            }
        }
    }
}

/// How a stack's replicas are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Small, known bounds for the fault tests: `max_in_flight` [`MAX_IN_FLIGHT`], 1 s receives
    /// and a [`SQS_VISIBILITY_SECS`] visibility timeout on SQS, one Pub/Sub stream with
    /// [`PUBSUB_OUTSTANDING`] messages outstanding.
    Bounded,
    /// The worker's defaults, as a user deploys it (benches/fleet.rs measures throughput).
    Defaults,
}

/// The configs of a stack's replicas: the source and targets given, the rules above, and with
/// [`Tuning::Bounded`] a small in-flight limit.
pub fn write_config(dir: &Path, source: &str, targets: &str, tuning: Tuning) {
    use std::os::unix::fs::PermissionsExt;
    let limit = match tuning {
        Tuning::Bounded => format!("max_in_flight = {MAX_IN_FLIGHT}\n"),
        Tuning::Defaults => String::new(),
    };
    for r in 0..REPLICAS {
        let text = format!(
            "{source}{limit}{targets}\n\
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
    /// Queues on LocalStack with messages `0..n` on the source, and the replicas' configs.
    pub async fn sqs(what: &str, n: u64, tuning: Tuning, forward: &Out) -> Stack {
        let client = localstack::client();
        let (visibility, receive) = match tuning {
            Tuning::Bounded => (
                vec![(QueueAttributeName::VisibilityTimeout, SQS_VISIBILITY_SECS.to_string())],
                "wait_time_secs = 1\n",
            ),
            Tuning::Defaults => (Vec::new(), ""),
        };
        let source = localstack::create_queue(&client, what, false, &visibility).await;
        let out = match forward {
            Out::Queue => Some(localstack::create_queue(&client, &format!("{what}-out"), false, &[]).await),
            Out::Http { .. } => None,
        };
        let dlq = localstack::create_queue(&client, &format!("{what}-dlq"), false, &[]).await;
        let target = veltrix_sqs::SqsTarget::new(client.clone(), source.clone(), Some(ENDPOINT.into()));
        publish(&target, n).await;
        let config = tempfile::tempdir().unwrap();
        let sqs = |url: &str| format!("type = \"sqs\"\nqueue_url = \"{url}\"\nendpoint_url = \"{ENDPOINT}\"\n");
        write_config(
            config.path(),
            &format!("[source]\n{}{receive}", sqs(&source)),
            &format!(
                "{}[targets.dlq]\n{}",
                forward.table(&sqs(out.as_deref().unwrap_or_default())),
                sqs(&dlq)
            ),
            tuning,
        );
        let reader = match &out {
            Some(url) => Some(Arc::new(localstack::open_source(url, None).await) as Arc<dyn Source>),
            None => None,
        };
        Stack {
            provider: "SQS",
            sent: n,
            // A receive asks only for what the in-flight limit has room for.
            prefetch: 0,
            out: reader,
            dlq: Arc::new(localstack::open_source(&dlq, None).await),
            origin: Origin::Sqs {
                client,
                source: source.clone(),
                queues: [Some(source), out, Some(dlq)].into_iter().flatten().collect(),
            },
            config,
        }
    }

    /// Topics and subscriptions on the emulator with messages `0..n` on the source, and the
    /// replicas' configs.
    pub async fn pubsub(what: &str, n: u64, tuning: Tuning, forward: &Out) -> Stack {
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
        let flow = match tuning {
            Tuning::Bounded => format!("streams = 1\nmax_outstanding_messages = {PUBSUB_OUTSTANDING}\n"),
            Tuning::Defaults => String::new(),
        };
        write_config(
            config.path(),
            &format!(
                "[source]\ntype = \"pubsub\"\nsubscription = \"{subscription}\"\nendpoint = \"{endpoint}\"\n{flow}"
            ),
            &format!(
                "{}[targets.dlq]\n{}",
                forward.table(&pubsub(&out_topic)),
                pubsub(&dlq_topic)
            ),
            tuning,
        );
        let out = match forward {
            Out::Queue => Some(Arc::new(common::open_pubsub_source(&admin, &out_sub, None).await) as Arc<dyn Source>),
            Out::Http { .. } => None,
        };
        let dlq = common::open_pubsub_source(&admin, &dlq_sub, None).await;
        Stack {
            provider: "Pub/Sub",
            sent: n,
            prefetch: PUBSUB_OUTSTANDING,
            out,
            dlq: Arc::new(dlq),
            origin: Origin::PubSub { admin, subscription },
            config,
        }
    }

    pub fn dir(&self) -> &Path {
        self.config.path()
    }

    /// Reads and acks what is waiting on the forward and dead-letter targets, checking each
    /// message against what was sent. Returns how many it read.
    pub async fn collect(&self, tally: &mut Tally) -> usize {
        let mut read = 0;
        for (reader, dead) in [(self.out.as_ref(), false), (Some(&self.dlq), true)] {
            let Some(reader) = reader else { continue };
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
    pub async fn collect_until(&self, tally: &mut Tally, limit: Duration, done: impl Fn(u64) -> bool) {
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
    pub async fn collect_rest(&self, tally: &mut Tally) {
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
    pub async fn in_flight(&self) -> Option<u64> {
        Some(self.depth().await?.1)
    }

    /// The source's (visible, in flight) messages, where the provider tells (SQS).
    pub async fn depth(&self) -> Option<(u64, u64)> {
        match &self.origin {
            Origin::Sqs { client, source, .. } => Some(localstack::depth(client, source).await),
            Origin::PubSub { .. } => None,
        }
    }

    /// Nothing is left on the source: SQS says so; on Pub/Sub nothing arrives on the
    /// subscription for longer than its ack deadline (after which anything leased and never
    /// acked would come back).
    pub async fn assert_source_settled(&self) {
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
    pub fn assert_frozen_duplicates(&self, by_frozen: u64, held_at_freeze: u64, settled_after_resume: f64) {
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

    pub async fn cleanup(self) {
        if let Origin::Sqs { client, queues, .. } = &self.origin {
            for url in queues {
                localstack::delete_queue(client, url).await;
            }
        }
    }
}

/// Publishes messages `0..n` to a source, 100 per call.
pub async fn publish(target: &dyn Publisher, n: u64) {
    let all: Vec<OutboundMessage> = (0..n).map(message).collect();
    for chunk in all.chunks(100) {
        for r in target.publish(chunk.to_vec()).await {
            r.expect("publish a test message");
        }
    }
}

/// Every arrival on the targets: `(id, replica that sent it)`, with repeats.
pub struct Tally {
    pub sent: u64,
    arrivals: Vec<(u64, usize)>,
}

impl Tally {
    pub fn new(sent: u64) -> Tally {
        Tally {
            sent,
            arrivals: Vec::new(),
        }
    }

    /// Checks one arrival against what was sent: body byte for byte, the `seq` attribute, the
    /// target its kind goes to, the dead letter's reason; notes the replica (`veltrix.rule`).
    pub fn record(&mut self, d: &veltrix_queue::Delivery, dead: bool) {
        let reason = if dead {
            d.attributes.get_str("veltrix.reason")
        } else {
            None
        };
        self.record_parts(
            d.attributes.get_str(SEQ),
            &d.body,
            d.attributes.get_str("veltrix.rule").unwrap_or_default(),
            dead,
            reason,
        );
    }

    /// [`Tally::record`] from the parts of an arrival: its `seq` attribute, body, `veltrix.rule`
    /// and (dead letters) `veltrix.reason` (an HTTP handler reads them from headers).
    pub fn record_parts(&mut self, seq: Option<&str>, body: &[u8], rule: &str, dead: bool, reason: Option<&str>) {
        let n: u64 = seq.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            panic!(
                "a message without its {SEQ} attribute: {:?}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(
            body,
            body_of(n).as_bytes(),
            "message {n}: the body left exactly as it came"
        );
        assert_eq!(dead, n.is_multiple_of(10), "message {n} went to the right target");
        if dead {
            assert_eq!(reason, Some("unrouted"), "message {n}");
        }
        let replica = rule
            .rsplit_once('-')
            .and_then(|(_, r)| r.parse().ok())
            .unwrap_or_else(|| panic!("message {n}: veltrix.rule {rule:?} names no replica"));
        self.arrivals.push((n, replica));
    }

    /// Adds the arrivals another tally recorded (e.g. an HTTP handler's).
    pub fn merge(&mut self, other: Tally) {
        self.arrivals.extend(other.arrivals);
    }

    pub fn ids(&self) -> BTreeSet<u64> {
        self.arrivals.iter().map(|(n, _)| *n).collect()
    }

    pub fn accounted(&self) -> u64 {
        self.ids().len() as u64
    }

    pub fn duplicates(&self) -> u64 {
        self.arrivals.len() as u64 - self.accounted()
    }

    /// Repeats that no replica in `faulty` took part in: ids that arrived more than once, with
    /// no copy sent by a replica that was killed or frozen.
    pub fn unexplained_duplicates(&self, faulty: &[usize]) -> Vec<u64> {
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
    pub fn duplicates_involving(&self, replica: usize) -> u64 {
        let mut copies: std::collections::BTreeMap<u64, (u64, bool)> = Default::default();
        for (n, r) in &self.arrivals {
            let entry = copies.entry(*n).or_default();
            entry.0 += 1;
            entry.1 |= *r == replica;
        }
        copies.values().filter(|(_, by)| *by).map(|(c, _)| c - 1).sum()
    }

    pub fn missing(&self) -> Vec<u64> {
        let seen = self.ids();
        (0..self.sent).filter(|n| !seen.contains(n)).collect()
    }

    pub fn forwarded_and_dead(&self) -> (usize, usize) {
        let ids = self.ids();
        let dead = ids.iter().filter(|n| n.is_multiple_of(10)).count();
        (ids.len() - dead, dead)
    }
}
