//! deploy/kubernetes/: every manifest validates against the Kubernetes API schemas of the
//! versions in [`KUBERNETES_VERSIONS`] (kubernetes-validate from PyPI, strict: unknown fields
//! are errors), the prometheus-operator resources against the operator's CRD schemas (the
//! validators of the npm package [`OPERATOR_MODELS`]), the PrometheusRule is what
//! scripts/gen-prometheusrule makes of config/rules/, and the workloads keep the settings
//! docs/kubernetes.md promises. A broken manifest fails both validators (tested too).
//!
//! The validators are installed under `target/` on first use (`support::tools`); when one
//! cannot be had the test skips with the reason, unless `CI` is set.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The Kubernetes versions the manifests are checked against: the oldest we support and the
/// newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
/// Pinned, so that a new schema release changes the test in a commit, not by itself.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
const OPERATOR_MODELS: &str = "@kubernetes-models/prometheus-operator@6.0.0";
const OPERATOR_GROUP: &str = "monitoring.coreos.com/";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.yaml` under deploy/kubernetes/, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let out = support::files_under(&root().join("deploy/kubernetes"), "yaml");
    assert!(out.len() >= 9, "manifests missing: {out:?}");
    out
}

/// The resources (YAML documents) of one file.
fn resources(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("reading a manifest");
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn is_operator_resource(r: &Value) -> bool {
    r["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with(OPERATOR_GROUP))
}

/// All resources of deploy/kubernetes/ with their file.
fn all_resources() -> Vec<(PathBuf, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|f| resources(&f).into_iter().map(move |r| (f.clone(), r)))
        .collect()
}

fn find<'a>(all: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .map(|(_, r)| r)
        .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/kubernetes"))
}

/// kubernetes-validate (strict) on these files for every version: (success, output). Only
/// prometheus-operator kinds may lack a schema; any other unknown kind is a failure.
fn kubernetes_validate(files: &[PathBuf]) -> Option<(bool, String)> {
    let exe = match support::tools::pypi_program(
        "kubernetes-validate-venv",
        &[KUBERNETES_VALIDATE],
        "kubernetes-validate",
    ) {
        Ok(exe) => exe,
        Err(why) => {
            support::require(false, &format!("kubernetes-validate unavailable: {why}"));
            return None;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--strict");
    for v in KUBERNETES_VERSIONS {
        cmd.args(["-k", v]);
    }
    let (out, text) = support::run_output(cmd.args(files));
    let unexpected = text.lines().any(|l| {
        !(l.starts_with("INFO ")
            || (l.starts_with("WARN ")
                && l.contains("Couldn't find schema for kind")
                && l.contains(&format!("with api version {OPERATOR_GROUP}"))))
    });
    Some((out.status.success() && !unexpected, text))
}

#[test]
fn every_manifest_validates_against_the_kubernetes_api_schemas() {
    let files = manifest_files();
    let Some((ok, out)) = kubernetes_validate(&files) else {
        return;
    };
    assert!(ok, "kubernetes-validate failed:\n{out}");
    // It really validated every core resource against every version.
    let core = all_resources()
        .iter()
        .filter(|(_, r)| !is_operator_resource(r))
        .count();
    let passed = out
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    assert_eq!(passed, core * KUBERNETES_VERSIONS.len(), "{out}");
    assert!(core >= 7, "{out}");
}

/// A copy of the Deployment with a typo'd field and a wrongly typed one.
fn broken_deployment(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/single/deployment.yaml"))
        .unwrap()
        .replace("readinessProbe:", "readynessProbe:")
        .replace("replicas: 1", "replicas: \"one\"");
    let path = dir.join("deployment.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_broken_manifest_fails_the_kubernetes_schema_check() {
    let dir = tempfile::tempdir().unwrap();
    let Some((ok, out)) = kubernetes_validate(&[broken_deployment(dir.path())]) else {
        return;
    };
    assert!(!ok, "the broken Deployment passed:\n{out}");
    assert!(out.contains("ERROR "), "{out}");
    assert!(
        out.contains("readynessProbe") || out.contains("replicas"),
        "the error names neither broken field:\n{out}"
    );
}

/// The operator's CRD schemas on these resources: (success, output).
fn operator_validate(items: &[(PathBuf, Value)]) -> Option<(bool, String)> {
    if !support::require_program("node") {
        return None;
    }
    let modules = match support::tools::npm_package("prometheus-operator-models", OPERATOR_MODELS) {
        Ok(m) => m,
        Err(why) => {
            support::require(false, &format!("{OPERATOR_MODELS} unavailable: {why}"));
            return None;
        }
    };
    let input: Vec<Value> = items
        .iter()
        .map(|(f, r)| json!({"file": f.display().to_string(), "resource": r}))
        .collect();
    let (out, text) = support::run_with_input(
        Command::new("node")
            .arg(root().join("scripts/validate-prometheus-operator.mjs"))
            .arg(&modules),
        serde_json::to_string(&input).unwrap().as_bytes(),
    );
    Some((out.status.success(), text))
}

#[test]
fn operator_resources_validate_against_the_crd_schemas() {
    let items: Vec<(PathBuf, Value)> = all_resources()
        .into_iter()
        .filter(|(_, r)| is_operator_resource(r))
        .collect();
    let kinds: std::collections::BTreeSet<&str> = items
        .iter()
        .filter_map(|(_, r)| r["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["PodMonitor", "Probe", "PrometheusRule", "ServiceMonitor"]
    );
    let Some((ok, out)) = operator_validate(&items) else {
        return;
    };
    assert!(ok, "CRD schema validation failed:\n{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        items.len(),
        "{out}"
    );
}

#[test]
fn a_broken_operator_resource_fails_the_crd_schema_check() {
    let all = all_resources();
    let mut monitor = find(&all, "ServiceMonitor", "pingscope").clone();
    monitor["spec"]["endpoints"][0]["interval"] = json!("30 seconds");
    let mut probe = find(&all, "Probe", "pingscope-quick").clone();
    probe["spec"]["module"] = json!(5);
    let items = [
        (PathBuf::from("broken-servicemonitor"), monitor),
        (PathBuf::from("broken-probe"), probe),
    ];
    let Some((ok, out)) = operator_validate(&items) else {
        return;
    };
    assert!(!ok, "broken resources passed:\n{out}");
    assert!(
        out.contains("ERROR broken-servicemonitor ServiceMonitor/pingscope:"),
        "{out}"
    );
    assert!(out.contains("interval must match pattern"), "{out}");
    assert!(
        out.contains("ERROR broken-probe Probe/pingscope-quick:"),
        "{out}"
    );
    assert!(out.contains("module must be string"), "{out}");
}

const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheus-operator/prometheusrule.yaml";

#[test]
fn the_prometheusrule_is_generated_from_config_rules() {
    let out = Command::new(root().join("scripts/gen-prometheusrule"))
        .output()
        .expect("running scripts/gen-prometheusrule");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed = std::fs::read_to_string(root().join(PROMETHEUS_RULE)).unwrap();
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "{PROMETHEUS_RULE} and config/rules/ have drifted apart: run \
         `scripts/gen-prometheusrule > {PROMETHEUS_RULE}` and commit both"
    );
    // And, independently of the script: the same groups as the rule files, in file order.
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("config/rules"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    let groups: Vec<Value> = files
        .iter()
        .flat_map(|f| {
            let v: Value = serde_saphyr::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            v["groups"].as_array().cloned().unwrap_or_default()
        })
        .collect();
    assert!(groups.len() >= 3, "{groups:?}");
    let rule = resources(&root().join(PROMETHEUS_RULE));
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["spec"]["groups"], Value::Array(groups));
}

/// Whether `host` is a documentation name or address (RFC 2606, 5737, 3849): the manifests'
/// examples must reach nothing.
fn is_documentation_host(host: &str) -> bool {
    let name = host.trim_end_matches('.');
    if ["example.org", "example.com", "example.net"]
        .iter()
        .any(|d| name == *d || name.ends_with(&format!(".{d}")))
    {
        return true;
    }
    match name.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => {
            let o = a.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        Ok(std::net::IpAddr::V6(a)) => a.segments()[..2] == [0x2001, 0x0db8],
        Err(_) => false,
    }
}

/// The config the ConfigMap `name` holds as pingscope.yml, parsed as the pod reads it.
fn configmap_config(all: &[(PathBuf, Value)], name: &str) -> pingscope::config::Config {
    let text = find(all, "ConfigMap", name)["data"]["pingscope.yml"]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap {name} holds no pingscope.yml"));
    pingscope::config::parse_str(text, "pingscope.yml", Path::new("/etc/pingscope"))
        .unwrap_or_else(|e| panic!("the ConfigMap {name}'s config is invalid:\n{e}"))
}

#[test]
fn the_configmap_is_a_valid_config_with_the_probe_module_and_placeholder_targets() {
    let all = all_resources();
    let config = configmap_config(&all, "pingscope");
    let module = find(&all, "Probe", "pingscope-quick")["spec"]["module"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        config.probe_profiles.contains_key(&module),
        "no probe profile {module:?}"
    );
    assert!(!config.targets.is_empty());
    for t in &config.targets {
        assert!(
            is_documentation_host(&t.host),
            "target {} is not a placeholder",
            t.host
        );
    }
    let probe = find(&all, "Probe", "pingscope-quick");
    for t in probe["spec"]["targets"]["staticConfig"]["static"]
        .as_array()
        .unwrap()
    {
        let t = t.as_str().unwrap();
        assert!(
            is_documentation_host(t),
            "Probe target {t} is not a placeholder"
        );
    }
}

#[test]
fn every_workload_runs_unprivileged_with_health_checks_and_sized_resources() {
    let all = all_resources();
    let workloads = [
        ("Deployment", "pingscope"),
        ("StatefulSet", "pingscope"),
        ("DaemonSet", "pingscope"),
    ];
    for (kind, name) in workloads {
        let w = find(&all, kind, name);
        let pod = &w["spec"]["template"]["spec"];
        let what = format!("{kind}/{name}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        assert_eq!(
            pod["securityContext"]["sysctls"],
            json!([{"name": "net.ipv4.ping_group_range", "value": "0 2147483647"}]),
            "{what}"
        );
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}), "{what}");
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"], "/-/healthy",
            "{what}"
        );
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/-/ready", "{what}");
        assert!(c["resources"]["requests"]["memory"].is_string(), "{what}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
        assert!(
            c["resources"]["limits"]["cpu"].is_null(),
            "{what}: a CPU limit throttles probes"
        );
        let args = support::api::strs(&c["args"]);
        assert!(
            args.contains(&"--config.file=/etc/pingscope/pingscope.yml"),
            "{what}"
        );
    }
    // The StatefulSet shards itself, and its count is its replicas.
    let set = find(&all, "StatefulSet", "pingscope");
    let c = &set["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--shard=auto"))
    );
    let count = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "PINGSCOPE_SHARD_COUNT")
        .expect("PINGSCOPE_SHARD_COUNT is set")["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(count, set["spec"]["replicas"].to_string());
}

#[test]
fn the_mesh_daemonset_runs_mesh_mode_over_its_headless_service() {
    let all = all_resources();
    let config = configmap_config(&all, "pingscope-mesh");
    let mesh = config.mesh.expect("a mesh: block");
    let service = find(&all, "Service", "pingscope-mesh");
    assert_eq!(service["spec"]["clusterIP"], "None", "a headless Service");
    assert_eq!(
        mesh.peers,
        pingscope::config::MeshPeers::Dns("pingscope-mesh".into())
    );
    assert_eq!(
        Some(mesh.web_port),
        service["spec"]["ports"][0]["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
    );
    let pod = &find(&all, "DaemonSet", "pingscope")["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "pingscope-mesh");
    let env = &pod["containers"][0]["env"][0];
    assert_eq!(
        (&env["name"], &env["valueFrom"]["fieldRef"]["fieldPath"]),
        (&json!("HOSTNAME"), &json!("spec.nodeName")),
        "source = the node's name"
    );
}
