//! Prometheus: promtool accepts the config, the alert rules and their unit tests, and
//! the live `/metrics`; every metric the Grafana dashboard and the alerts query (the
//! names taken from the parsed PromQL) is exposed.
use std::{collections::BTreeSet, io::Write, process::Stdio, time::Duration};

use promql_parser::{
    parser::{self, Expr},
    util::{walk_expr, ExprVisitor},
};
use sales_ingest::proto::sales::v1::SalesEvent;

use super::{json, yaml};
use crate::{helpers::*, tools::*};

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

/// Grafana's interval variables: they stand for a range, so a duration replaces them
/// before the expression is parsed as PromQL (other variables only occur inside label
/// values, which are strings to the parser).
const GRAFANA_INTERVALS: [&str; 3] = ["$__rate_interval", "$__interval", "$__range"];

/// The metric names a PromQL expression (possibly with Grafana variables) reads: the
/// names of its vector and range selectors. Panics if it is not PromQL.
fn metric_names(expr: &str) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
            let selector = match e {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(name) = selector.and_then(|vs| vs.name.as_ref()) {
                self.0.insert(name.clone());
            }
            Ok(true)
        }
    }
    let promql = GRAFANA_INTERVALS
        .iter()
        .fold(expr.to_string(), |e, var| e.replace(var, "5m"));
    let ast = parser::parse(&promql).unwrap_or_else(|e| panic!("not PromQL: {expr}: {e}"));
    let mut names = Names(BTreeSet::new());
    let Ok(_) = walk_expr(&mut names, &ast);
    names.0
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
