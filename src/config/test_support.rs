//! Helpers shared by the unit tests of every config module: temporary
//! files, an environment from pairs, and loading through [`load`].

use super::{Config, ConfigError, ServeArgs, load};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique file under the temp dir holding `contents`.
pub(super) fn temp_file(name: &str, contents: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let path =
        std::env::temp_dir().join(format!("switchyard-load-{}-{n}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

pub(super) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn load_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load(&ServeArgs::default(), &env(pairs))
}

pub(super) fn with_file(toml: &str) -> ServeArgs {
    ServeArgs {
        config: Some(temp_file("config.toml", toml)),
        ..ServeArgs::default()
    }
}

pub(super) fn secret(c: char) -> String {
    std::iter::repeat_n(c, 20).collect()
}

/// Validates a default config after `edit`, returning the failing field.
pub(super) fn invalid_field(edit: impl FnOnce(&mut Config)) -> String {
    let mut config = Config::default();
    edit(&mut config);
    config.validate().unwrap_err().field
}
