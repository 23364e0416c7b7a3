//! Configuration unit tests: defaults, refused values with the variable named, masking
//! of secrets, the Kafka properties, the validation rules and the document format.
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;
use crate::validate::Rules;

fn parse(args: &[&str]) -> Result<Config, clap::Error> {
    Config::try_parse_from(std::iter::once("sales-ingest").chain(args.iter().copied()))
}

#[test]
fn defaults_match_the_python_service() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.kafka_topic, "sales_txn");
    assert_eq!(c.kafka_group_id, "ingest_service");
    assert_eq!(c.mongodb_database, "sales_db");
    assert_eq!(c.mongodb_collection, "raw_sales");
    assert_eq!(c.batch_size, 100);
    assert_eq!(c.flush_interval(), Duration::from_secs(5));
    assert_eq!(c.dlq_topic(), "sales_txn.dlq");
    assert_eq!(c.grpc_addr.port(), 50051);
    assert_eq!(c.http_addr.port(), 8001);
    assert_eq!(c.rules(), Rules::DEFAULT);
    assert_eq!(c.document_format, DocumentFormat::Typed);
    let legacy = parse(&["--document-format=legacy"]).unwrap();
    assert_eq!(legacy.document_format, DocumentFormat::Legacy);
}

#[test]
fn validation_limits_and_the_naive_ts_policy_are_set() {
    let c = parse(&[
        "--max-qty=5000000",
        "--max-price=1e12",
        "--max-sku-chars=10",
        "--max-event-id-chars=20",
        "--naive-ts=reject",
        "--kafka-topic=orders",
    ])
    .unwrap();
    let want = Rules {
        max_qty: 5_000_000,
        max_price: 1e12,
        max_sku_chars: 10,
        max_event_id_chars: 20,
        naive_ts: NaiveTs::Reject,
        kafka_topic: "orders".into(),
    };
    assert_eq!(c.rules(), want);
    for (arg, var) in [
        ("--max-qty=0", "MAX_QTY"),
        ("--max-qty=3000000000", "MAX_QTY"),
        ("--max-price=-1", "MAX_PRICE"),
        ("--max-price=inf", "MAX_PRICE"),
        ("--max-price=NaN", "MAX_PRICE"),
        ("--max-sku-chars=0", "MAX_SKU_CHARS"),
        ("--max-event-id-chars=0", "MAX_EVENT_ID_CHARS"),
        ("--naive-ts=local", "NAIVE_TS"),
        ("--document-format=json", "DOCUMENT_FORMAT"),
    ] {
        let err = parse(&[arg]).expect_err(arg);
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn invalid_values_are_refused_with_the_flag_named() {
    for (arg, var) in [
        ("--batch-size=0", "BATCH_SIZE"),
        ("--flush-interval=-1", "FLUSH_INTERVAL"),
        ("--flush-interval=soon", "FLUSH_INTERVAL"),
        ("--grpc-addr=nowhere", "GRPC_ADDR"),
        ("--kafka-enabled=maybe", "KAFKA_ENABLED"),
        ("--log-format=xml", "LOG_FORMAT"),
        ("--rust-log=info,[", "RUST_LOG"),
    ] {
        let err = parse(&[arg]).expect_err("should fail");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn secrets_are_masked_in_debug_output() {
    let c = parse(&[
        "--mongodb-url",
        "mongodb://ingest:s3cr3t@db:27017/?authSource=admin",
        "--admin-token",
        "tok-1234567890abcdef",
    ])
    .unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("tok-1234567890abcdef"),
        "{shown}"
    );
    assert!(shown.contains("mongodb://ingest:****@db:27017"), "{shown}");
}

#[test]
fn kafka_security_settings_and_properties_are_passed_through_in_order() {
    let c = parse(&[
        "--kafka-security-protocol=sasl_ssl",
        "--kafka-sasl-mechanism=SCRAM-SHA-512",
        "--kafka-sasl-username=ingest",
        "--kafka-sasl-password=pw-123",
        "--kafka-ssl-ca-location=/etc/ca.pem",
        "--kafka-properties=client.id=x, ssl.key.password=kp-secret-9 ,fetch.max.bytes=1024",
    ])
    .unwrap();
    let props = c.kafka_client_properties();
    let keys: Vec<_> = props.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "client.id",
            "ssl.key.password",
            "fetch.max.bytes"
        ]
    );
    assert_eq!(props[3].1, "pw-123");
    assert_eq!(props[3].2, "KAFKA_SASL_PASSWORD");
    assert_eq!(props[7].2, "KAFKA_PROPERTIES");
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("pw-123") && !shown.contains("kp-secret-9"),
        "{shown}"
    );
    assert!(parse(&["--kafka-properties=novalue"]).is_err());
    assert!(parse(&["--kafka-security-protocol=tls"]).is_err());
}

