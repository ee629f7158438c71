//! Terraform as the contract: the modules are formatted, and the LocalStack example is applied
//! for real, its `veltrix_config` output drives the worker binary end to end, and it is
//! destroyed again. (The GCP module is only format-checked: the Google provider is neither in
//! this machine's mirror nor downloadable here, and a test that cannot run is not kept.)
//!
//! One apply per run (each SQS queue takes ~25 s to create on LocalStack). Providers come from
//! the local mirror at /opt/tf-plugins when it exists (CI machines), else from the registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use common::localstack;

const MIRROR: &str = "/opt/tf-plugins";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `terraform ARGS` in `dir`, with the mirror CLI config when there is a mirror.
fn terraform(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("terraform");
    cmd.current_dir(dir)
        .args(args)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1");
    if Path::new(MIRROR).is_dir() {
        // Outside the directory terraform runs in: that may be the repository's terraform/.
        let rc = std::env::temp_dir().join(format!("veltrix-mirror-{}.tfrc", std::process::id()));
        if !rc.exists() {
            let providers: Vec<String> = std::fs::read_dir(Path::new(MIRROR).join("registry.terraform.io/hashicorp"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| {
                            format!(
                                "\"registry.terraform.io/hashicorp/{}\"",
                                e.file_name().to_string_lossy()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let list = providers.join(", ");
            std::fs::write(
                &rc,
                format!(
                    "provider_installation {{\n  filesystem_mirror {{\n    path = \"{MIRROR}\"\n    include = [{list}]\n  }}\n  direct {{\n    exclude = [{list}]\n  }}\n}}\n"
                ),
            )
            .unwrap();
        }
        cmd.env("TF_CLI_CONFIG_FILE", rc);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("terraform is not installed or cannot run: {e}"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Copies terraform/ (modules and examples, so relative module paths hold) into a fresh
/// directory: state and .terraform never land in the repository.
fn terraform_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("terraform"), &dir.path().join("terraform"));
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".terraform" || name.to_string_lossy().starts_with("terraform.tfstate") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn terraform_files_are_formatted() {
    let out = terraform(&repo().join("terraform"), &["fmt", "-check", "-recursive", "-diff"]);
    ok(out, "terraform fmt -check (run `terraform fmt -recursive terraform`)");
}

/// Destroys what the test applied, whatever happens to the assertions.
struct Applied {
    dir: PathBuf,
    name: String,
}

impl Drop for Applied {
    fn drop(&mut self) {
        let out = terraform(
            &self.dir,
            &[
                "destroy",
                "-auto-approve",
                "-input=false",
                &format!("-var=name={}", self.name),
            ],
        );
        if !out.status.success() {
            eprintln!("terraform destroy failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

async fn receive_all(client: &Client, url: &str, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while bodies.len() < n && Instant::now() < deadline {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            bodies.push(m.body().unwrap_or_default().to_string());
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localstack_example_applies_and_its_output_config_runs_the_worker() {
    localstack::ensure_running();
    let client = localstack::client();
    let dir = terraform_copy();
    let example = dir.path().join("terraform/examples/localstack");
    let name = format!("veltrix-tf-{:08x}", fastrand::u32(..));
    ok(terraform(&example, &["init", "-input=false"]), "terraform init");
    let applied = Applied {
        dir: example.clone(),
        name: name.clone(),
    };
    ok(
        terraform(
            &example,
            &["apply", "-auto-approve", "-input=false", &format!("-var=name={name}")],
        ),
        "terraform apply",
    );
    let fragment = ok(
        terraform(&example, &["output", "-raw", "veltrix_config"]),
        "terraform output",
    );
    let outputs: serde_json::Value =
        serde_json::from_str(&ok(terraform(&example, &["output", "-json"]), "terraform output -json")).unwrap();
    let url = |key: &str| outputs[key]["value"].as_str().unwrap().to_string();
    let (source_url, dlq_url) = (url("source_queue_url"), url("dead_letter_queue_url"));
    let forwarded_url = outputs["target_queue_urls"]["value"]["forwarded"]
        .as_str()
        .unwrap()
        .to_string();
    let policy: serde_json::Value =
        serde_json::from_str(outputs["worker_policy_json"]["value"].as_str().unwrap()).unwrap();
    let actions: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>(),
            v => v.as_str().into_iter().collect(),
        })
        .collect();
    let mut sorted = actions.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec![
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ReceiveMessage",
            "sqs:SendMessage"
        ],
        "the worker policy grants exactly what the worker calls"
    );

    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "{fragment}\n[pipeline]\ndead_letter = \"dlq\"\nretry = {{ max_attempts = 3, initial_backoff_ms = 200, max_backoff_secs = 1 }}\ndrain_timeout_secs = 10\n\n\
             [[rules]]\nname = \"heartbeats\"\nmatch = {{ body = {{ type = [\"heartbeat\"] }} }}\nfinal = true\nactions = [{{ type = \"drop\" }}]\n\n\
             [[rules]]\nname = \"orders\"\nmatch = {{ body = {{ type = [{{ prefix = \"order.\" }}] }} }}\nactions = [{{ type = \"forward\", target = \"forwarded\", transform = \"{{id: .body.id}}\" }}]\n"
        ),
    )
    .unwrap();
    let veltrix = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_veltrix"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .output()
            .unwrap()
    };
    let check = veltrix(&["check", "--preflight", "-c", config.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        report.contains("preflight: 0 error(s)"),
        "the applied queues match the config: {report}"
    );

    let events = [
        r#"{"type": "order.created", "id": "o-1"}"#,
        r#"{"type": "order.created", "id": "o-2"}"#,
        r#"{"type": "order.paid", "id": "o-3"}"#,
        r#"{"type": "heartbeat"}"#,
        r#"{"type": "heartbeat"}"#,
        r#"{"type": "refund.created", "id": "r-1"}"#,
        "not json",
    ];
    for e in events {
        client
            .send_message()
            .queue_url(&source_url)
            .message_body(e)
            .send()
            .await
            .unwrap();
    }
    let mut worker = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["run", "-c", config.to_str().unwrap()])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (f, d, s) = (
            localstack::depth(&client, &forwarded_url).await,
            localstack::depth(&client, &dlq_url).await,
            localstack::depth(&client, &source_url).await,
        );
        if f.0 == 3 && d.0 == 2 && s == (0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not routed in time: forwarded {f:?}, dlq {d:?}, source {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || {
        let status = worker.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(worker.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    assert!(output.0.success(), "{}", output.1);
    assert!(
        output
            .1
            .contains("received=7 forwarded=3 dropped=2 acked_unmatched=0 dead_lettered=2"),
        "{}",
        output.1
    );
    let mut forwarded = receive_all(&client, &forwarded_url, 3).await;
    forwarded.sort();
    assert_eq!(forwarded, vec![r#"{"id":"o-1"}"#, r#"{"id":"o-2"}"#, r#"{"id":"o-3"}"#]);

    drop(applied); // terraform destroy
    let left = client.list_queues().queue_name_prefix(&name).send().await.unwrap();
    assert!(left.queue_urls().is_empty(), "destroy left {:?}", left.queue_urls());
}
