//! docker-compose.yml: it parses, every file it references exists, its services start
//! in health-checked order with only variables the server reads; `.env.example` lists
//! every variable with its default.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{accepted_env, bind_mounts, json, services, yaml};
use crate::tools::*;

#[test]
fn compose_file_parses_and_every_file_it_references_exists() {
    let compose = yaml("docker-compose.yml");
    let svc = services(&compose);
    let names: BTreeSet<&str> = svc.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "redpanda",
            "redpanda-init",
            "mongodb",
            "sales-ingest",
            "prometheus",
            "grafana"
        ])
    );
    let mut referenced = Vec::new();
    for (name, s) in svc {
        assert!(
            s["image"].is_string() || s["build"].is_object(),
            "{name} has neither image nor build"
        );
        if let Some(build) = s["build"].as_object() {
            let ctx = repo_path(build["context"].as_str().expect("context"));
            assert!(ctx.is_dir(), "{name}: build context {ctx:?} missing");
            let dockerfile = build
                .get("dockerfile")
                .and_then(Value::as_str)
                .unwrap_or("Dockerfile");
            referenced.push(ctx.join(dockerfile));
        }
        for (host, _) in bind_mounts(s) {
            referenced.push(repo_path(&host));
        }
        // `env_file` entries are paths or `{path, required}`; an optional one may be absent.
        for f in s["env_file"].as_array().into_iter().flatten() {
            let (path, required) = match f.as_str() {
                Some(path) => (path, true),
                None => (
                    f["path"].as_str().expect("env_file path"),
                    f["required"].as_bool().unwrap_or(true),
                ),
            };
            if required {
                referenced.push(repo_path(path));
            }
        }
    }
    assert!(referenced.len() >= 6, "{referenced:?}");
    for path in &referenced {
        assert!(
            path.exists(),
            "docker-compose.yml references {path:?}, which is missing"
        );
    }

    // Prometheus: its config and every rule file it names are mounted side by side.
    let prom = &svc["prometheus"];
    let mounts: BTreeMap<String, String> =
        bind_mounts(prom).into_iter().map(|(h, c)| (c, h)).collect();
    let config_arg = prom["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file");
    let host_config = mounts.get(config_arg).expect("config file mounted");
    assert_eq!(host_config, "./deploy/prometheus/prometheus.yml");
    let prom_cfg = yaml("deploy/prometheus/prometheus.yml");
    let config_dir = std::path::Path::new(config_arg).parent().unwrap();
    for rule in prom_cfg["rule_files"].as_array().expect("rule_files") {
        let in_container = config_dir.join(rule.as_str().unwrap());
        let host = mounts
            .get(in_container.to_str().unwrap())
            .unwrap_or_else(|| panic!("rule file {in_container:?} not mounted"));
        assert!(repo_path(host).is_file(), "{host}");
    }
    // ...and it scrapes the sales-ingest service on its HTTP port.
    let job = prom_cfg["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_name"] == "sales-ingest")
        .expect("sales-ingest scrape job");
    assert_eq!(job["static_configs"][0]["targets"][0], "sales-ingest:8001");

    // Grafana: the provisioned dashboard folder is mounted where the provider looks,
    // the home dashboard exists there, the datasource is the prometheus service.
    let graf = &svc["grafana"];
    let gmounts: BTreeMap<String, String> =
        bind_mounts(graf).into_iter().map(|(h, c)| (c, h)).collect();
    let provider = yaml("deploy/grafana/provisioning/dashboards/sales-ingest.yml");
    let dash_path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let dash_host = gmounts.get(dash_path).expect("dashboards mounted");
    let home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .unwrap();
    let file = home
        .strip_prefix(&format!("{dash_path}/"))
        .expect("home in dashboards");
    assert!(repo_path(&format!("{dash_host}/{file}")).is_file());
    assert_eq!(
        gmounts
            .get("/etc/grafana/provisioning/datasources")
            .map(String::as_str),
        Some("./deploy/grafana/provisioning/datasources")
    );
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    let uid = ds["datasources"][0]["uid"].as_str().unwrap();
    let dash = json("deploy/grafana/dashboards/sales-ingest.json");
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], uid, "panel {}", p["title"]);
    }
}

