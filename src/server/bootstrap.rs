//! Start-up decisions that come before serving: what to do when no
//! authentication is configured, and the errors that stop a start.

use crate::config::{AuthMode, Config, ConfigError, StaticCredential};
use std::path::{Path, PathBuf};

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("authentication setup: {0}")]
    Auth(String),
    #[error("backend: {0}")]
    Backend(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Make sure some authentication is in force. When nothing is configured
/// the gateway never falls back to open mode: on a loopback bind it
/// generates a random admin token, to be written (once the port is bound)
/// to a file only the current user can read (its path is logged, the token
/// is not); anywhere else it refuses to start.
pub fn prepare_auth(mut config: Config) -> Result<(Config, Option<DevToken>), ConfigError> {
    if !config.effective_auth_modes().is_empty() {
        return Ok((config, None));
    }
    if !config.is_loopback() {
        return Err(ConfigError::new(
            "auth.modes",
            "no authentication configured; set SWITCHYARD_JWT_SECRET, SWITCHYARD_API_KEYS, \
             SWITCHYARD_PASSWORD or auth.tokens before listening beyond loopback",
        ));
    }
    let path = config
        .auth
        .dev_token_file
        .clone()
        .unwrap_or_else(|| default_dev_token_path(config.port));
    let token = format!("sy_dev_{}", uuid::Uuid::new_v4().simple());
    config.auth.tokens.push(StaticCredential {
        secret: token.clone(),
        sub: "dev".into(),
        role: "operator".into(),
        scopes: vec!["operator.admin".into()],
        channels: Vec::new(),
    });
    config.auth.modes = vec![AuthMode::Token];
    Ok((config, Some(DevToken { path, token })))
}

/// The development admin token of a loopback gateway without configured
/// authentication, and the file it goes to. The file is written only once
/// the port is bound (a second gateway started on a busy port must not
/// replace the running one's token) and removed at shutdown.
pub struct DevToken {
    path: PathBuf,
    token: String,
}

impl DevToken {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write the token file.
    pub fn write(&self) -> Result<(), ConfigError> {
        write_private(&self.path, &self.token).map_err(|e| {
            ConfigError::new(
                "auth.dev_token_file",
                format!("{}: {e}", self.path.display()),
            )
        })?;
        tracing::warn!(
            path = %self.path.display(),
            "no authentication configured: generated a development admin token (loopback only)"
        );
        Ok(())
    }

    /// Remove the token file, if it still holds this token.
    pub fn remove(&self) {
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == self.token);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "removing the development token failed");
        }
    }
}

/// Where the development token of an instance on `port` is written.
pub fn default_dev_token_path(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("switchyard-{port}.token"))
}

/// Write `content` so that only the current user can read it, without
/// trusting whatever is at `path` already: a fresh file (random name,
/// `create_new`, mode 0600) in the same directory is renamed over the
/// target. A planted symlink is replaced, not followed, and a file of
/// another user in a sticky directory (`/tmp`) makes the rename fail.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".switchyard-token-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = options
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(content.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}
