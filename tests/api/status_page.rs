//! The status page at `GET /`, rendered by headless Chromium against the real server
//! after Kafka and gRPC traffic: the DOM shows the same figures as `/stats`. A
//! screenshot is saved to `target/test-artifacts/status.png`.
use std::{process::Command, time::Duration};

use sales_ingest::proto::{ingest::v1::GetStatsResponse as Snapshot, sales::v1::SalesEvent};
use test_support::servers::scratch_dir;

use crate::{helpers::*, tools::*};

const CHROMIUM: &str = "apt-get install --no-install-recommends chromium";

/// Debian's `chromium`, or the program named by `CHROMIUM`.
fn chromium_bin() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Runs headless Chromium on `url` with a fresh profile; `extra` picks the output
/// (`--dump-dom` or `--screenshot=...`).
async fn chromium(url: &str, extra: &[String]) -> std::process::Output {
    chromium_sized(url, (1280, 1000), extra).await
}

/// [`chromium`] with a window of `(width, height)` CSS pixels.
async fn chromium_sized(url: &str, size: (u32, u32), extra: &[String]) -> std::process::Output {
    let profile = scratch_dir(&unique("chromium-profile"));
    let mut cmd = Command::new(chromium_bin());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--window-size={},{}", size.0, size.1))
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let out = tokio::task::spawn_blocking(move || {
        run_with_deadline(&mut cmd, Duration::from_secs(120), CHROMIUM)
    })
    .await
    .expect("chromium thread");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(out.status.success(), "chromium failed: {}", describe(&out));
    out
}

pub async fn rendered_dom(url: &str) -> String {
    let out = chromium(url, &["--dump-dom".into()]).await;
    let dom = String::from_utf8(out.stdout).expect("UTF-8 DOM");
    assert!(dom.contains("sales-ingest"), "no page rendered: {dom}");
    dom
}

/// The text of the element with `id` (a leaf element).
pub fn text(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} not in the DOM"));
    let start = at + dom[at..].find('>').expect("tag end") + 1;
    let end = start + dom[start..].find('<').expect("text end");
    dom[start..end].to_string()
}

/// An attribute of the element with `id`.
pub fn attr(dom: &str, id: &str, name: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} not in the DOM"));
    let open = dom[..at].rfind('<').expect("tag start");
    let close = at + dom[at..].find('>').expect("tag end");
    let tag = &dom[open..close];
    let key = format!("{name}=\"");
    let v = tag
        .find(&key)
        .unwrap_or_else(|| panic!("{tag} has no {name}"))
        + key.len();
    tag[v..v + tag[v..].find('"').unwrap()].to_string()
}

/// The cell texts of the table row carrying `marker` (e.g. `data-reason="invalid_ts"`).
fn row(dom: &str, marker: &str) -> Option<Vec<String>> {
    let at = dom.find(marker)?;
    let end = at + dom[at..].find("</tr>").expect("row end");
    let mut cells = Vec::new();
    let mut rest = &dom[at..end];
    while let Some(td) = rest.find("<td") {
        let start = td + rest[td..].find('>').unwrap() + 1;
        let stop = start + rest[start..].find("</td>").unwrap();
        cells.push(rest[start..stop].to_string());
        rest = &rest[stop..];
    }
    Some(cells)
}

