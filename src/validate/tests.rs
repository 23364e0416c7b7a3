//! Validator unit tests: every rule, every timestamp form, and property tests that
//! no input panics and every acceptance satisfies the rules.
use super::*;

fn good() -> SalesEvent {
    SalesEvent {
        sku: "SKU-1".into(),
        qty: 3,
        price: 9.99,
        ts: "2026-11-25T10:00:00Z".into(),
        event_id: "e-1".into(),
    }
}

fn reason_of(event: SalesEvent) -> Reason {
    validate(event).expect_err("should be rejected").reason
}

#[test]
fn a_good_event_passes_with_its_timestamp_parsed() {
    let v = validate(good()).unwrap();
    assert_eq!(v.ts_millis, 1_795_600_800_000);
    assert_eq!(v.sku, "SKU-1");
    let offset = validate(SalesEvent {
        ts: "2026-11-25T11:00:00+01:00".into(),
        ..good()
    })
    .unwrap();
    assert_eq!(offset.ts_millis, v.ts_millis);
}

fn with_id(id: &str) -> SalesEvent {
    SalesEvent {
        event_id: id.into(),
        ..good()
    }
}

#[test]
fn the_validator_refuses_only_ids_generated_for_the_topic_read() {
    let err = validate(with_id("sales_txn:0:5")).unwrap_err();
    assert_eq!(err.reason, Reason::ReservedEventId);
    assert!(
        err.detail
            .contains("partition 0, offset 5 of topic sales_txn"),
        "{}",
        err.detail
    );
    for id in ["store:12:345", "other.topic:0:0", "sales_txn:00:1"] {
        assert_eq!(validate(with_id(id)).unwrap().event_id(), id);
    }
    let orders = Rules {
        kafka_topic: "orders".into(),
        ..Rules::DEFAULT
    };
    let reason = |id: &str| orders.validate(with_id(id)).err().map(|r| r.reason);
    assert_eq!(reason("orders:3:7"), Some(Reason::ReservedEventId));
    assert_eq!(reason("sales_txn:0:5"), None, "not the topic read");
    let blank = validate(with_id("  \t")).unwrap();
    assert_eq!(blank.event_id(), "", "a blank id is no id");
}