#[test]
fn compose_starts_in_order_once_each_dependency_is_healthy() {
    let compose = yaml("docker-compose.yml");
    let svc = services(&compose);
    for (name, s) in svc {
        if name == "redpanda-init" {
            assert_eq!(s["restart"], "no", "the init job runs once");
            continue;
        }
        assert!(
            s["healthcheck"]["test"].is_array(),
            "{name} has no healthcheck"
        );
    }
    // Every dependency waits for a health check (or the one-shot init to finish).
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, s) in svc {
        let list = deps.entry(name).or_default();
        if let Some(d) = s.get("depends_on") {
            let d = d
                .as_object()
                .expect("depends_on in long form, with conditions");
            for (target, cond) in d {
                assert!(
                    svc.contains_key(target),
                    "{name} depends on unknown {target}"
                );
                let want = if target == "redpanda-init" {
                    "service_completed_successfully"
                } else {
                    "service_healthy"
                };
                assert_eq!(cond["condition"], want, "{name} -> {target}");
                list.push(target);
            }
        }
    }
    // A start order exists (no cycle) and it is the intended one.
    let mut order: Vec<&str> = Vec::new();
    while order.len() < deps.len() {
        let next = deps
            .iter()
            .find(|(n, d)| !order.contains(n) && d.iter().all(|t| order.contains(t)))
            .map(|(n, _)| *n)
            .expect("depends_on has a cycle");
        order.push(next);
    }
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(pos("redpanda") < pos("sales-ingest"));
    assert!(pos("mongodb") < pos("sales-ingest"));
    assert!(pos("redpanda-init") < pos("sales-ingest"));
    assert!(pos("sales-ingest") < pos("prometheus"));
    assert!(pos("prometheus") < pos("grafana"));

    let ingest = &svc["sales-ingest"];
    assert_eq!(
        ingest["healthcheck"]["test"],
        serde_json::json!(["CMD", "sales-ingest", "healthcheck", "127.0.0.1:50051"])
    );
    let ports: Vec<&str> = ingest["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ports, ["50051:50051", "8001:8001"]);
    // Only variables the server knows, and the addresses of the compose network.
    let known = accepted_env();
    let env = ingest["environment"]
        .as_object()
        .expect("environment mapping");
    for key in env.keys() {
        assert!(known.contains_key(key), "sales-ingest does not read {key}");
    }
    assert_eq!(env["KAFKA_BOOTSTRAP_SERVERS"], "redpanda:9092");
    assert_eq!(env["MONGODB_URL"], "mongodb://mongodb:27017");
    assert_eq!(env["GRPC_ADDR"], "0.0.0.0:50051");
    assert_eq!(env["HTTP_ADDR"], "0.0.0.0:8001");
}

/// The variables scripts/run starts a local server for while they are unset.
const RUN_STARTS_LOCAL: [&str; 2] = ["KAFKA_BOOTSTRAP_SERVERS", "MONGODB_URL"];

/// Following the README and `.env.example` (`cp .env.example .env`, then
/// `set -a; . ./.env; set +a`, then scripts/run) leaves unset the variables whose
/// absence makes scripts/run start its local Kafka broker and MongoDB-protocol server.
#[test]
fn sourcing_env_example_leaves_scripts_run_starting_its_local_servers() {
    let script = std::fs::read_to_string(repo_path("scripts/run")).unwrap();
    for var in RUN_STARTS_LOCAL {
        assert!(
            script.contains(&format!("if [ -z \"${{{var}:-}}\" ]; then")),
            "scripts/run no longer starts a local server while {var} is unset: update \
             RUN_STARTS_LOCAL and .env.example"
        );
    }
    let out = run(
        std::process::Command::new("bash")
            .args([
                "-c",
                "env -u KAFKA_BOOTSTRAP_SERVERS -u MONGODB_URL bash -c \
                 'set -a; . ./.env.example; set +a; \
                  echo \"${KAFKA_BOOTSTRAP_SERVERS-unset} ${MONGODB_URL-unset}\"'",
            ])
            .current_dir(repo()),
        "apt-get install bash",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unset unset",
        "sourcing .env.example sets the variables that stop scripts/run starting its servers"
    );
}

#[test]
fn env_example_lists_every_variable_with_its_default() {
    let text = std::fs::read_to_string(repo_path(".env.example")).unwrap();
    let mut listed = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some((k, v)) = l.split_once('=') {
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                listed.insert(k.to_string(), (v.to_string(), line.starts_with('#')));
            }
        }
    }
    let known = accepted_env();
    for (var, default) in &known {
        let (value, commented) = listed
            .get(var)
            .unwrap_or_else(|| panic!(".env.example lacks {var}"));
        match default {
            Some(d) if RUN_STARTS_LOCAL.contains(&var.as_str()) => {
                assert!(
                    *commented,
                    "{var} set in .env makes scripts/run start nothing"
                );
                assert_eq!(value, d, "{var}: .env.example's value is not the default");
            }
            Some(d) => {
                assert!(!commented, "{var} has a default and should be set");
                let same = value == d
                    || matches!((value.parse::<f64>(), d.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
                assert!(same, "{var}: .env.example says {value}, the default is {d}");
            }
            None => assert!(commented, "{var} is unset by default: comment it out"),
        }
    }
    let compose_only = ["GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD"];
    // Read by the service's OpenTelemetry exporter, not by its settings.
    let opentelemetry = ["OTEL_EXPORTER_OTLP_ENDPOINT"];
    for var in listed.keys() {
        assert!(
            known.contains_key(var)
                || compose_only.contains(&var.as_str())
                || opentelemetry.contains(&var.as_str()),
            ".env.example lists {var}, which nothing reads"
        );
    }
}

#[test]
fn the_readme_names_every_variable() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    for var in accepted_env().keys() {
        assert!(
            readme.contains(&format!("`{var}`")),
            "README.md does not name {var}"
        );
    }
}
