//! The `OTEL_*` variables the trace exporter reads, checked before it starts. The
//! OpenTelemetry SDK ignores a value it cannot use and falls back to its default, so a
//! typo would sample, batch, time out or authenticate otherwise than configured without
//! a word; here such a value stops start-up instead, naming the variable. An empty value
//! counts as unset, as the OpenTelemetry specification says.

/// The samplers the SDK builds from `OTEL_TRACES_SAMPLER`.
const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];
/// Samplers the specification names that this build does not have.
const UNSUPPORTED_SAMPLERS: [&str; 3] = ["jaeger_remote", "parentbased_jaeger_remote", "xray"];

const PROTOCOLS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
/// Variables holding milliseconds.
const MILLISECONDS: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
];
/// Variables holding counts.
const COUNTS: [&str; 3] = [
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
];
const HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

/// Checks the `OTEL_*` variables `var` returns (the process environment in the
/// server); Err is the message, starting `invalid value for <VARIABLE>`.
pub fn check(var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let invalid = |name: &str, why: String| format!("invalid value for {name}: {why}");
    let sampler = set("OTEL_TRACES_SAMPLER");
    if let Some(s) = &sampler {
        if UNSUPPORTED_SAMPLERS.contains(&s.as_str()) {
            let why = format!("`{s}` is not supported; use one of {}", SAMPLERS.join(", "));
            return Err(invalid("OTEL_TRACES_SAMPLER", why));
        }
        if !SAMPLERS.contains(&s.as_str()) {
            let why = format!("`{s}` is not a sampler; use one of {}", SAMPLERS.join(", "));
            return Err(invalid("OTEL_TRACES_SAMPLER", why));
        }
    }
    let ratio_sampler = sampler.as_deref().filter(|s| s.ends_with("traceidratio"));
    if let (Some(s), Some(arg)) = (ratio_sampler, set("OTEL_TRACES_SAMPLER_ARG")) {
        if !arg.parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r)) {
            let why =
                format!("`{arg}` is not a number from 0 to 1 (the share of traces {s} samples)");
            return Err(invalid("OTEL_TRACES_SAMPLER_ARG", why));
        }
    }
    for name in PROTOCOLS {
        match set(name) {
            Some(p) if p != "grpc" => {
                let why = format!(
                    "`{p}` is not supported: sales-ingest exports traces over OTLP/gRPC \
                     only; set it to grpc or unset it"
                );
                return Err(invalid(name, why));
            }
            _ => {}
        }
    }
    let units = MILLISECONDS
        .iter()
        .map(|n| (*n, "milliseconds"))
        .chain(COUNTS.iter().map(|n| (*n, "a count")));
    for (name, unit) in units {
        if let Some(v) = set(name).filter(|v| v.parse::<u64>().is_err()) {
            let why = format!("`{v}` is not a non-negative integer ({unit})");
            return Err(invalid(name, why));
        }
    }
    for name in HEADERS {
        if let Some(why) = set(name).and_then(|v| bad_headers(&v)) {
            return Err(invalid(name, why));
        }
    }
    Ok(())
}

/// Why `v` is not comma-separated `key=value` pairs with HTTP header names as keys and
/// non-empty values; None when it is. The message never shows a value (they are often
/// credentials).
fn bad_headers(v: &str) -> Option<String> {
    let pairs = v.split(',').map(str::trim).filter(|p| !p.is_empty());
    for (n, pair) in pairs.enumerate() {
        let Some((key, value)) = pair.split_once('=') else {
            return Some(format!(
                "entry {} is not key=value (expected comma-separated key=value pairs, \
                 e.g. api-key=KEY,x-tenant=eu)",
                n + 1
            ));
        };
        let key = key.trim();
        if tonic::codegen::http::HeaderName::from_bytes(key.as_bytes()).is_err() {
            return Some(format!(
                "entry {}: `{key}` is not an HTTP header name",
                n + 1
            ));
        }
        if value.trim().is_empty() {
            return Some(format!("entry {}: `{key}` has an empty value", n + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(vars: &[(&str, &str)]) -> Result<(), String> {
        check(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_empty_and_valid_values_pass() {
        assert_eq!(check_with(&[]), Ok(()));
        assert_eq!(check_with(&[("OTEL_TRACES_SAMPLER", "")]), Ok(()));
        for vars in [
            [
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
            [
                ("OTEL_TRACES_SAMPLER", "always_on"),
                ("OTEL_TRACES_SAMPLER_ARG", "ignored"),
            ],
            [
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1"),
            ],
            [
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
            ],
            [
                ("OTEL_BSP_SCHEDULE_DELAY", "500"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
            ],
            [
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%3Db, x-tenant=eu,"),
                ("OTEL_BSP_EXPORT_TIMEOUT", ""),
            ],
        ] {
            assert_eq!(check_with(&vars), Ok(()), "{vars:?}");
        }
    }

    #[test]
    fn each_unusable_value_is_refused_naming_its_variable() {
        for (vars, var, says) in [
            (
                vec![("OTEL_TRACES_SAMPLER", "sometimes")],
                "OTEL_TRACES_SAMPLER",
                "always_on",
            ),
            (
                vec![("OTEL_TRACES_SAMPLER", "xray")],
                "OTEL_TRACES_SAMPLER",
                "not supported",
            ),
            (
                vec![
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
                "from 0 to 1",
            ),
            (
                vec![
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "half"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
                "from 0 to 1",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTLP/gRPC only",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "grpc",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "milliseconds",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1")],
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "non-negative",
            ),
            (
                vec![("OTEL_BSP_SCHEDULE_DELAY", "1.5")],
                "OTEL_BSP_SCHEDULE_DELAY",
                "milliseconds",
            ),
            (
                vec![("OTEL_BSP_EXPORT_TIMEOUT", "soon")],
                "OTEL_BSP_EXPORT_TIMEOUT",
                "milliseconds",
            ),
            (
                vec![("OTEL_BSP_MAX_QUEUE_SIZE", "lots")],
                "OTEL_BSP_MAX_QUEUE_SIZE",
                "a count",
            ),
            (
                vec![("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-5")],
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                "a count",
            ),
            (
                vec![("OTEL_BSP_MAX_CONCURRENT_EXPORTS", "two")],
                "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
                "a count",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "api-key")],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "entry 1 is not key=value",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=1,bad key=secret")],
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "`bad key`",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "a=1,=secret")],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "entry 2",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "api-key=")],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "empty value",
            ),
        ] {
            let err = check_with(&vars).expect_err(var);
            assert!(
                err.starts_with(&format!("invalid value for {var}: ")),
                "{err}"
            );
            assert!(err.contains(says), "{var}: {err}");
            assert!(
                !err.contains("secret"),
                "a header value is never shown: {err}"
            );
        }
    }
}