/// Asserts the rendered page shows `s`'s figures.
fn assert_shows(dom: &str, s: &Snapshot, paused: bool) {
    assert_eq!(text(dom, "events-stored"), s.events_stored.to_string());
    assert_eq!(text(dom, "events-rejected"), s.events_rejected.to_string());
    assert_eq!(
        text(dom, "events-duplicate"),
        s.events_duplicate.to_string()
    );
    assert_eq!(text(dom, "events-failed"), s.events_failed.to_string());
    assert_eq!(text(dom, "events-updated"), s.events_updated.to_string());
    assert_eq!(text(dom, "dep-mongodb"), "up");
    assert_eq!(text(dom, "dep-schema-registry"), "disabled");
    assert_eq!(text(dom, "dep-kafka"), "up");
    assert_eq!(
        text(dom, "consumer-state"),
        if paused { "paused" } else { "running" }
    );
    assert_eq!(text(dom, "serving"), "SERVING");
    for (reason, n) in &s.rejected_by_reason {
        let cells = row(dom, &format!("data-reason=\"{reason}\""))
            .unwrap_or_else(|| panic!("no row for {reason}"));
        assert_eq!(cells, vec![reason.clone(), n.to_string()]);
    }
    assert_eq!(
        dom.matches("data-reason=").count(),
        s.rejected_by_reason.len(),
        "one row per reason"
    );
    for p in &s.partitions {
        let cells = row(dom, &format!("data-partition=\"{}\"", p.partition))
            .unwrap_or_else(|| panic!("no row for partition {}", p.partition));
        assert_eq!(cells[0], p.partition.to_string());
        assert_eq!(
            cells[3],
            p.lag.to_string(),
            "lag of partition {}",
            p.partition
        );
    }
    let grpc = row(dom, "data-source=\"grpc\"").expect("grpc row");
    assert_eq!(grpc[1], s.grpc.unwrap().stored.to_string());
    assert_eq!(grpc[3], s.grpc.unwrap().updated.to_string());
    assert_eq!(grpc[4], s.grpc.unwrap().rejected.to_string());
    let kafka = row(dom, "data-source=\"kafka\"").expect("kafka row");
    assert_eq!(kafka[1], s.kafka.unwrap().stored.to_string());
    assert_eq!(kafka[4], s.kafka.unwrap().rejected.to_string());
    // It polled more than once and drew the chart from the rates between polls.
    let polls: u32 = attr(dom, "chart-points", "data-count").parse().unwrap();
    assert!(polls >= 1, "no chart points");
    let points = attr(dom, "line-stored", "points");
    assert_eq!(points.split(' ').count() as u32, polls, "{points}");
}

#[test]
fn the_status_page_is_self_contained() {
    let page = std::fs::read_to_string(repo_path("src/status.html")).unwrap();
    for needle in ["<script src", "<link", "@import", "url(", "@font-face"] {
        assert!(
            !page.contains(needle),
            "status.html loads something: {needle}"
        );
    }
    let urls: Vec<_> = page
        .match_indices("://")
        .map(|(i, _)| {
            let scheme = page[..i]
                .rfind(|c: char| !c.is_ascii_alphabetic())
                .map_or(0, |j| j + 1);
            &page[scheme..(i + 40).min(page.len())]
        })
        .filter(|u| !u.starts_with("http://www.w3.org/2000/svg"))
        .collect();
    assert!(urls.is_empty(), "external URLs in status.html: {urls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_live_figures_in_headless_chromium() {
    let version = run(Command::new(chromium_bin()).arg("--version"), CHROMIUM);
    assert!(version.status.success(), "{}", describe(&version));
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 2).await;
    // Kafka: 20 events over 2 partitions, two invalid.
    let payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let mut e = valid_event(i, &format!("page-k-{i}"));
            match i {
                4 => e.qty = 0,
                9 => e.sku.clear(),
                _ => {}
            }
            encode(&e)
        })
        .collect();
    produce(&app.topic, 2, &payloads).await;
    // gRPC: 12 events in one request, three invalid.
    let events: Vec<SalesEvent> = (0..12)
        .map(|i| {
            let mut e = valid_event(i, &format!("page-g-{i}"));
            match i {
                2 => e.price = -3.0,
                5 | 7 => e.ts = "someday".into(),
                _ => {}
            }
            e
        })
        .collect();
    assert_eq!(app.ingest(events).await.accepted, 9);

    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(90),
        "Kafka events stored and committed on both partitions, both dependencies up",
        || {
            let s = stats.snapshot();
            async move {
                s.kafka.unwrap().stored == 18
                    && s.kafka.unwrap().rejected == 2
                    && s.partitions.len() == 2
                    && s.partitions
                        .iter()
                        .all(|p| p.committed_offset == 10 && p.high_watermark == 10)
                    && s.mongodb_connected
                    && s.kafka_connected
            }
        },
    )
    .await;
    let s = app.stats.snapshot();
    assert_eq!((s.events_stored, s.events_rejected), (27, 5));
    assert_eq!(s.rejected_by_reason.len(), 4, "{:?}", s.rejected_by_reason);
    let url = format!("{}/", app.http_url);

    // Paused: the consumer state says so.
    let mut admin = app.admin().await;
    admin
        .pause_consumer(app.authed(sales_ingest::proto::ingest::v1::PauseConsumerRequest {}))
        .await
        .unwrap();
    let dom = rendered_dom(&url).await;
    assert_shows(&dom, &app.stats.snapshot(), true);

    // Running again: the figures, and a screenshot to look at.
    admin
        .resume_consumer(app.authed(sales_ingest::proto::ingest::v1::ResumeConsumerRequest {}))
        .await
        .unwrap();
    let dom = rendered_dom(&url).await;
    assert_shows(&dom, &app.stats.snapshot(), false);
    assert_eq!(text(&dom, "events-stored"), "27");
    let (_, body) = get(&format!("{}/stats", app.http_url)).await;
    let http: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        text(&dom, "events-stored"),
        http["events_stored"].to_string()
    );

    let dir = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("status.png");
    let _ = std::fs::remove_file(&png);
    chromium(&url, &[format!("--screenshot={}", png.display())]).await;
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        png.display(),
        bytes.len()
    );
    eprintln!("status page screenshot: {}", png.display());
    app.stop().await;
}