#[test]
fn malformed_bytes() {
    let err = decode(&[0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(err.reason, Reason::Malformed);
    assert!(err.detail.contains("protobuf"));
}

#[test]
fn encoded_event_round_trips() {
    let bytes = good().encode_to_vec();
    assert_eq!(decode(&bytes).unwrap().event_id, "e-1");
}

#[test]
fn missing_sku() {
    assert_eq!(
        reason_of(SalesEvent {
            sku: String::new(),
            ..good()
        }),
        Reason::MissingSku
    );
    assert_eq!(
        reason_of(SalesEvent {
            sku: "  ".into(),
            ..good()
        }),
        Reason::MissingSku
    );
}

#[test]
fn sku_too_long() {
    let ok = SalesEvent {
        sku: "é".repeat(64),
        ..good()
    };
    assert!(validate(ok).is_ok());
    assert_eq!(
        reason_of(SalesEvent {
            sku: "x".repeat(65),
            ..good()
        }),
        Reason::SkuTooLong
    );
}

#[test]
fn invalid_qty() {
    for qty in [0, -1, i32::MIN, MAX_QTY + 1] {
        assert_eq!(
            reason_of(SalesEvent { qty, ..good() }),
            Reason::InvalidQty,
            "{qty}"
        );
    }
    assert!(validate(SalesEvent {
        qty: MAX_QTY,
        ..good()
    })
    .is_ok());
}

#[test]
fn invalid_price() {
    for price in [-0.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e9 + 1.0] {
        assert_eq!(
            reason_of(SalesEvent { price, ..good() }),
            Reason::InvalidPrice,
            "{price}"
        );
    }
    assert!(validate(SalesEvent {
        price: 0.0,
        ..good()
    })
    .is_ok());
    assert!(validate(SalesEvent {
        price: 1e9,
        ..good()
    })
    .is_ok());
}

#[test]
fn invalid_ts() {
    for ts in [
        "",
        "yesterday",
        "2026-11-25",
        "1795600800",
        "2026-11-25T10:00Z",
        "2026-13-01T00:00:00Z",
    ] {
        let err = validate(SalesEvent {
            ts: ts.into(),
            ..good()
        })
        .expect_err(ts);
        assert_eq!(err.reason, Reason::InvalidTs, "{ts}");
        assert!(
            err.detail.contains("2026-11-25T10:00:00Z"),
            "{ts}: {}",
            err.detail
        );
    }
}

#[test]
fn ts_outside_years_1_to_9999_utc_is_invalid_ts_naming_the_range() {
    let with_ts = |ts: &str| {
        validate(SalesEvent {
            ts: ts.into(),
            ..good()
        })
    };
    for ts in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59"] {
        let err = with_ts(ts).expect_err(ts);
        assert_eq!(err.reason, Reason::InvalidTs, "{ts}");
        assert!(
            err.detail.contains("9999-12-31T23:59:59.999Z"),
            "{ts}: {}",
            err.detail
        );
    }
    assert!(with_ts("0001-01-01T00:00:00Z").is_ok());
    assert!(with_ts("9999-12-31T23:59:59.999+00:00").is_ok());
}

#[test]
fn iso_8601_forms_are_accepted_and_the_original_string_kept() {
    let want = validate(good()).unwrap().ts_millis;
    for ts in [
        "2026-11-25T10:00:00Z",
        "2026-11-25 10:00:00Z",
        "2026-11-25T11:00:00+01:00",
        "2026-11-25T11:00:00+0100",
        "2026-11-25T11:00:00+01",
        "2026-11-25T10:00:00.000000+00",
        "2026-11-25T10:00:00",
        "2026-11-25 10:00:00",
    ] {
        let v = validate(SalesEvent {
            ts: ts.into(),
            ..good()
        })
        .unwrap_or_else(|r| panic!("{ts}: {r:?}"));
        assert_eq!((v.ts_millis, v.ts.as_str()), (want, ts));
    }
}

#[test]
fn naive_ts_reject_needs_an_offset() {
    let rules = Rules {
        naive_ts: NaiveTs::Reject,
        ..Rules::DEFAULT
    };
    let naive = SalesEvent {
        ts: "2026-11-25 10:00:00".into(),
        ..good()
    };
    let err = rules.validate(naive.clone()).unwrap_err();
    assert_eq!(err.reason, Reason::InvalidTs);
    assert!(err.detail.contains("offset"), "{}", err.detail);
    assert!(validate(naive).is_ok(), "the default reads it as UTC");
    assert!(rules.validate(good()).is_ok());
}

#[test]
fn limits_come_from_the_rules() {
    let relaxed = Rules {
        max_qty: 5_000_000,
        max_price: 1e12,
        max_sku_chars: 100,
        max_event_id_chars: 200,
        ..Rules::DEFAULT
    };
    let big = SalesEvent {
        qty: 2_000_000,
        price: 5e10,
        sku: "s".repeat(100),
        event_id: "i".repeat(200),
        ..good()
    };
    assert!(relaxed.validate(big.clone()).is_ok());
    assert_eq!(reason_of(big.clone()), Reason::SkuTooLong);
    let strict = Rules {
        max_qty: 10,
        max_price: 5.0,
        max_sku_chars: 3,
        max_event_id_chars: 2,
        ..Rules::DEFAULT
    };
    let reason = |r: &Rules, e: SalesEvent| r.validate(e).unwrap_err();
    let e = reason(&strict, good());
    assert_eq!(e.reason, Reason::SkuTooLong);
    assert!(e.detail.contains("at most 3"), "{}", e.detail);
    let sku = || "abc".to_string();
    let e = reason(
        &strict,
        SalesEvent {
            sku: sku(),
            qty: 11,
            ..good()
        },
    );
    assert_eq!(
        (e.reason, e.detail.as_str()),
        (Reason::InvalidQty, "qty 11 is not in 1..=10")
    );
    let e = reason(
        &strict,
        SalesEvent {
            sku: sku(),
            qty: 10,
            ..good()
        },
    );
    assert_eq!(e.reason, Reason::InvalidPrice);
    let e = reason(
        &strict,
        SalesEvent {
            sku: sku(),
            price: 5.0,
            ..good()
        },
    );
    assert_eq!(e.reason, Reason::EventIdTooLong);
    let ok = SalesEvent {
        sku: sku(),
        price: 5.0,
        event_id: "ab".into(),
        ..good()
    };
    assert!(strict.validate(ok.clone()).is_ok());
    assert_eq!(strict.decode(&ok.encode_to_vec()), strict.validate(ok));
    assert_eq!(Rules::default(), Rules::DEFAULT);
}

#[test]
fn event_id_too_long() {
    assert!(validate(SalesEvent {
        event_id: "i".repeat(128),
        ..good()
    })
    .is_ok());
    assert_eq!(
        reason_of(SalesEvent {
            event_id: "i".repeat(129),
            ..good()
        }),
        Reason::EventIdTooLong
    );
}

#[test]
fn empty_event_id_is_allowed() {
    assert!(validate(SalesEvent {
        event_id: String::new(),
        ..good()
    })
    .is_ok());
}

#[test]
fn codes_are_distinct_and_match_display() {
    use strum::VariantArray;
    let mut codes: Vec<_> = Reason::VARIANTS.iter().map(|r| r.code()).collect();
    for r in Reason::VARIANTS {
        assert_eq!(r.to_string(), r.code());
    }
    assert_eq!(Reason::EventIdTooLong.code(), "event_id_too_long");
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), Reason::VARIANTS.len());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn checks_hold(v: &ValidEvent) -> bool {
        !v.sku.trim().is_empty()
            && v.sku.chars().count() <= MAX_SKU_CHARS
            && (1..=MAX_QTY).contains(&v.qty)
            && v.price.is_finite()
            && (0.0..=MAX_PRICE).contains(&v.price)
            && v.event_id.chars().count() <= MAX_EVENT_ID_CHARS
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any bytes: no panic; a rejection carries a known reason, an
        /// acceptance satisfies every rule.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            match decode(&bytes) {
                Ok(v) => prop_assert!(checks_hold(&v)),
                Err(r) => prop_assert!(<Reason as strum::VariantArray>::VARIANTS.contains(&r.reason) && !r.detail.is_empty()),
            }
        }

        /// Any field values, including hostile strings and floats.
        #[test]
        fn validate_never_panics(
            sku in ".{0,80}",
            qty in any::<i32>(),
            price in any::<f64>(),
            ts in prop_oneof![".{0,40}", "20[0-9]{2}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{0,12})?(Z|[+-][0-2][0-9](:?[0-6][0-9])?)?"],
            event_id in ".{0,140}",
        ) {
            let e = SalesEvent { sku, qty, price, ts, event_id };
            let bytes = e.encode_to_vec();
            let direct = validate(e);
            prop_assert_eq!(direct.clone(), decode(&bytes), "decoding then validating agrees");
            match direct {
                Ok(v) => prop_assert!(checks_hold(&v)),
                Err(r) => prop_assert!(<Reason as strum::VariantArray>::VARIANTS.contains(&r.reason)),
            }
        }

        /// A valid event with bytes flipped or cut: no panic, known reasons.
        #[test]
        fn corrupted_events_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
            let mut bytes = good().encode_to_vec();
            for (i, b) in flips {
                let n = bytes.len();
                bytes[i % n] ^= b;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Err(r) = decode(&bytes) {
                prop_assert!(<Reason as strum::VariantArray>::VARIANTS.contains(&r.reason));
            }
        }
    }
}
