//! `ingestctl stats`: IngestAdmin/GetStats as JSON (the server's own message, with the
//! proto field names, as `/stats` serves it) or as aligned tables for people.
use sales_ingest::proto::ingest::v1::{
    ingest_admin_client::IngestAdminClient, GetStatsRequest, GetStatsResponse, SourceCounts,
};
use tonic::transport::Channel;

use crate::{
    connect::request,
    error::CtlError,
    table::{key_values, Align, Table},
};

/// Calls GetStats.
pub async fn fetch(channel: Channel) -> Result<GetStatsResponse, CtlError> {
    let resp = IngestAdminClient::new(channel)
        .get_stats(request(GetStatsRequest {}))
        .await
        .map_err(|s| CtlError::from_status("GetStats", s, false))?;
    let mut stats = resp.into_inner();
    stats.kafka.get_or_insert_default();
    stats.grpc.get_or_insert_default();
    Ok(stats)
}

/// Seconds as `1d 02h 03m 04s` (leading zero units left out).
pub fn format_uptime(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m, s) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h:02}h {m:02}m {s:02}s"),
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn offset(o: i64) -> String {
    if o < 0 {
        "-".into()
    } else {
        o.to_string()
    }
}

fn counts_row(name: &str, c: &SourceCounts) -> Vec<String> {
    vec![
        name.into(),
        c.stored.to_string(),
        c.duplicate.to_string(),
        c.rejected.to_string(),
        c.failed.to_string(),
        c.updated.to_string(),
    ]
}

/// "no", or "yes" with the reason and what ends it.
fn paused(v: &GetStatsResponse) -> String {
    if !v.consumer_paused {
        return yes_no(false);
    }
    let why = match v.consumer_paused_reason.as_str() {
        "admin" => "admin: PauseConsumer; `ingestctl resume` ends it",
        "backpressure" => {
            "backpressure: the pipeline is full (MongoDB slow or down); ends by itself"
        }
        "shutdown" => "shutdown: the service is stopping",
        "" => return yes_no(true),
        other => other,
    };
    format!("{} ({why})", yes_no(true))
}

