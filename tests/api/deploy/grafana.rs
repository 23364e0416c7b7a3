//! The Grafana dashboard: the panels operators need, on a grid without overlaps. That
//! its queries read only exposed metrics is checked against a live `/metrics` in
//! `prometheus`.
use std::collections::BTreeSet;

use super::json;

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
