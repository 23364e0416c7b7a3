//! The deployment files, checked as far as this machine can without a Docker engine:
//! docker-compose.yml parses, everything it references exists and it starts in
//! health-checked order; the Dockerfile's stages, user, ports and health check; the
//! binary needs no library bookworm-slim lacks and its `healthcheck` subcommand works;
//! `.env.example` lists every variable; promtool accepts the Prometheus config and
//! the alert rules (and their unit tests pass) and the live `/metrics`; the Grafana
//! dashboard and the alerts only query metrics the service exposes.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use clap::CommandFactory;
use sales_ingest::{proto::sales::v1::SalesEvent, Config};
use serde_json::Value;

use crate::{helpers::*, tools::*};

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn json(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

fn services(compose: &Value) -> &serde_json::Map<String, Value> {
    compose["services"].as_object().expect("services mapping")
}

/// `host:container[:mode]` bind mounts of a service (named volumes left out).
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .filter(|s| s.starts_with("./") || s.starts_with('/'))
                .map(|s| {
                    let mut parts = s.split(':');
                    (
                        parts.next().unwrap().to_string(),
                        parts.next().expect("container path").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The environment variables the server accepts, with their defaults.
fn server_env() -> BTreeMap<String, Option<String>> {
    Config::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            let default = a
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect()
}

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
    let known = server_env();
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
    let known = server_env();
    for (var, default) in &known {
        let (value, commented) = listed
            .get(var)
            .unwrap_or_else(|| panic!(".env.example lacks {var}"));
        match default {
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
    for var in listed.keys() {
        assert!(
            known.contains_key(var) || compose_only.contains(&var.as_str()),
            ".env.example lists {var}, which nothing reads"
        );
    }
}

#[test]
fn dockerfile_builds_in_stages_and_runs_only_the_binary_as_non_root() {
    let text = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    // Logical lines (backslash continuations joined), comments dropped.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let arg = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("ARG {name}"))
            .to_string()
    };
    // Build on the official Rust image, at least the crate's rust-version.
    let rust = arg("RUST_VERSION");
    let cargo = std::fs::read_to_string(repo_path("Cargo.toml")).unwrap();
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let v = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        v(&rust) >= v(msrv),
        "RUST_VERSION {rust} < rust-version {msrv}"
    );
    assert_eq!(arg("DEBIAN_RELEASE"), "bookworm");
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build and a runtime stage");
    assert_eq!(
        lines[stages[0]],
        "FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build"
    );
    assert!(lines[stages[1]].starts_with("FROM debian:${DEBIAN_RELEASE}-slim"));
    let build = &lines[stages[0]..stages[1]];
    let install = build
        .iter()
        .find(|l| l.contains("apt-get install"))
        .unwrap();
    for pkg in ["cmake", "libcurl4-openssl-dev", "g++"] {
        assert!(install.contains(pkg), "build stage lacks {pkg}");
    }
    assert!(build
        .iter()
        .any(|l| l.contains("cargo build --release --locked --bin sales-ingest")));
    // Cargo loads every workspace member: each must be copied and not docker-ignored.
    let manifest = std::fs::read_to_string(repo_path("Cargo.toml")).unwrap();
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    for member in members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| *m != ".")
    {
        assert!(
            build
                .iter()
                .any(|l| l.starts_with("COPY") && l.contains(member)),
            "the build stage does not copy workspace member {member}"
        );
        assert!(
            !ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == member
                    || member.starts_with(&format!("{}/", l.trim().trim_end_matches('/')))),
            ".dockerignore drops workspace member {member}"
        );
    }

    // The runtime stage adds exactly the CA bundle and the binary, and runs nothing.
    let runtime = &lines[stages[1]..];
    let copies: Vec<&&str> = runtime.iter().filter(|l| l.starts_with("COPY")).collect();
    assert_eq!(
        copies,
        [
            &"COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt",
            &"COPY --from=build /out/sales-ingest /usr/local/bin/sales-ingest"
        ]
    );
    assert!(
        !runtime
            .iter()
            .any(|l| l.starts_with("RUN") || l.starts_with("ADD")),
        "the runtime stage adds nothing else"
    );
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as root: {user}");
    assert!(runtime.contains(&"EXPOSE 50051 8001"));
    let hc = runtime
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("HEALTHCHECK");
    assert!(
        hc.ends_with(r#"CMD ["sales-ingest", "healthcheck", "127.0.0.1:50051"]"#),
        "{hc}"
    );
    assert!(runtime.contains(&r#"ENTRYPOINT ["sales-ingest"]"#));

    // The build context keeps what the build copies and drops the rest.
    let ignore = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "proto", "src"] {
        assert!(repo_path(needed).exists(), "{needed}");
        assert!(!ignored.contains(&needed), ".dockerignore drops {needed}");
    }
    for dropped in ["target", ".git", ".cache"] {
        assert!(ignored.contains(&dropped), ".dockerignore keeps {dropped}");
    }
}

#[test]
fn the_binary_needs_no_library_that_bookworm_slim_lacks() {
    // What debian:bookworm-slim ships of the libraries a Rust binary may link
    // (libc6, libgcc-s1, zlib1g); anything else would need a package in the image.
    let slim = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libz.so.1",
        "ld-linux-x86-64.so.2",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
    ];
    let out = run(
        Command::new("readelf").args(["-d", env!("CARGO_BIN_EXE_sales-ingest")]),
        "readelf comes with the Debian package binutils",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{text}");
    for lib in &needed {
        assert!(
            slim.contains(lib),
            "the binary needs {lib}, which bookworm-slim lacks"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_healthcheck_command_exits_0_when_serving_and_1_otherwise() {
    let app = spawn_app(AppOptions {
        kafka: false,
        ..Default::default()
    })
    .await;
    app.wait_serving().await;
    let addr = app.grpc_url.trim_start_matches("http://").to_string();
    let healthcheck = |addr: String| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sales-ingest"));
        cmd.args(["healthcheck", &addr]);
        run_async(cmd, "cargo build")
    };
    let out = healthcheck(addr).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let closed = format!("127.0.0.1:{}", crate::backends::free_port());
    let out = healthcheck(closed).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    app.stop().await;
}

#[test]
fn promtool_accepts_the_prometheus_config_and_the_alert_rules_and_their_tests_pass() {
    for args in [
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let out = run(promtool().current_dir(repo()).args(args), PROMTOOL);
        assert!(
            out.status.success(),
            "promtool {}: {}",
            args.join(" "),
            describe(&out)
        );
        eprintln!(
            "promtool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}

/// The metric names a PromQL expression reads (functions, keywords, label names,
/// strings, ranges and Grafana variables left out).
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Keywords, and the aggregations that may be followed by `by (...)`.
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "bool",
        "offset",
        "group_left",
        "group_right",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
    ];
    let mut cleaned = String::new();
    let (mut in_str, mut in_range) = (false, false);
    for c in expr.chars() {
        match c {
            '"' if !in_range => in_str = !in_str,
            '[' if !in_str => in_range = true,
            ']' if !in_str => in_range = false,
            _ if in_str || in_range => {}
            _ => cleaned.push(c),
        }
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut in_group = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            if c == ')' {
                in_group = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
        if ["by", "without", "on", "ignoring"].contains(&word.as_str()) {
            in_group = true;
        } else if in_group
            || KEYWORDS.contains(&word.as_str())
            || matches!(next, Some('(' | '=' | '!' | '~'))
            || (start > 0 && chars[start - 1].is_ascii_digit())
        {
            // a function, a label, a grouping list, a keyword, or a number's exponent
        } else {
            names.insert(word);
        }
    }
    names
}

#[test]
fn promql_metric_names_are_extracted() {
    assert_eq!(
        metric_names(
            r#"sum by (instance) (rate(sales_events_rejected_total{job="x", status=~"a|b"}[$__rate_interval])) / on (instance) max without (le) (up) > 1e-3"#
        ),
        BTreeSet::from(["sales_events_rejected_total".into(), "up".into()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_cover_every_dashboard_and_alert_query() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    // Kafka traffic with one invalid event (dead-lettered to the topic), gRPC traffic
    // with one (dead-lettered to MongoDB): every metric gets a sample.
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let mut e = valid_event(i, &format!("prom-k-{i}"));
            if i == 3 {
                e.qty = 0;
            }
            encode(&e)
        })
        .collect();
    produce(&app.topic, 2, &payloads).await;
    let events: Vec<SalesEvent> = (0..5)
        .map(|i| {
            let mut e = valid_event(i, &format!("prom-g-{i}"));
            if i == 1 {
                e.sku.clear();
            }
            e
        })
        .collect();
    assert_eq!(app.ingest(events).await.accepted, 4);
    let stats = app.stats.clone();
    wait_until(Duration::from_secs(90), "Kafka events processed", || {
        let s = stats.snapshot();
        async move {
            s.kafka.unwrap().stored == 9
                && s.kafka.unwrap().rejected == 1
                && s.partitions.len() == 2
        }
    })
    .await;
    let http = app.http_url.clone();
    wait_until(Duration::from_secs(30), "both dead letters counted", || {
        let h = http.clone();
        async move {
            let text = get(&format!("{h}/metrics")).await.1;
            text.contains(r#"dead_letters_total{destination="kafka"} 1"#)
                && text.contains(r#"dead_letters_total{destination="mongodb"} 1"#)
        }
    })
    .await;
    let (code, text) = get(&format!("{}/metrics", app.http_url)).await;
    assert_eq!(code, 200);

    // promtool check metrics reads the exposition on stdin. Its only complaint may be
    // about kafka_consumer_lag_milliseconds, a name kept from the Python service.
    let out = tokio::task::spawn_blocking({
        let text = text.clone();
        move || {
            let mut child = match promtool()
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
            {
                Ok(c) => c,
                Err(e) => panic!("promtool is not installed ({e}): {PROMTOOL}"),
            };
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let allowed =
        r#"kafka_consumer_lag_milliseconds use base unit "seconds" instead of "milliseconds""#;
    let problems: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != allowed)
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics: {problems:?}\n{}",
        describe(&out)
    );
    // Exit 0 (clean) or 3 (lint findings, all of them the allowed one above).
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        describe(&out)
    );
    eprintln!(
        "promtool check metrics: exit {:?}: {}",
        out.status.code(),
        report.trim()
    );

    // Every metric the dashboard and the alerts query is exposed.
    let mut exposed: BTreeSet<String> = BTreeSet::from(["up".to_string()]);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            exposed.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exposed.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let dash = json("deploy/grafana/dashboards/sales-ingest.json");
    let mut queries: Vec<(String, String)> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            queries.push((
                format!("panel {}", p["title"]),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let alerts = yaml("deploy/prometheus/alerts.yml");
    for g in alerts["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            queries.push((
                format!("alert {}", r["alert"]),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let mut used = BTreeSet::new();
    for (what, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what}: no metric in {expr}");
        for name in names {
            assert!(
                exposed.contains(&name),
                "{what} queries {name}, which /metrics lacks"
            );
            used.insert(name);
        }
    }
    // The six names of the Python service are all on the dashboard or in an alert.
    for name in [
        "sales_events_processed_total",
        "sales_events_per_second",
        "kafka_consumer_lag_milliseconds",
        "mongodb_writes_total",
        "event_processing_duration_seconds_bucket",
        "service_uptime_seconds",
    ] {
        assert!(used.contains(name), "{name} is not on the dashboard");
    }
    app.stop().await;
}

#[test]
fn the_dashboard_has_the_panels_operators_need() {
    let dash = json("deploy/grafana/dashboards/sales-ingest.json");
    assert_eq!(dash["uid"], "sales-ingest");
    let panels = dash["panels"].as_array().unwrap();
    let find = |metric: &str| {
        panels.iter().any(|p| {
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["expr"].as_str().unwrap().contains(metric))
        })
    };
    for metric in [
        "sales_events_processed_total{job=\"sales-ingest\", instance=~\"$instance\", status=\"stored\"}",
        "sales_events_rejected_total",
        "mongodb_write_duration_seconds_bucket",
        "kafka_consumer_lag_messages",
        "ingest_queue_depth",
        "dependency_up",
        "kafka_consumer_paused",
    ] {
        assert!(find(metric), "no panel queries {metric}");
    }
    // Panels do not overlap on the 24-column grid.
    let mut cells = BTreeSet::new();
    for p in panels {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "panel {} too wide", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "panel {} overlaps another",
                    p["title"]
                );
            }
        }
    }
}
