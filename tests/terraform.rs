//! Terraform as the contract: the modules are formatted; the LocalStack example is applied
//! for real, its `veltrix_config` output drives the worker binary end to end, and it is
//! destroyed again; `examples/aws` is validated and planned with the mirrored AWS provider
//! (against LocalStack's STS), and what it plans (queue names, the IRSA trust, encryption, the
//! TLS-only queue policies, the worker's IAM policy with and without a KMS key) is checked and
//! compared with deploy/kubernetes. The Google provider is neither in this machine's mirror nor
//! downloadable here, so of the GCP module the provider-less `layout` submodule (its names and
//! rendered `veltrix_config`) is applied, loaded by `veltrix check` and compared with the
//! manifests.
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
    terraform_with(dir, args, &[])
}

/// `terraform ARGS` in `dir` with extra environment variables.
fn terraform_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("terraform");
    cmd.current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
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
    assert_eq!(
        statements(&policy),
        worker_statements(
            localstack::queue_arn(&client, &source_url).await,
            vec![
                localstack::queue_arn(&client, &dlq_url).await,
                localstack::queue_arn(&client, &forwarded_url).await,
            ],
        ),
        "the worker policy grants exactly what the worker calls, on the queues it calls it on"
    );
    // What LocalStack holds: every queue encrypted (SSE-SQS by default) and TLS-only.
    for url in [&source_url, &dlq_url, &forwarded_url] {
        let attrs = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = attrs.attributes().unwrap();
        let get = |k: &str| attrs.get(&k.into()).cloned().unwrap_or_default();
        assert_eq!(get("SqsManagedSseEnabled"), "true", "{url}: SSE-SQS");
        let queue_policy: serde_json::Value = serde_json::from_str(&get("Policy")).unwrap();
        assert_denies_insecure_transport(&queue_policy, &get("QueueArn"));
    }

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

/// An IAM policy's statements as (Sid, sorted actions, sorted resources), in order.
fn statements(policy: &serde_json::Value) -> Vec<(String, Vec<&str>, Vec<String>)> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
            v => vec![v.as_str().unwrap().to_string()],
        }
    };
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut actions: Vec<&str> = match &s["Action"] {
                serde_json::Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
                v => vec![v.as_str().unwrap()],
            };
            actions.sort();
            let mut resources = strings(&s["Resource"]);
            resources.sort();
            (s["Sid"].as_str().unwrap_or("").to_string(), actions, resources)
        })
        .collect()
}

/// The worker policy's statements without a KMS key, as [`statements`] gives them: consume
/// `source`; send to and read the attributes of `sends` (sorted here).
fn worker_statements(source: String, mut sends: Vec<String>) -> Vec<(String, Vec<&'static str>, Vec<String>)> {
    sends.sort();
    vec![
        (
            "ConsumeSource".to_string(),
            vec![
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            ],
            vec![source],
        ),
        (
            "SendDeadLettersAndForwards".to_string(),
            vec!["sqs:GetQueueAttributes", "sqs:SendMessage"],
            sends,
        ),
    ]
}

/// A queue policy that denies every request without TLS on `arn`, and allows nothing.
fn assert_denies_insecure_transport(policy: &serde_json::Value, arn: &str) {
    let statements = policy["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{policy}");
    let s = &statements[0];
    assert_eq!(s["Effect"], "Deny", "{policy}");
    assert_eq!(s["Action"], "sqs:*", "{policy}");
    assert_eq!(s["Principal"], "*", "{policy}");
    assert_eq!(s["Resource"], arn, "{policy}");
    assert_eq!(s["Condition"]["Bool"]["aws:SecureTransport"], "false", "{policy}");
}

