//! The container and Kubernetes files agree with the worker: the ConfigMap's config is valid,
//! probes hit the real endpoints on the metrics port, the grace period covers the drain, KEDA
//! targets the Deployment, and the Grafana dashboard uses only metrics veltrix exports.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every YAML document of a file, as JSON values.
fn docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    text.split("\n---")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| serde_norway::from_str::<Value>(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

fn one(path: &str, kind: &str) -> Value {
    docs(path)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {path}"))
}

fn arg_after<'a>(args: &'a [Value], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args[i + 1].as_str().unwrap()
}

#[test]
fn deployment_agrees_with_the_worker_and_its_config() {
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let configmap = one("deploy/kubernetes/configmap.yaml", "ConfigMap");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = container["args"].as_array().unwrap();

    // The config in the ConfigMap is valid, with the Deployment's environment for ${…}.
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let config_path = arg_after(args, "-c");
    let file_name = Path::new(config_path).file_name().unwrap().to_str().unwrap();
    let text = configmap["data"][file_name]
        .as_str()
        .expect("the ConfigMap holds the file the worker reads");
    let config = veltrix::config::load_str(Path::new(config_path), text, &|name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("the ConfigMap's config is invalid: {e}"));
    config.require_dead_letter(None).unwrap();

    // The config file is mounted where -c points.
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        Path::new(config_path).parent().unwrap(),
        Path::new(mount["mountPath"].as_str().unwrap())
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);

    // Probes: the real endpoints, on the port --metrics-addr listens on.
    let metrics_port: u64 = arg_after(args, "--metrics-addr")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(metrics_port));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"], port["name"],
            "{probe} uses the metrics port"
        );
    }
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], metrics_port.to_string());

    // SIGTERM drains for drain_timeout; the kubelet must wait longer before SIGKILL.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = config.settings.drain_timeout.as_secs();
    assert!(
        grace >= drain + 10,
        "terminationGracePeriodSeconds {grace} must exceed drain_timeout_secs {drain} by 10 s"
    );

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert!(container["resources"]["requests"]["memory"].is_string());

    // The memory limit covers the most the worker can use with this config (and says so).
    let limit = container["resources"]["limits"]["memory"].as_str().unwrap();
    let limit_mib: u64 = limit.strip_suffix("Mi").expect("the limit is in Mi").parse().unwrap();
    let bound_mib = veltrix::config::memory::memory_bound_bytes(&config).div_ceil(1024 * 1024);
    assert!(
        limit_mib >= bound_mib,
        "memory limit {limit} is below the config's bound of {bound_mib} MiB (veltrix check prints it)"
    );
    let yaml = std::fs::read_to_string(repo("deploy/kubernetes/deployment.yaml")).unwrap();
    assert!(
        yaml.contains(&format!("{bound_mib} MiB")),
        "the deployment explains its limit with the bound ({bound_mib} MiB)"
    );
}

#[test]
fn keda_scaled_objects_target_the_deployment() {
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    for (file, trigger) in [
        ("deploy/kubernetes/keda-aws-sqs.yaml", "aws-sqs-queue"),
        ("deploy/kubernetes/keda-gcp-pubsub.yaml", "gcp-pubsub"),
    ] {
        let scaled = one(file, "ScaledObject");
        let auth = one(file, "TriggerAuthentication");
        assert_eq!(
            scaled["spec"]["scaleTargetRef"]["name"], deployment["metadata"]["name"],
            "{file}"
        );
        let t = &scaled["spec"]["triggers"][0];
        assert_eq!(t["type"], trigger, "{file}");
        assert_eq!(t["authenticationRef"]["name"], auth["metadata"]["name"], "{file}");
    }
}

#[test]
fn grafana_dashboard_uses_only_exported_metrics() {
    let text = std::fs::read_to_string(repo("deploy/grafana/veltrix.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut used = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if let Some(name) = word.strip_prefix("veltrix_").map(|_| word) {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                    assert!(
                        veltrix::observe::METRIC_NAMES.contains(&base),
                        "panel `{}` uses unknown metric {name}",
                        panel["title"]
                    );
                    used += 1;
                }
            }
        }
    }
    assert!(
        used >= 10,
        "the dashboard should chart the worker: {used} metric references"
    );
}