/// The stats as text: a summary, counts per source, lag per partition, rejections.
pub fn render(addr: &str, v: &GetStatsResponse) -> String {
    let connection = |up: bool| if up { "connected" } else { "NOT connected" }.to_string();
    let kafka = if v.kafka_enabled {
        connection(v.kafka_connected)
    } else {
        "disabled".to_string()
    };
    let mut summary = vec![
        ("server", addr.to_string()),
        ("uptime", format_uptime(v.uptime_seconds)),
        ("kafka", kafka),
        ("mongodb", connection(v.mongodb_connected)),
    ];
    if v.schema_registry_enabled {
        summary.push(("schema registry", connection(v.schema_registry_connected)));
    }
    summary.extend([
        ("consumer paused", paused(v)),
        ("consumer lag", v.consumer_lag.to_string()),
        ("queue depth", v.queue_depth.to_string()),
        ("batches written", v.batches_written.to_string()),
        ("events/s", format!("{:.1}", v.events_per_second)),
    ]);
    let mut out = key_values(&summary);
    let num = Align::Right;
    let mut sources = Table::new(&[
        ("SOURCE", Align::Left),
        ("STORED", num),
        ("DUPLICATE", num),
        ("REJECTED", num),
        ("FAILED", num),
        ("UPDATED", num),
    ]);
    let total = SourceCounts {
        stored: v.events_stored,
        duplicate: v.events_duplicate,
        rejected: v.events_rejected,
        failed: v.events_failed,
        updated: v.events_updated,
    };
    sources
        .row(counts_row("kafka", &v.kafka.unwrap_or_default()))
        .row(counts_row("grpc", &v.grpc.unwrap_or_default()))
        .row(counts_row("total", &total));
    out.push('\n');
    out.push_str(&sources.render());
    if v.kafka_enabled {
        out.push('\n');
        if v.partitions.is_empty() {
            out.push_str("no partitions assigned\n");
        } else {
            let mut parts = Table::new(&[
                ("PARTITION", num),
                ("COMMITTED", num),
                ("HIGH WATERMARK", num),
                ("LAG", num),
            ]);
            for p in &v.partitions {
                parts.row(vec![
                    p.partition.to_string(),
                    offset(p.committed_offset),
                    offset(p.high_watermark),
                    p.lag.to_string(),
                ]);
            }
            out.push_str(&parts.render());
        }
    }
    let reasons: Vec<_> = v
        .rejected_by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .collect();
    if !reasons.is_empty() {
        let mut t = Table::new(&[("REJECTION REASON", Align::Left), ("COUNT", num)]);
        for (reason, n) in reasons {
            t.row(vec![reason.clone(), n.to_string()]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sales_ingest::proto::ingest::v1::PartitionLag;

    #[test]
    fn uptime_formats() {
        assert_eq!(format_uptime(4.9), "4s");
        assert_eq!(format_uptime(65.0), "1m 05s");
        assert_eq!(format_uptime(3_723.0), "1h 02m 03s");
        assert_eq!(format_uptime(90_061.0), "1d 01h 01m 01s");
        assert_eq!(format_uptime(-1.0), "0s");
    }

    fn sample() -> GetStatsResponse {
        GetStatsResponse {
            uptime_seconds: 3_723.0,
            events_stored: 1_905,
            events_rejected: 100,
            kafka: Some(SourceCounts {
                stored: 5,
                ..Default::default()
            }),
            grpc: Some(SourceCounts {
                stored: 1_900,
                rejected: 100,
                ..Default::default()
            }),
            kafka_enabled: true,
            kafka_connected: true,
            mongodb_connected: true,
            consumer_paused: true,
            consumer_paused_reason: "backpressure".into(),
            partitions: vec![PartitionLag {
                partition: 0,
                committed_offset: 5,
                high_watermark: 7,
                lag: 2,
            }],
            rejected_by_reason: [("invalid_qty".to_string(), 100), ("malformed".into(), 0)]
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_table_shows_sources_partitions_and_reasons() {
        let text = render("http://h:1", &sample());
        for expected in [
            "server           http://h:1\n",
            "uptime           1h 02m 03s\n",
            "consumer paused  yes (backpressure: the pipeline is full (MongoDB slow or down); ends by itself)\n",
            "SOURCE  STORED  DUPLICATE  REJECTED  FAILED  UPDATED\n",
            "grpc      1900          0       100       0        0\n",
            "total     1905          0       100       0        0\n",
            "PARTITION  COMMITTED  HIGH WATERMARK  LAG\n",
            "        0          5               7    2\n",
            "REJECTION REASON  COUNT\ninvalid_qty         100\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("malformed"), "zero reasons are left out");
    }

    #[test]
    fn without_kafka_there_is_no_partition_table() {
        let v = GetStatsResponse {
            kafka_enabled: false,
            partitions: Vec::new(),
            ..sample()
        };
        let text = render("a", &v);
        assert!(text.contains("kafka            disabled\n"), "{text}");
        assert!(!text.contains("PARTITION"));
    }

    #[test]
    fn the_schema_registry_shows_only_when_configured() {
        assert!(!render("a", &sample()).contains("schema registry"));
        let v = GetStatsResponse {
            schema_registry_enabled: true,
            ..sample()
        };
        let text = render("a", &v);
        assert!(text.contains("schema registry  NOT connected\n"), "{text}");
    }

    #[test]
    fn json_uses_the_proto_field_names() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["events_stored"], 1_905);
        assert_eq!(json["grpc"]["rejected"], 100);
        assert_eq!(json["partitions"][0]["lag"], 2);
        assert_eq!(json["rejected_by_reason"]["invalid_qty"], 100);
    }
}
