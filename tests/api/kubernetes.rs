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

/// Runs `.venv/bin/python3 -m kubernetes_validate --strict [-k VERSION] FILES`; fails the
/// test saying what to install when the package is missing.
fn kubernetes_validate(version: Option<&str>, files: &[PathBuf]) -> std::process::Output {
    let pin = kubernetes_validate_pin();
    let install = format!("kubernetes-validate=={pin} belongs in .venv: {PYTHON}");
    let mut cmd = python3();
    cmd.args(["-m", "kubernetes_validate", "--strict"]);
    if let Some(v) = version {
        cmd.args(["-k", v]);
    }
    cmd.args(files).current_dir(repo());
    let out = run(&mut cmd, PYTHON);
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

mod monitoring;
mod network;
mod workload;