#[test]
fn topic_names_are_checked_and_tokens_trimmed() {
    for bad in ["bad/dlq name", "..", &"t".repeat(250), "spa ce"] {
        let err = parse(&["--kafka-dlq-topic", bad]).expect_err(bad);
        assert!(err.to_string().contains("KAFKA_DLQ_TOPIC"), "{err}");
        assert!(parse(&["--kafka-topic", bad]).is_err());
    }
    assert!(parse(&["--kafka-dlq-topic=sales.dlq-2_x"]).is_ok());
    let c = parse(&["--admin-token", "tok-1234567890abcd\n"]).unwrap();
    assert_eq!(
        c.admin_token().unwrap().expose_secret(),
        "tok-1234567890abcd"
    );
    let short = parse(&["--admin-token", "change-me"])
        .unwrap_err()
        .to_string();
    assert!(
        short.contains("ADMIN_TOKEN") && short.contains("at least 16"),
        "{short}"
    );
    for blank in ["", "  \n"] {
        let err = parse(&["--producer-token", blank]).unwrap_err().to_string();
        assert!(
            err.contains("PRODUCER_TOKEN") && err.contains("blank"),
            "{err}"
        );
    }
    assert!(parse(&["--admin-token", "  "])
        .unwrap()
        .admin_token()
        .is_none());
}

#[test]
fn tls_key_requires_cert() {
    assert!(parse(&["--grpc-tls-key=/k.pem"]).is_err());
    assert!(parse(&["--grpc-tls-client-ca=/ca.pem"]).is_err());
    assert!(parse(&["--grpc-tls-cert=/c.pem", "--grpc-tls-key=/k.pem"]).is_ok());
}

#[test]
fn masking_leaves_urls_without_password_alone() {
    assert_eq!(mask_url_password("mongodb://h:1/x"), "mongodb://h:1/x");
    assert_eq!(mask_url_password("mongodb://u@h"), "mongodb://u@h");
    assert_eq!(mask_url_password("plain"), "plain");
}

#[test]
fn value_formats_and_the_schema_registry() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.kafka_value_format, ValueFormat::Auto);
    assert!(c.schema_registry_url.is_none());
    for (arg, want) in [
        ("protobuf", ValueFormat::Protobuf),
        ("confluent", ValueFormat::Confluent),
        ("json", ValueFormat::Json),
    ] {
        let c = parse(&[format!("--kafka-value-format={arg}").as_str()]).unwrap();
        assert_eq!(c.kafka_value_format, want);
    }
    let err = parse(&["--kafka-value-format=xml"]).unwrap_err();
    assert!(err.to_string().contains("KAFKA_VALUE_FORMAT"), "{err}");
    let err = parse(&["--schema-registry-url=registry:8081"]).unwrap_err();
    assert!(err.to_string().contains("SCHEMA_REGISTRY_URL"), "{err}");
    let c = parse(&[
        "--schema-registry-url=https://reader:hunter2@registry:8081",
        "--schema-registry-username=reader",
        "--schema-registry-password=s3cret-pw",
    ])
    .unwrap();
    let logged = format!("{c:?}");
    assert!(
        !logged.contains("hunter2") && !logged.contains("s3cret-pw"),
        "{logged}"
    );
    let r = c.schema_registry();
    assert_eq!(r.url, "https://reader:hunter2@registry:8081");
    assert_eq!(r.username.as_deref(), Some("reader"));
}

