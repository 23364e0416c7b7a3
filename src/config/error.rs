//! The one shape of "this variable is wrong, because": `SettingError` names the
//! variable, says why in words an operator can act on, and keeps the error it came
//! from. Configuration checks, TLS files, client creation and listener binds all
//! report through it.
use std::{error::Error, fmt};

/// A setting that cannot work.
#[derive(Debug)]
pub struct SettingError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// Why, for the operator.
    pub message: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl SettingError {
    /// `var` is wrong because of `message`.
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
            source: None,
        }
    }

    /// `var` is wrong because of `source`, described by `message`.
    pub fn caused(
        var: &'static str,
        message: impl Into<String>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            var,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for {}: {}", self.var, self.message)
    }
}

impl Error for SettingError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