/// The YAML documents of a deploy/kubernetes file, as JSON.
fn manifest(file: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes").join(file)).unwrap();
    text.split("\n---")
        .map(|d| serde_norway::from_str::<serde_json::Value>(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn manifest_kind(file: &str, kind: &str) -> serde_json::Value {
    manifest(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"))
}

/// The last path segment of a queue URL: the queue's name.
fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// The default of `variable "NAME"` in a .tf file (a string, or a list as JSON), read from the
/// text: the GCP example cannot be planned here (no Google provider), so its defaults are read.
fn variable_default(tf: &str, name: &str) -> serde_json::Value {
    let start = tf
        .find(&format!("variable \"{name}\" {{"))
        .unwrap_or_else(|| panic!("no variable {name}"));
    let block = &tf[start..start + tf[start..].find("\n}").unwrap()];
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("default"))
        .unwrap_or_else(|| panic!("variable {name} has no default"));
    serde_json::from_str(line.split_once('=').unwrap().1.trim()).unwrap()
}

/// What examples/aws is planned with: the AWS provider talks to LocalStack (STS, for the
/// account id), with test credentials and no instance metadata.
const AWS_EXAMPLE_ENV: [(&str, &str); 5] = [
    ("AWS_ENDPOINT_URL", localstack::ENDPOINT),
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "eu-west-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The IRSA variables examples/aws requires.
const OIDC_VARS: [&str; 2] = [
    "-var=oidc_provider_arn=arn:aws:iam::000000000000:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE",
    "-var=oidc_provider_url=oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE",
];

/// A copy of terraform/ with examples/aws initialised (mirrored provider) and validated.
fn aws_example() -> (tempfile::TempDir, PathBuf) {
    let dir = terraform_copy();
    let example = dir.path().join("terraform/examples/aws");
    ok(
        terraform_with(&example, &["init", "-input=false"], &AWS_EXAMPLE_ENV),
        "terraform init",
    );
    ok(
        terraform_with(&example, &["validate"], &AWS_EXAMPLE_ENV),
        "terraform validate",
    );
    (dir, example)
}

/// `terraform plan` of examples/aws as `terraform show -json` prints it: resource address →
/// planned values.
fn plan_aws_example(extra_vars: &[&str]) -> Planned {
    let (_dir, example) = aws_example();
    let mut args = vec!["plan", "-input=false", "-out=plan.bin"];
    args.extend_from_slice(&OIDC_VARS);
    args.extend_from_slice(extra_vars);
    ok(terraform_with(&example, &args, &AWS_EXAMPLE_ENV), "terraform plan");
    let shown = terraform_with(&example, &["show", "-json", "plan.bin"], &AWS_EXAMPLE_ENV);
    let plan: serde_json::Value = serde_json::from_str(&ok(shown, "terraform show")).unwrap();
    let resources = plan["resource_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["address"].as_str().unwrap().to_string(), r["change"]["after"].clone()))
        .collect();
    let outputs = plan["planned_values"]["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["value"].clone()))
        .collect();
    Planned { resources, outputs }
}

/// A plan: resource address → planned values, and output name → planned value (null when
/// known only after apply).
struct Planned {
    resources: std::collections::HashMap<String, serde_json::Value>,
    outputs: std::collections::HashMap<String, serde_json::Value>,
}

#[test]
fn aws_example_plans_encrypted_tls_only_queues_under_the_names_the_manifests_use() {
    localstack::ensure_running();
    let planned = plan_aws_example(&[]).resources;
    let get = |address: &str| {
        planned
            .get(address)
            .unwrap_or_else(|| panic!("{address} is not planned: {:?}", planned.keys()))
    };
    let (source, dlq) = (
        get("module.worker.aws_sqs_queue.source"),
        get("module.worker.aws_sqs_queue.dead_letter"),
    );

    // KEDA scales on, and the Deployment consumes, the queue the module creates.
    let scaled = manifest_kind("keda-aws-sqs.yaml", "ScaledObject");
    let keda_url = scaled["spec"]["triggers"][0]["metadata"]["queueURL"].as_str().unwrap();
    assert_eq!(queue_name(keda_url), source["name"], "KEDA's queueURL");
    let deployment = manifest_kind("deployment.yaml", "Deployment");
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let env_value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["value"]
            .as_str()
            .unwrap()
    };
    assert_eq!(queue_name(env_value("ORDERS_QUEUE_URL")), source["name"]);
    assert_eq!(queue_name(env_value("ORDERS_DLQ_URL")), dlq["name"]);
    assert_eq!(
        keda_url,
        env_value("ORDERS_QUEUE_URL"),
        "KEDA watches the queue the worker reads"
    );

    // IRSA: the role trusts exactly the manifests' service account, for STS tokens only, and
    // the service account names that role.
    let role = get("aws_iam_role.worker");
    let trust: serde_json::Value = serde_json::from_str(role["assume_role_policy"].as_str().unwrap()).unwrap();
    let conditions = &trust["Statement"][0]["Condition"]["StringEquals"];
    let account = manifest_kind("serviceaccount.yaml", "ServiceAccount");
    let subject = format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"].as_str().unwrap(),
        account["metadata"]["name"].as_str().unwrap()
    );
    let issuer = "oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE";
    assert_eq!(conditions[format!("{issuer}:sub")], subject.as_str(), "{trust}");
    assert_eq!(conditions[format!("{issuer}:aud")], "sts.amazonaws.com", "{trust}");
    let role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap();
    assert_eq!(
        role_arn.rsplit('/').next().unwrap(),
        role["name"],
        "the service account's role-arn names the example's role"
    );

    // Every queue: SSE-SQS, and a policy that refuses requests without TLS.
    let queues: Vec<_> = planned
        .iter()
        .filter(|(a, _)| a.starts_with("module.worker.aws_sqs_queue."))
        .collect();
    assert_eq!(queues.len(), 4, "source, dead-letter queue, two targets");
    for (address, q) in &queues {
        assert_eq!(q["sqs_managed_sse_enabled"], true, "{address}");
        assert!(q["kms_master_key_id"].is_null(), "{address}");
        let policy: serde_json::Value = serde_json::from_str(q["policy"].as_str().unwrap()).unwrap();
        let arn = format!("arn:aws:sqs:eu-west-1:000000000000:{}", q["name"].as_str().unwrap());
        assert_denies_insecure_transport(&policy, &arn);
    }

    // The worker's policy: the source, the dead-letter queue and both targets (preflight reads
    // their attributes), and no KMS without a key.
    let policy: serde_json::Value =
        serde_json::from_str(get("aws_iam_role_policy.worker")["policy"].as_str().unwrap()).unwrap();
    let arn = |name: &str| format!("arn:aws:sqs:eu-west-1:000000000000:{name}");
    assert_eq!(
        statements(&policy),
        worker_statements(
            arn("orders"),
            vec![arn("orders-billing"), arn("orders-dlq"), arn("orders-fraud")]
        )
    );
}

#[test]
fn aws_example_with_a_kms_key_plans_sse_kms_and_lets_the_worker_use_the_key() {
    localstack::ensure_running();
    let key = "arn:aws:kms:eu-west-1:000000000000:key/4f1e2d3c-0000-4000-8000-000000000001";
    let plan = plan_aws_example(&[&format!("-var=kms_key_arn={key}")]);
    let planned = &plan.resources;
    let queues: Vec<_> = planned
        .iter()
        .filter(|(a, _)| a.starts_with("module.worker.aws_sqs_queue."))
        .collect();
    assert_eq!(queues.len(), 4);
    for (address, q) in &queues {
        assert_eq!(q["kms_master_key_id"], key, "{address}");
        assert_eq!(q["kms_data_key_reuse_period_seconds"], 300, "{address}");
        assert_ne!(q["sqs_managed_sse_enabled"], true, "{address}: SSE-KMS, not SSE-SQS");
    }
    // Both the worker's and the replay operator's policies may use the key: receiving
    // decrypts, sending encrypts.
    let replay = plan.outputs["replay_policy_json"]
        .as_str()
        .expect("the replay policy is known at plan time")
        .to_string();
    let worker = planned["aws_iam_role_policy.worker"]["policy"]
        .as_str()
        .unwrap()
        .to_string();
    for (who, policy) in [("worker", worker), ("replay", replay)] {
        let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
        let kms = statements(&policy)
            .into_iter()
            .find(|(sid, _, _)| sid == "UseQueueKey")
            .unwrap_or_else(|| panic!("no KMS statement in the {who} policy: {policy}"));
        assert_eq!(kms.1, vec!["kms:Decrypt", "kms:GenerateDataKey"], "{who}");
        assert_eq!(kms.2, vec![key.to_string()], "{who}");
    }

    // A value that is not a KMS ARN is refused at plan time, with the variable's message.
    let (_dir, example) = aws_example();
    let mut args = vec!["plan", "-input=false", "-var=kms_key_arn=alias/orders"];
    args.extend_from_slice(&OIDC_VARS);
    let out = terraform_with(&example, &args, &AWS_EXAMPLE_ENV);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kms_key_arn: the ARN of a KMS key"), "{stderr}");
}

#[test]
fn pubsub_layout_renders_a_config_veltrix_check_loads_with_the_names_the_manifests_use() {
    let dir = terraform_copy();
    let gcp_example = std::fs::read_to_string(repo().join("terraform/examples/gcp/main.tf")).unwrap();
    let name = variable_default(&gcp_example, "name");
    let targets = variable_default(&gcp_example, "targets");
    // The manifests' placeholder project (the example takes the real one as a variable).
    let account = manifest_kind("serviceaccount.yaml", "ServiceAccount");
    let email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
        .as_str()
        .unwrap();
    let project = email
        .split_once('@')
        .unwrap()
        .1
        .strip_suffix(".iam.gserviceaccount.com")
        .unwrap();

    let root = dir.path().join("render");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("main.tf"),
        format!(
            "module \"layout\" {{\n  source  = \"../terraform/modules/pubsub-worker/layout\"\n  project = \"{project}\"\n  name    = {name}\n  targets = {targets}\n}}\n\n\
             output \"veltrix_config\" {{\n  value = module.layout.veltrix_config\n}}\n\
             output \"subscription_id\" {{\n  value = module.layout.subscription_id\n}}\n\
             output \"worker_account_id\" {{\n  value = module.layout.worker_account_id\n}}\n"
        ),
    )
    .unwrap();
    ok(terraform(&root, &["init", "-input=false"]), "terraform init");
    ok(
        terraform(&root, &["apply", "-auto-approve", "-input=false"]),
        "terraform apply",
    );
    let outputs: serde_json::Value =
        serde_json::from_str(&ok(terraform(&root, &["output", "-json"]), "terraform output -json")).unwrap();
    let output = |key: &str| outputs[key]["value"].as_str().unwrap().to_string();

    // The rendered config, completed as the output's description says, is valid.
    let config = root.join("veltrix.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[pipeline]\ndead_letter = \"dlq\"\n\n[[rules]]\nname = \"fraud-checks\"\nmatch = {{ body = {{ type = [\"order.created\"] }} }}\nactions = [{{ type = \"forward\", target = \"fraud\" }}]\n",
            output("veltrix_config")
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_veltrix"))
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(
        parsed["source"]["subscription"].as_str(),
        Some(output("subscription_id").as_str())
    );
    for t in targets.as_array().unwrap() {
        let t = t.as_str().unwrap();
        assert_eq!(
            parsed["targets"][t]["topic"].as_str().unwrap(),
            format!("projects/{project}/topics/{}-{t}", name.as_str().unwrap())
        );
    }

    // KEDA scales on that subscription; the service account names the example's account, and
    // the example's Workload Identity binding names the manifests' service account.
    let scaled = manifest_kind("keda-gcp-pubsub.yaml", "ScaledObject");
    assert_eq!(
        scaled["spec"]["triggers"][0]["metadata"]["subscriptionName"]
            .as_str()
            .unwrap(),
        output("subscription_id")
    );
    assert_eq!(
        email,
        format!("{}@{project}.iam.gserviceaccount.com", output("worker_account_id"))
    );
    assert!(gcp_example.contains("account_id   = module.names.worker_account_id"));
    assert_eq!(
        variable_default(&gcp_example, "kubernetes_service_account"),
        format!(
            "{}/{}",
            account["metadata"]["namespace"].as_str().unwrap(),
            account["metadata"]["name"].as_str().unwrap()
        )
    );

    // The module names every topic and subscription from the layout, never on its own.
    let module = std::fs::read_to_string(repo().join("terraform/modules/pubsub-worker/main.tf")).unwrap();
    let resources: Vec<&str> = module.split("\nresource \"google_pubsub_").skip(1).collect();
    let mut named = 0;
    for resource in resources {
        let block = &resource[..resource.find("\n}").unwrap()];
        for line in block.lines().filter(|l| l.trim_start().starts_with("name ")) {
            assert!(
                line.contains("module.layout.") || line.contains("each.value"),
                "pubsub-worker names a resource outside the layout: {line}"
            );
            named += 1;
        }
    }
    assert_eq!(
        named, 5,
        "source, dead-letter and target topics; source and dead-letter subscriptions"
    );
}