/// The image itself is built and run under podman in tests/container.rs; here its file agrees
/// with the Deployment: the same non-root user, and a default command the Deployment repeats.
#[test]
fn dockerfile_runs_as_the_deployments_user_with_its_command() {
    let text = std::fs::read_to_string(repo("deploy/Dockerfile")).unwrap();
    assert!(text.contains("USER 65532:65532"), "non-root");
    assert!(
        text.contains("ARG BINARY_FROM=source"),
        "public builds compile in the first stage"
    );
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let args: Vec<String> = pod["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| format!("{:?}", a.as_str().expect("string arg")))
        .collect();
    assert!(
        text.contains(&format!("CMD [{}]", args.join(", "))),
        "the image's default command is the Deployment's args: {args:?}"
    );
}

/// Every object of the fleet manifests lives in one namespace and selects the Deployment's pods;
/// the PodDisruptionBudget and NetworkPolicy select exactly those labels, the NetworkPolicy
/// opens only the metrics port, and the pod runs as the ServiceAccount that carries both
/// clouds' bindings.
#[test]
fn fleet_objects_select_the_deployment_and_open_only_the_metrics_port() {
    let deployment = one("deploy/kubernetes/deployment.yaml", "Deployment");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let namespace = &deployment["metadata"]["namespace"];
    assert!(namespace.is_string(), "the Deployment names its namespace");
    for file in [
        "configmap.yaml",
        "deployment.yaml",
        "keda-aws-sqs.yaml",
        "keda-gcp-pubsub.yaml",
        "networkpolicy.yaml",
        "poddisruptionbudget.yaml",
        "serviceaccount.yaml",
    ] {
        for doc in docs(&format!("deploy/kubernetes/{file}")) {
            assert_eq!(&doc["metadata"]["namespace"], namespace, "{file}: {}", doc["kind"]);
        }
    }

    let pod = &deployment["spec"]["template"]["spec"];
    let account = one("deploy/kubernetes/serviceaccount.yaml", "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    let annotations = &account["metadata"]["annotations"];
    assert!(annotations["eks.amazonaws.com/role-arn"].is_string(), "IRSA annotation");
    assert!(
        annotations["iam.gke.io/gcp-service-account"].is_string(),
        "Workload Identity annotation"
    );
    assert_eq!(
        pod["automountServiceAccountToken"], false,
        "no Kubernetes API token in the pod"
    );

    let budget = one("deploy/kubernetes/poddisruptionbudget.yaml", "PodDisruptionBudget");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(budget["spec"]["maxUnavailable"], 1, "one replica at a time");

    let policy = one("deploy/kubernetes/networkpolicy.yaml", "NetworkPolicy");
    assert_eq!(&policy["spec"]["podSelector"]["matchLabels"], labels);
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "one ingress rule: Prometheus");
    let port = &pod["containers"][0]["ports"][0];
    assert_eq!(port["name"], "metrics");
    assert_eq!(
        rules[0]["ports"],
        serde_json::json!([{"port": "metrics", "protocol": "TCP"}]),
        "only the metrics port"
    );
    let from = &rules[0]["from"][0];
    assert_eq!(
        from["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "prometheus"
    );
    assert!(
        from["namespaceSelector"]["matchLabels"].is_object(),
        "Prometheus's namespace, not any"
    );
}

/// The project's pinned linters (deploy/tools/install.sh, which scripts/test.sh runs).
fn tool(path: &str) -> PathBuf {
    let tool = repo(path);
    assert!(
        tool.exists(),
        "{} is missing: run deploy/tools/install.sh (scripts/test.sh does)",
        tool.display()
    );
    tool
}

/// A tool's run as (success, stdout followed by stderr).
fn outcome(out: &std::process::Output) -> (bool, String) {
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
const KUBERNETES_VERSION: &str = "1.34";

/// The manifests that are core Kubernetes objects (the KEDA ones are CRDs).
const CORE_MANIFESTS: [&str; 5] = [
    "deploy/kubernetes/configmap.yaml",
    "deploy/kubernetes/deployment.yaml",
    "deploy/kubernetes/networkpolicy.yaml",
    "deploy/kubernetes/poddisruptionbudget.yaml",
    "deploy/kubernetes/serviceaccount.yaml",
];

/// `kubernetes-validate --strict` on `files`: (success, report).
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = std::process::Command::new(tool("deploy/tools/.venv/bin/kubernetes-validate"))
        .args(["-k", KUBERNETES_VERSION, "--strict"])
        .args(files)
        .output()
        .unwrap();
    outcome(&out)
}

/// The KEDA CRD validation (deploy/tools/validate-keda.mjs) on `files`: (success, report).
fn keda_validate(files: &[PathBuf]) -> (bool, String) {
    // The script imports the models from deploy/tools/node_modules, next to it.
    tool("deploy/tools/node_modules/@kubernetes-models/keda");
    let out = std::process::Command::new("node")
        .arg(tool("deploy/tools/validate-keda.mjs"))
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("node cannot run (Debian: apt-get install nodejs): {e}"));
    outcome(&out)
}

#[test]
fn manifests_pass_the_kubernetes_schemas_strictly() {
    let files: Vec<PathBuf> = CORE_MANIFESTS.iter().map(|f| repo(f)).collect();
    let (ok, report) = kubernetes_validate(&files);
    assert!(ok, "{report}");
    let objects: usize = CORE_MANIFESTS.iter().map(|f| docs(f).len()).sum();
    assert_eq!(
        report.matches(&format!("against version {KUBERNETES_VERSION}")).count(),
        objects,
        "every object was validated: {report}"
    );
    assert!(!report.contains("WARN") && !report.contains("ERROR"), "{report}");

    // The validator rejects what it should: a wrong type, and a field the schema lacks.
    assert_rejects_broken_copies(
        "deploy/kubernetes/deployment.yaml",
        &[("replicas: 1", "replicas: one"), ("replicas: 1", "replica: 1")],
        kubernetes_validate,
    );
}

/// Each `(from, to)` edit of `file` makes `validate` fail with an ERROR line.
fn assert_rejects_broken_copies(file: &str, edits: &[(&str, &str)], validate: fn(&[PathBuf]) -> (bool, String)) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo(file)).unwrap();
    for (i, (from, to)) in edits.iter().enumerate() {
        let broken = text.replace(from, to);
        assert_ne!(broken, text, "{file} has no {from:?}");
        let path = dir.path().join(format!("broken-{i}.yaml"));
        std::fs::write(&path, broken).unwrap();
        let (ok, report) = validate(&[path]);
        assert!(!ok && report.contains("ERROR"), "{file} with {to:?} passed: {report}");
    }
}

