//! The Kubernetes manifests (`deploy/kubernetes`), checked offline: every manifest of
//! the base passes `kubernetes-validate --strict` against the oldest Kubernetes the
//! base is written for and the newest the validator ships; the Prometheus Operator's
//! custom resources (ServiceMonitor, PrometheusRule), which no Kubernetes schema
//! covers, are checked here for the fields the operator reads; the PrometheusRule holds
//! exactly the groups of `deploy/prometheus/alerts.yml` and promtool accepts them; the
//! ConfigMap sets every server setting that has a default, at that default; the
//! Deployment's security context, ports, probes, grace period and resources fit the
//! server and the benchmark's figures; and the probes it declares behave as intended
//! against a live server whose MongoDB is unreachable.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use clap::Parser;
use sales_ingest::Config;
use serde::Deserialize;
use serde_json::Value;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{helpers::*, tools::*};

const BASE: &str = "deploy/kubernetes";
const MONITORING: &str = "deploy/kubernetes/monitoring";
/// The Secret's example, validated but kept out of the base's resources.
const SECRET_EXAMPLE: &str = "deploy/kubernetes/secret.example.yaml";
/// The oldest Kubernetes the base is written for: gRPC probes are GA from 1.27.
const OLDEST_KUBERNETES: &str = "1.27.0";
/// The gRPC health service readiness follows.
const READINESS_SERVICE: &str = "ingest.v1.IngestEvents";

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The YAML documents of a file, as JSON values.
fn documents(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn one_document(rel: &str) -> Value {
    let mut docs = documents(rel);
    assert_eq!(docs.len(), 1, "{rel} holds one document");
    docs.remove(0)
}

/// The files a kustomization lists under `resources`, relative to the repository.
fn resources(dir: &str) -> Vec<String> {
    let k = one_document(&format!("{dir}/kustomization.yaml"));
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1", "{dir}");
    assert_eq!(k["kind"], "Kustomization", "{dir}");
    k["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{dir}/kustomization.yaml lists no resources"))
        .iter()
        .map(|r| {
            let r = r.as_str().expect("a resource path");
            let rel = format!("{dir}/{r}");
            assert!(repo_path(&rel).is_file(), "{rel} is listed but missing");
            rel
        })
        .collect()
}

/// Every object of the base, the Secret's example and the monitoring kustomization.
fn objects() -> Vec<Value> {
    let mut files = resources(BASE);
    files.push(SECRET_EXAMPLE.into());
    files.extend(resources(MONITORING));
    files.iter().flat_map(|f| documents(f)).collect()
}

fn object(kind: &str, name: &str) -> Value {
    objects()
        .into_iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {BASE}"))
}

fn deployment() -> Value {
    object("Deployment", "sales-ingest")
}

fn container() -> Value {
    let d = deployment();
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

fn configmap() -> BTreeMap<String, String> {
    string_map(
        &object("ConfigMap", "sales-ingest-config")["data"],
        "ConfigMap data",
    )
}

fn secret_example() -> BTreeMap<String, String> {
    string_map(
        &object("Secret", "sales-ingest-secrets")["stringData"],
        "Secret stringData",
    )
}

fn string_map(v: &Value, what: &str) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what} is not a mapping"))
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {k} is not a string"));
            (k.clone(), v.to_string())
        })
        .collect()
}

/// The port of a `host:port` listen address.
fn port_of(addr: &str) -> i64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr} has no port"))
}

/// A fresh scratch directory under the system temp directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The kubernetes-validate version scripts/install-deps pins.
fn kubernetes_validate_pin() -> String {
    read("scripts/install-deps")
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VALIDATE_VERSION="))
        .expect("scripts/install-deps pins KUBERNETES_VALIDATE_VERSION")
        .trim()
        .to_string()
}

/// Runs `python3 -m kubernetes_validate --strict [-k VERSION] FILES`; fails the test
/// saying what to install when the package is missing.
fn kubernetes_validate(version: Option<&str>, files: &[PathBuf]) -> std::process::Output {
    let pin = kubernetes_validate_pin();
    let install =
        format!("python3 -m pip install kubernetes-validate=={pin} (scripts/install-deps does)");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate", "--strict"]);
    if let Some(v) = version {
        cmd.args(["-k", v]);
    }
    cmd.args(files).current_dir(repo());
    let out = run(&mut cmd, "apt-get install python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: {install}\n{}",
        describe(&out)
    );
    out
}

