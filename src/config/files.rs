//! Secrets read from files: for each secret-bearing variable `X` in [`SECRET_FILES`],
//! `X_FILE` names a file whose contents are the value (the Kubernetes and Docker
//! convention for mounted secrets, and no secret in the process list or the
//! environment's listing). Trailing line breaks are not part of the value. Setting
//! both `X_FILE` and `X` (or its flag), or an `X_FILE` that cannot be read as UTF-8
//! text, stops start-up naming `X_FILE` (exit 2).
use std::{ffi::OsString, path::Path};

use super::SettingError;

/// The variables that may be given as files, with their flags.
pub const SECRET_FILES: [(&str, &str); 7] = [
    ("ADMIN_TOKEN", "--admin-token"),
    ("PRODUCER_TOKEN", "--producer-token"),
    ("MONGODB_URL", "--mongodb-url"),
    ("KAFKA_SASL_PASSWORD", "--kafka-sasl-password"),
    ("KAFKA_PROPERTIES", "--kafka-properties"),
    ("SCHEMA_REGISTRY_URL", "--schema-registry-url"),
    ("SCHEMA_REGISTRY_PASSWORD", "--schema-registry-password"),
];

/// The `X_FILE` variable of `X`, as a static name for the error.
fn file_var(var: &str) -> &'static str {
    match var {
        "ADMIN_TOKEN" => "ADMIN_TOKEN_FILE",
        "PRODUCER_TOKEN" => "PRODUCER_TOKEN_FILE",
        "MONGODB_URL" => "MONGODB_URL_FILE",
        "KAFKA_SASL_PASSWORD" => "KAFKA_SASL_PASSWORD_FILE",
        "KAFKA_PROPERTIES" => "KAFKA_PROPERTIES_FILE",
        "SCHEMA_REGISTRY_URL" => "SCHEMA_REGISTRY_URL_FILE",
        _ => "SCHEMA_REGISTRY_PASSWORD_FILE",
    }
}

/// The values the `*_FILE` variables give, as (variable, value) pairs to set before
/// the configuration is parsed. `env` reads a variable, `args` are the command line's.
pub fn from_files(
    env: impl Fn(&str) -> Option<OsString>,
    args: &[OsString],
) -> Result<Vec<(&'static str, String)>, SettingError> {
    let mut values = Vec::new();
    for (var, flag) in SECRET_FILES {
        let file = file_var(var);
        let Some(path) = env(file) else { continue };
        let flagged = args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == flag || a.starts_with(&format!("{flag}="))
        });
        if env(var).is_some() || flagged {
            return Err(SettingError::new(
                file,
                format!("{var} (or {flag}) is set too: give the value one way"),
            ));
        }
        let path = Path::new(&path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            SettingError::caused(file, format!("cannot read {}: {e}", path.display()), e)
        })?;
        values.push((var, text.trim_end_matches(['\r', '\n']).to_string()));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_file_gives_the_value_without_its_line_break() {
        let dir = std::env::temp_dir().join(format!("files-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "a-token-of-some-length\n").unwrap();
        let url = dir.join("url");
        std::fs::write(&url, "mongodb://u:p@db/\r\n").unwrap();
        let e = env(&[
            ("PRODUCER_TOKEN_FILE", token.display().to_string()),
            ("MONGODB_URL_FILE", url.display().to_string()),
        ]);
        let got = from_files(e, &[]).unwrap();
        assert_eq!(
            got,
            vec![
                ("PRODUCER_TOKEN", "a-token-of-some-length".to_string()),
                ("MONGODB_URL", "mongodb://u:p@db/".to_string()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn both_forms_or_an_unreadable_file_name_the_file_variable() {
        let e = env(&[
            ("ADMIN_TOKEN_FILE", "/nonexistent/token".into()),
            ("ADMIN_TOKEN", "x".into()),
        ]);
        let err = from_files(e, &[]).unwrap_err();
        assert_eq!(err.var, "ADMIN_TOKEN_FILE");
        assert!(err.message.contains("ADMIN_TOKEN"), "{}", err.message);
        let e = env(&[("ADMIN_TOKEN_FILE", "/nonexistent/token".into())]);
        let flag = [OsString::from("--admin-token=abc")];
        assert_eq!(from_files(&e, &flag).unwrap_err().var, "ADMIN_TOKEN_FILE");
        let err = from_files(&e, &[]).unwrap_err();
        assert_eq!(err.var, "ADMIN_TOKEN_FILE");
        assert!(
            err.message.contains("/nonexistent/token"),
            "{}",
            err.message
        );
    }
}