#[test]
fn keda_objects_pass_the_crd_schemas() {
    let files = [
        repo("deploy/kubernetes/keda-aws-sqs.yaml"),
        repo("deploy/kubernetes/keda-gcp-pubsub.yaml"),
    ];
    let (ok, report) = keda_validate(&files);
    assert!(ok, "{report}");
    assert_eq!(report.matches("passed for ScaledObject/").count(), 2, "{report}");
    assert_eq!(
        report.matches("passed for TriggerAuthentication/").count(),
        2,
        "{report}"
    );

    assert_rejects_broken_copies(
        "deploy/kubernetes/keda-aws-sqs.yaml",
        &[
            ("minReplicaCount: 1", "minReplicaCount: one"),
            ("provider: aws", "provider: amazon"),
        ],
        keda_validate,
    );
}

/// checkov over terraform/ and deploy/ with .checkov.yaml: every check not on its documented
/// skip list passes, in all three frameworks.
#[test]
fn checkov_passes_with_only_the_documented_skips() {
    let out = std::process::Command::new(tool("deploy/tools/.venv/bin/checkov"))
        .args(["--config-file", ".checkov.yaml"])
        .current_dir(repo(""))
        .output()
        .unwrap();
    let (ok, report) = outcome(&out);
    assert!(ok, "{report}");
    for framework in ["terraform", "kubernetes", "dockerfile"] {
        assert!(
            report.contains(&format!("{framework} scan results")),
            "{framework} scanned: {report}"
        );
    }
    let mut counts = 0;
    for line in report.lines().filter(|l| l.starts_with("Passed checks:")) {
        assert!(line.contains("Failed checks: 0,"), "{line}\n{report}");
        counts += 1;
    }
    assert!(counts >= 3, "{report}");

    // Each skipped check has its reason written above it.
    let config = std::fs::read_to_string(repo(".checkov.yaml")).unwrap();
    let lines: Vec<&str> = config.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- CKV_") {
            assert!(
                lines[i - 1].trim_start().starts_with('#'),
                "{} has no reason in .checkov.yaml",
                line.trim()
            );
        }
    }
}