#[test]
fn schema_registry_credentials_need_each_other_and_the_url() {
    let url = "--schema-registry-url=http://registry:8081";
    for (args, var, missing) in [
        (
            vec![
                "--schema-registry-username=u",
                "--schema-registry-password=p",
            ],
            "SCHEMA_REGISTRY_USERNAME",
            "SCHEMA_REGISTRY_URL is missing",
        ),
        (
            vec!["--schema-registry-password=p"],
            "SCHEMA_REGISTRY_PASSWORD",
            "SCHEMA_REGISTRY_URL is missing",
        ),
        (
            vec![url, "--schema-registry-username=u"],
            "SCHEMA_REGISTRY_USERNAME",
            "SCHEMA_REGISTRY_PASSWORD is missing",
        ),
        (
            vec![url, "--schema-registry-password=p"],
            "SCHEMA_REGISTRY_PASSWORD",
            "SCHEMA_REGISTRY_USERNAME is missing",
        ),
    ] {
        let err = parse(&args).unwrap().check().unwrap_err();
        assert_eq!(err.var, var, "{args:?}");
        assert!(err.message.contains(missing), "{args:?}: {err}");
    }
    for args in [
        vec![],
        vec![url],
        vec![
            url,
            "--schema-registry-username=u",
            "--schema-registry-password=p",
        ],
    ] {
        assert!(parse(&args).unwrap().check().is_ok(), "{args:?}");
    }
}

#[test]
fn gssapi_is_refused_because_this_librdkafka_has_no_gssapi() {
    // librdkafka's own `builtin.features` lists sasl_gssapi even without Cyrus SASL (its
    // CMake build defines WITH_SASL_CYRUS as 0); a client using the mechanism tells.
    let client = |mechanism: &str| {
        rdkafka::ClientConfig::new()
            .set("security.protocol", "sasl_plaintext")
            .set("sasl.mechanism", mechanism)
            .set("sasl.username", "u")
            .set("sasl.password", "p")
            .create::<rdkafka::producer::BaseProducer>()
            .map(drop)
            .map_err(|e| e.to_string())
    };
    assert_eq!(client("SCRAM-SHA-512"), Ok(()));
    let missing = client("GSSAPI").expect_err(
        "librdkafka has GSSAPI support now: accept KAFKA_SASL_MECHANISM=GSSAPI and test it",
    );
    assert!(missing.contains("GSSAPI"), "{missing}");
    let err = parse(&["--kafka-sasl-mechanism=GSSAPI"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("KAFKA_SASL_MECHANISM") && err.contains("no GSSAPI support"),
        "{err}"
    );
    let c = parse(&["--kafka-sasl-mechanism=SCRAM-SHA-512"]).unwrap();
    assert_eq!(c.kafka_sasl_mechanism.as_deref(), Some("SCRAM-SHA-512"));
}

#[test]
fn the_group_protocol_defaults_to_classic_and_unset_timings_stay_unset() {
    use crate::librdkafka::GroupProtocol;
    let c = parse(&[]).unwrap();
    assert_eq!(c.kafka_group_protocol, GroupProtocol::Classic);
    assert_eq!(c.kafka_session_timeout_ms, None);
    assert_eq!(c.kafka_dlq_replication_factor, -1);
    let c = parse(&[
        "--kafka-group-protocol=consumer",
        "--kafka-dlq-replication-factor=3",
    ])
    .unwrap();
    assert_eq!(c.kafka_group_protocol, GroupProtocol::Consumer);
    assert_eq!(c.kafka_dlq_replication_factor, 3);
    for bad in ["0", "-2", "40000", "three"] {
        let err = parse(&[&format!("--kafka-dlq-replication-factor={bad}")]).unwrap_err();
        assert!(
            err.to_string().contains("KAFKA_DLQ_REPLICATION_FACTOR"),
            "{err}"
        );
    }
}