/// The value of `name` on the `<body>` of a dumped DOM.
fn body_attr(dom: &str, name: &str) -> String {
    let body = &dom[dom.find("<body").expect("a body")..];
    let tag = &body[..body.find('>').expect("the body tag ends")];
    let at = tag
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("<body> has no {name}: {tag}"));
    let rest = &tag[at + name.len() + 2..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// At a phone's, a tablet's and two laptops' widths, with every table filled (partitions,
/// rejections, sources), no table is wider than its card: the page measures each table
/// against its card after rendering and lists those that overflow in `data-overflow`.
/// Screenshots at each width go to `target/test-artifacts/status-<width>.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_stays_inside_its_card_from_a_phone_to_a_wide_laptop() {
    let app = spawn_app(AppOptions::default()).await;
    create_topic(&app.topic, 3).await;
    let payloads: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let mut e = valid_event(i, &format!("wide-{i}"));
            if i % 10 == 0 {
                e.qty = 0;
            }
            encode(&e)
        })
        .collect();
    produce(&app.topic, 3, &payloads).await;
    let stats = app.stats.clone();
    wait_until(
        Duration::from_secs(90),
        "the events resolved on 3 partitions",
        || {
            let s = stats.snapshot();
            async move { s.partitions.len() == 3 && s.kafka.unwrap().stored == 270 }
        },
    )
    .await;
    let url = format!("{}/", app.http_url);
    let dir = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    for size in [(375, 812), (768, 1024), (1300, 900), (1920, 1080)] {
        let out = chromium_sized(&url, size, &["--dump-dom".into()]).await;
        let dom = String::from_utf8(out.stdout).expect("UTF-8 DOM");
        assert_ne!(
            body_attr(&dom, "data-polls"),
            "0",
            "the page rendered the stats"
        );
        assert_eq!(
            body_attr(&dom, "data-overflow"),
            "",
            "tables wider than their card at {}x{} px",
            size.0,
            size.1
        );
        let png = dir.join(format!("status-{}.png", size.0));
        chromium_sized(&url, size, &[format!("--screenshot={}", png.display())]).await;
        assert!(std::fs::read(&png)
            .expect("screenshot")
            .starts_with(b"\x89PNG"));
    }
    app.stop().await;
}