/// Every line the validator printed says "passed"; a warning (such as a kind it has
/// no schema for) or an error fails.
fn assert_validated(out: &std::process::Output, files: &[PathBuf], against: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let passed = lines.iter().filter(|l| l.contains(" passed for ")).count();
    assert!(
        out.status.success() && passed == lines.len() && passed >= files.len(),
        "kubernetes-validate --strict against {against}:\n{}",
        describe(out)
    );
    eprintln!("kubernetes-validate --strict against {against}: {passed} resources passed");
}

#[test]
fn every_manifest_passes_kubernetes_validate_in_strict_mode() {
    // Every YAML file under deploy/kubernetes is a kustomization, a listed resource or
    // the Secret's example, so nothing escapes validation.
    let mut listed: BTreeSet<String> = resources(BASE).into_iter().collect();
    listed.extend(resources(MONITORING));
    listed.insert(SECRET_EXAMPLE.into());
    for dir in [BASE, MONITORING] {
        for entry in std::fs::read_dir(repo_path(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                let rel = format!("{dir}/{name}");
                assert!(
                    name == "kustomization.yaml" || listed.contains(&rel),
                    "{rel} is in no kustomization's resources"
                );
            }
        }
    }
    assert!(
        !resources(BASE)
            .iter()
            .any(|f| f.ends_with("secret.example.yaml")),
        "the Secret's placeholder values must not be applied with the base"
    );

    // The base (no custom resources) and the Secret's example, against both ends.
    let mut files: Vec<PathBuf> = resources(BASE).iter().map(|f| repo_path(f)).collect();
    files.push(repo_path(SECRET_EXAMPLE));
    for version in [Some(OLDEST_KUBERNETES), None] {
        let out = kubernetes_validate(version, &files);
        let against = version.unwrap_or("the newest schemas it ships");
        assert_validated(&out, &files, against);
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelt_field_so_the_check_above_means_something() {
    let dir = scratch("k8s-typo");
    let bad = dir.join("deployment.yaml");
    let text = read(&format!("{BASE}/deployment.yaml"));
    assert!(text.contains("readinessProbe:"));
    std::fs::write(&bad, text.replace("readinessProbe:", "readinesProbe:")).unwrap();
    let out = kubernetes_validate(None, std::slice::from_ref(&bad));
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("readinesProbe"),
        "{}",
        describe(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Checks the fields of a custom resource the operator reads, since kubernetes-validate
/// has no schema for it.
fn assert_operator_resource(o: &Value, kind: &str) {
    assert_eq!(o["apiVersion"], "monitoring.coreos.com/v1", "{kind}");
    assert_eq!(o["kind"], kind);
    assert_eq!(o["metadata"]["name"], "sales-ingest", "{kind}");
    let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["apiVersion", "kind", "metadata", "spec"]),
        "{kind}"
    );
}

#[test]
fn the_servicemonitor_and_prometheusrule_have_the_fields_the_operator_reads() {
    let sm = object("ServiceMonitor", "sales-ingest");
    assert_operator_resource(&sm, "ServiceMonitor");
    let spec = sm["spec"].as_object().unwrap();
    assert_eq!(
        spec.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["selector", "endpoints"])
    );
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let ep = &endpoints[0];
    for key in ep.as_object().unwrap().keys() {
        assert!(
            ["port", "path", "interval", "scrapeTimeout"].contains(&key.as_str()),
            "ServiceMonitor endpoint field {key}"
        );
    }
    assert_eq!(ep["path"], "/metrics");
    let seconds = |v: &Value| -> u64 {
        v.as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{v} is not a duration in seconds"))
    };
    assert!(seconds(&ep["scrapeTimeout"]) < seconds(&ep["interval"]));

    // It selects exactly one Service, and that Service has the endpoint's port: each
    // pod is scraped once, under the job name the alerts select.
    let selector = string_map(&sm["spec"]["selector"]["matchLabels"], "selector");
    let services: Vec<Value> = objects()
        .into_iter()
        .filter(|o| o["kind"] == "Service")
        .collect();
    let selected: Vec<&Value> = services
        .iter()
        .filter(|s| {
            let labels = string_map(&s["metadata"]["labels"], "labels");
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    assert_eq!(selected.len(), 1, "the ServiceMonitor selects one Service");
    let service = selected[0];
    assert_eq!(service["metadata"]["name"], "sales-ingest");
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == ep["port"]),
        "the Service has no port {}",
        ep["port"]
    );
    for s in &services {
        if s["metadata"]["name"] != "sales-ingest" {
            assert!(
                !s["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == ep["port"]),
                "{} would be scraped too",
                s["metadata"]["name"]
            );
        }
    }
    let alerts = read("deploy/prometheus/alerts.yml");
    assert!(alerts.contains(r#"job="sales-ingest""#));

    let rule = object("PrometheusRule", "sales-ingest");
    assert_operator_resource(&rule, "PrometheusRule");
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["name"].is_string(), "every group has a name");
        for r in g["rules"].as_array().expect("rules") {
            for key in r.as_object().unwrap().keys() {
                assert!(
                    ["alert", "record", "expr", "for", "labels", "annotations"]
                        .contains(&key.as_str()),
                    "rule field {key}"
                );
            }
            assert!(r["alert"].is_string() && r["expr"].is_string(), "{r}");
        }
    }
}

#[test]
fn the_prometheusrule_holds_exactly_the_groups_and_rules_of_alerts_yml() {
    let alerts = one_document("deploy/prometheus/alerts.yml");
    let rule = one_document(&format!("{MONITORING}/prometheusrule.yaml"));
    assert_eq!(
        rule["spec"], alerts,
        "the PrometheusRule's spec differs from alerts.yml: run scripts/gen-prometheusrule"
    );
    let names = |v: &Value| -> Vec<String> {
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .map(|r| r["alert"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&rule["spec"]), names(&alerts));
    assert_eq!(names(&alerts).len(), 10);

    // The committed file is exactly what the generator writes.
    let out = run(
        Command::new("python3")
            .arg(repo_path("scripts/gen-prometheusrule"))
            .arg("--check")
            .current_dir(repo()),
        "apt-get install python3",
    );
    assert!(
        out.status.success(),
        "scripts/gen-prometheusrule --check (it needs PyYAML, which \
         `python3 -m pip install kubernetes-validate=={}` brings; scripts/install-deps does):\n{}",
        kubernetes_validate_pin(),
        describe(&out)
    );
}

#[test]
fn promtool_accepts_the_prometheusrule_rules() {
    let rule = one_document(&format!("{MONITORING}/prometheusrule.yaml"));
    let dir = scratch("k8s-rules");
    let file = dir.join("rules.yml");
    std::fs::write(&file, serde_yaml_ng::to_string(&rule["spec"]).unwrap()).unwrap();
    let out = run(promtool().args(["check", "rules"]).arg(&file), PROMTOOL);
    assert!(
        out.status.success(),
        "promtool check rules: {}",
        describe(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 10 rules found"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_configmap_sets_every_setting_that_has_a_default_at_that_default() {
    let data = configmap();
    let secret = secret_example();
    let known = crate::deploy::accepted_env();
    // MONGODB_URL has a default but may carry a password: it is in the Secret.
    assert_eq!(
        secret.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["ADMIN_TOKEN", "MONGODB_URL", "PRODUCER_TOKEN"])
    );
    let with_default: BTreeSet<&str> = known
        .iter()
        .filter(|(_, d)| d.is_some())
        .map(|(k, _)| k.as_str())
        .filter(|k| !secret.contains_key(*k))
        .collect();
    let in_map: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        in_map, with_default,
        "the ConfigMap's keys are the settings with a default (less the Secret's)"
    );
    for (key, value) in &data {
        let default = known[key].as_deref().unwrap();
        let same = value == default
            || matches!((value.parse::<f64>(), default.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
        assert!(
            same,
            "{key}: the ConfigMap says {value}, the default is {default}"
        );
    }
    for key in secret.keys() {
        assert!(known.contains_key(key), "sales-ingest does not read {key}");
    }
    // The server accepts the ConfigMap and the Secret together.
    let mut args = vec!["sales-ingest".to_string()];
    for (key, value) in data.iter().chain(secret.iter()) {
        args.push(format!(
            "--{}={value}",
            key.to_lowercase().replace('_', "-")
        ));
    }
    let config = Config::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the server refuses the ConfigMap and Secret: {e}"));
    assert_eq!(config.shutdown_timeout().as_secs(), 30);
}

/// A Kubernetes quantity in MiB (`128Mi`, `1Gi`).
fn mebibytes(q: &Value) -> f64 {
    let q = q.as_str().expect("a memory quantity");
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<f64>().unwrap() * 1024.0
    } else {
        panic!("memory quantity {q}: use Mi or Gi")
    }
}

/// A Kubernetes CPU quantity in cores (`250m`, `1`).
fn cores(q: &Value) -> f64 {
    let q = q.as_str().expect("a CPU quantity");
    match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap() / 1000.0,
        None => q.parse().unwrap(),
    }
}

#[test]
fn the_deployment_runs_locked_down_on_the_servers_ports_and_drains_before_the_kill() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    let c = container();
    let cm = configmap();

    // The image's user, non-root, read-only, no privilege, no capability.
    let dockerfile = read("Dockerfile");
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the Dockerfile");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["runAsGroup"].to_string(), gid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    assert_eq!(pod["automountServiceAccountToken"], false);

    // Container ports are the listen addresses' ports.
    let ports: BTreeMap<String, i64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    let grpc_port = port_of(&cm["GRPC_ADDR"]);
    let http_port = port_of(&cm["HTTP_ADDR"]);
    assert_eq!(
        ports,
        BTreeMap::from([("grpc".into(), grpc_port), ("http".into(), http_port)])
    );

    // Configuration from the ConfigMap and the Secret.
    let refs: Vec<(String, String)> = c["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (kind, r) = e.as_object().unwrap().iter().next().unwrap();
            assert!(r["optional"].is_null() || r["optional"] == false, "{e}");
            (kind.clone(), r["name"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        refs,
        [
            ("configMapRef".into(), "sales-ingest-config".into()),
            ("secretRef".into(), "sales-ingest-secrets".into())
        ]
    );

    // Readiness: gRPC health of IngestEvents on the gRPC port.
    let ready = &c["readinessProbe"];
    assert_eq!(ready["grpc"]["port"], grpc_port);
    assert_eq!(ready["grpc"]["service"], READINESS_SERVICE);
    // Liveness: not gRPC health, not the healthcheck subcommand (both follow the
    // dependencies); an HTTP GET of a path that answers 200 whatever the dependencies.
    let live = &c["livenessProbe"];
    assert!(live["grpc"].is_null() && live["exec"].is_null(), "{live}");
    assert_eq!(live["httpGet"]["port"], "http");
    assert_ne!(
        live["httpGet"]["path"], "/health",
        "/health answers 503 when a dependency is down"
    );
    assert!(
        c["startupProbe"].is_null(),
        "a startup probe on health would restart pods whose MongoDB is down"
    );
    // The slowest a hung process is restarted: a few periods, not seconds.
    let failures = live["failureThreshold"].as_i64().unwrap();
    let period = live["periodSeconds"].as_i64().unwrap();
    assert!(
        failures * period >= 30,
        "liveness gives up after {}s",
        failures * period
    );

    // Grace period > preStop sleep + SHUTDOWN_TIMEOUT.
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("preStop exec");
    assert_eq!(pre_stop[0], "sleep");
    let sleep: f64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    assert!(sleep >= 1.0);
    let shutdown: f64 = cm["SHUTDOWN_TIMEOUT"].parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_f64().unwrap();
    assert!(
        grace > sleep + shutdown,
        "terminationGracePeriodSeconds {grace} <= preStop {sleep} + SHUTDOWN_TIMEOUT {shutdown}"
    );

    // Rollouts never drop below the replica count, and replicas survive one loss.
    assert!(d["spec"]["replicas"].as_i64().unwrap() >= 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
}

/// The figures of bench/README.md's "Latest run" table: (events/s, service CPU s per
/// million events, peak RSS MiB) of each service phase.
fn bench_figures() -> Vec<(f64, f64, f64)> {
    let text = read("bench/README.md");
    let table: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.starts_with("| Phase |"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert!(table.len() > 3, "bench/README.md has no results table");
    let col = |name: &str| {
        table[0]
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("bench table column {name}"))
    };
    let (rate, cpu, rss) = (
        col("Events/s"),
        col("Service CPU s / 1M"),
        col("Peak RSS MiB"),
    );
    let number = |s: &str| s.replace(',', "").parse::<f64>().ok();
    table[2..]
        .iter()
        .filter(|row| !row[cpu].contains("bench"))
        .map(|row| {
            (
                number(&row[rate]).unwrap_or(0.0),
                number(&row[cpu]).unwrap_or_else(|| panic!("CPU in {row:?}")),
                number(&row[rss]).unwrap_or_else(|| panic!("RSS in {row:?}")),
            )
        })
        .collect()
}

#[test]
fn the_resources_cover_the_benchmark_figures() {
    let figures = bench_figures();
    assert!(figures.len() >= 3, "{figures:?}");
    let peak_rss = figures.iter().map(|f| f.2).fold(0.0, f64::max);
    let cpu_per_million = figures.iter().map(|f| f.1).fold(0.0, f64::max);
    let best_rate = figures.iter().map(|f| f.0).fold(0.0, f64::max);
    let c = container();
    let r = &c["resources"];
    let (req_mem, lim_mem) = (
        mebibytes(&r["requests"]["memory"]),
        mebibytes(&r["limits"]["memory"]),
    );
    let (req_cpu, lim_cpu) = (cores(&r["requests"]["cpu"]), cores(&r["limits"]["cpu"]));
    // Memory: the request holds the measured peak, the limit leaves it room to grow.
    assert!(
        req_mem >= peak_rss,
        "memory request {req_mem} MiB < peak RSS {peak_rss} MiB"
    );
    assert!(
        lim_mem >= 2.0 * peak_rss,
        "memory limit {lim_mem} MiB < 2 x peak RSS"
    );
    // CPU: the request sustains the fastest measured rate at the costliest measured
    // CPU per event, and the limit four times that.
    let request_rate = req_cpu * 1e6 / cpu_per_million;
    assert!(
        request_rate >= best_rate,
        "a {req_cpu}-core request sustains {request_rate:.0} events/s < {best_rate} measured"
    );
    assert!(lim_cpu >= 4.0 * req_cpu);
    eprintln!(
        "KUBERNETES resources: request {req_cpu} cores = {request_rate:.0} events/s at \
         {cpu_per_million} CPU-s/1M (best measured {best_rate}/s); memory {req_mem}/{lim_mem} MiB \
         for a peak of {peak_rss} MiB"
    );
}

#[test]
fn the_service_pdb_and_autoscaler_select_the_deployments_pods() {
    let d = deployment();
    let pod_labels = string_map(&d["spec"]["template"]["metadata"]["labels"], "pod labels");
    let selects = |sel: &Value| {
        let sel = string_map(sel, "selector");
        !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(selects(&d["spec"]["selector"]["matchLabels"]));
    let cm = configmap();

    let svc = object("Service", "sales-ingest");
    assert!(selects(&svc["spec"]["selector"]));
    let ports: Vec<(String, String, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["appProtocol"].as_str().unwrap().into(),
                p["targetPort"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("grpc".into(), "grpc".into(), "grpc".into()),
            ("http".into(), "http".into(), "http".into())
        ]
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], port_of(&cm["GRPC_ADDR"]));
    assert_eq!(svc["spec"]["ports"][1]["port"], port_of(&cm["HTTP_ADDR"]));

    let headless = object("Service", "sales-ingest-pods");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert!(selects(&headless["spec"]["selector"]));

    let pdb = object("PodDisruptionBudget", "sales-ingest");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]));
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    let hpa = object("HorizontalPodAutoscaler", "sales-ingest");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], d["metadata"]["name"]);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 2);
    // The lag example names the metric the service exports.
    let text = read(&format!("{BASE}/hpa.yaml"));
    assert!(text.contains("name: kafka_consumer_lag_messages"));
    assert!(read("src/metrics.rs").contains("kafka_consumer_lag_messages"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_keep_a_pod_running_but_out_of_the_service_while_mongodb_is_down() {
    let c = container();
    let live_path = c["livenessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let readiness = |url: String| async move {
        let mut client = HealthClient::new(channel(&url).await);
        client
            .check(HealthCheckRequest {
                service: READINESS_SERVICE.into(),
            })
            .await
            .expect("the readiness service is known to gRPC health")
            .into_inner()
            .status()
    };

    // MongoDB unreachable: readiness NOT_SERVING (out of the Service), liveness 200
    // (not restarted).
    let down = spawn_app_with_unreachable_mongodb().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        readiness(down.grpc_url.clone()).await,
        ServingStatus::NotServing
    );
    let (code, _) = get(&format!("{}{live_path}", down.http_url)).await;
    assert_eq!(code, 200, "liveness fails while MongoDB is down");
    down.shutdown.cancel();
    down.handle.await.unwrap();

    // MongoDB reachable: both pass.
    let up = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    up.wait_serving().await;
    let url = up.grpc_url.clone();
    wait_until(Duration::from_secs(30), "readiness SERVING", || {
        let url = url.clone();
        async move { readiness(url).await == ServingStatus::Serving }
    })
    .await;
    let (code, _) = get(&format!("{}{live_path}", up.http_url)).await;
    assert_eq!(code, 200);
    up.stop().await;
}
