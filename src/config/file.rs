//! The file layer: reading the TOML file into a table, and turning the
//! merged table (file plus environment) into a [`Config`].
//!
//! Deserializing is done once, after the environment has been written
//! into the table, so that serde's defaults and `deny_unknown_fields`
//! apply to both layers alike. Its errors are reported against the dotted
//! key path, an unknown key by its own full path (`limits.max_paylod`).

use super::{Config, ConfigError, RateLimits, ServeArgs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file named by `--config`, else by `SWITCHYARD_CONFIG`.
pub(super) fn config_path(args: &ServeArgs, vars: &BTreeMap<String, String>) -> Option<PathBuf> {
    if let Some(path) = &args.config {
        return Some(path.clone());
    }
    // An empty SWITCHYARD_CONFIG counts as unset, as shells make it easy to
    // export one by accident.
    vars.get("SWITCHYARD_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The file's TOML; an unreadable or malformed file is an error on `config`.
pub(super) fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::new("config", format!("{}: {e}", path.display())))
}

/// Deserializes the merged table, turning serde errors into field errors.
pub(super) fn deserialize(mut table: toml::Table) -> Result<Config, ConfigError> {
    fill_window_defaults(&mut table)?;
    table.try_into::<Config>().map_err(|e| de_error(&e))
}

/// `Window` has no serde defaults of its own (each window's default
/// differs), so `rate_limits.connect_per_ip.limit = 5` alone would fail
/// with "missing field `window_ms`". Fill the missing half of every
/// partially given window from [`RateLimits::default`].
fn fill_window_defaults(table: &mut toml::Table) -> Result<(), ConfigError> {
    let Some(given) = table
        .get_mut("rate_limits")
        .and_then(toml::Value::as_table_mut)
    else {
        return Ok(());
    };
    let defaults = toml::Table::try_from(RateLimits::default())
        .map_err(|e| ConfigError::new("rate_limits", format!("cannot encode defaults: {e}")))?;
    for (name, default) in defaults {
        let (Some(window), toml::Value::Table(default)) = (
            given.get_mut(&name).and_then(toml::Value::as_table_mut),
            default,
        ) else {
            continue;
        };
        for (key, value) in default {
            window.entry(key).or_insert(value);
        }
    }
    Ok(())
}

/// Builds a [`ConfigError`] from a toml deserialization error.
///
/// When deserializing from a `Table` (no source text), toml's `Display`
/// ends with a line ``in `a.b` `` naming the key path; that is the only
/// public way to get at it. An unknown field is reported against its
/// parent, so its own name is appended.
fn de_error(err: &toml::de::Error) -> ConfigError {
    let rendered = err.to_string();
    let mut path: Vec<String> = rendered
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|r| r.strip_suffix('`')))
        .map(|p| p.split('.').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut message = err.message().trim().to_owned();
    // serde's message for the untagged `Addr` fallback says nothing useful.
    if message.contains("untagged enum BindMode") {
        message = "expected loopback, lan, tailnet, auto or an IP address".to_owned();
    }
    if let Some(name) = unknown_field_name(&message) {
        path.push(name.to_owned());
    }
    let field = if path.is_empty() {
        "config".to_owned()
    } else {
        path.join(".")
    };
    ConfigError::new(field, message)
}

/// The name in serde's "unknown field `x`, expected …" message.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::config::test_support::*;

    #[test]
    fn config_path_from_env() {
        let path = temp_file("env.toml", "instance_id = \"from-file\"\n");
        let path = path.to_str().unwrap();
        let config = load_env(&[("SWITCHYARD_CONFIG", path)]).unwrap();
        assert_eq!(config.instance_id.as_deref(), Some("from-file"));
    }

    #[test]
    fn missing_file_names_config_and_path() {
        let args = ServeArgs {
            config: Some(PathBuf::from("/nonexistent/switchyard.toml")),
            ..ServeArgs::default()
        };
        let err = load(&args, &env(&[])).unwrap_err();
        assert_eq!(err.field, "config");
        assert!(
            err.message.contains("/nonexistent/switchyard.toml"),
            "{err}"
        );
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let err = load(&with_file("port = \n"), &env(&[])).unwrap_err();
        assert_eq!(err.field, "config");
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn wrong_type_in_file_names_path() {
        let err = load(&with_file("[limits]\nmax_batch = \"lots\"\n"), &env(&[])).unwrap_err();
        assert_eq!(err.field, "limits.max_batch");
    }

    #[test]
    fn channel_rules_from_file() {
        let file =
            "[[channels.rules]]\nprefix = \"team:\"\nsubscribe = \"read\"\npublish = \"admin\"\n";
        let c = load(&with_file(file), &env(&[])).unwrap();
        assert_eq!(c.channels.rules.len(), 1);
        assert_eq!(c.channels.rules[0].prefix, "team:");
        assert!(c.channels.rules[0].access.presence);
        assert_eq!(
            c.channels.rules[0].access.history, 0,
            "no history unless asked"
        );
        let file = "[[channels.rules]]\nprefix = \"log:\"\nsubscribe = \"read\"\npublish = \"write\"\nhistory = 50\n";
        let c = load(&with_file(file), &env(&[])).unwrap();
        assert_eq!(c.channels.rules[0].access.history, 50);
    }

    #[test]
    fn partial_rate_limit_window_in_file() {
        let file = "[rate_limits.http_per_key]\nwindow_ms = 5\n";
        let c = load(&with_file(file), &env(&[])).unwrap();
        assert_eq!(
            c.rate_limits.http_per_key,
            super::super::Window::new(600, 5)
        );
    }
}
