//! Where the apiserver is: `--server`, then `HYPERMESH_SERVER`, then the config file
//! `$HOME/.hypermesh/config.yaml`, then the local default; and `hmctl config`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The apiserver hmctl uses when nothing else says otherwise (what `make up` starts).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7443";

/// The environment variable naming the apiserver.
pub const SERVER_ENV: &str = "HYPERMESH_SERVER";

/// The contents of `~/.hypermesh/config.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Apiserver URL, e.g. `http://127.0.0.1:7443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// Where the server address came from, for `hmctl config view`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSource {
    /// `--server`.
    Flag,
    /// `HYPERMESH_SERVER`.
    Env,
    /// The config file at this path.
    File(PathBuf),
    /// [`DEFAULT_SERVER`].
    Default,
}

impl std::fmt::Display for ServerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerSource::Flag => f.write_str("--server"),
            ServerSource::Env => write!(f, "${SERVER_ENV}"),
            ServerSource::File(path) => write!(f, "{}", path.display()),
            ServerSource::Default => f.write_str("built-in default"),
        }
    }
}

/// `$HOME/.hypermesh/config.yaml`, or `None` when `HOME` is not set.
pub fn config_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".hypermesh").join("config.yaml"))
}

/// Reads the config file; a missing file is an empty config.
pub fn load(path: &Path) -> Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_saphyr::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Writes the config file, creating its directory.
pub fn save(path: &Path, config: &ConfigFile) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_saphyr::to_string(config).context("cannot encode the config")?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Checks that `url` is something hmctl can connect to.
pub fn check_server_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => bail!("invalid server URL {url:?}: use http://HOST:PORT (or https://HOST:PORT)"),
    }
}

/// Picks the server address by precedence: flag, environment, config file, default.
pub fn resolve_server(flag: Option<&str>) -> Result<(String, ServerSource)> {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return Ok((url.to_string(), ServerSource::Flag));
    }
    if let Some(url) = std::env::var(SERVER_ENV).ok().filter(|u| !u.is_empty()) {
        return Ok((url, ServerSource::Env));
    }
    if let Some(path) = config_path()
        && let Some(url) = load(&path)?.server.filter(|u| !u.is_empty())
    {
        return Ok((url, ServerSource::File(path)));
    }
    Ok((DEFAULT_SERVER.to_string(), ServerSource::Default))
}

/// `hmctl config view`.
pub fn view(flag: Option<&str>) -> Result<String> {
    let mut out = String::new();
    match config_path() {
        Some(path) => {
            let config = load(&path)?;
            out.push_str(&format!("# {}\n", path.display()));
            if config == ConfigFile::default() {
                out.push_str("# (empty or missing)\n");
            } else {
                out.push_str(&serde_saphyr::to_string(&config).context("cannot encode config")?);
            }
        }
        None => out.push_str("# HOME is not set: no config file\n"),
    }
    let (server, source) = resolve_server(flag)?;
    out.push_str(&format!("# effective server: {server} (from {source})\n"));
    Ok(out)
}

/// `hmctl config set-server URL`; returns the file written.
pub fn set_server(url: &str) -> Result<PathBuf> {
    check_server_url(url)?;
    let Some(path) = config_path() else {
        bail!("HOME is not set: cannot locate ~/.hypermesh/config.yaml");
    };
    let mut config = load(&path)?;
    config.server = Some(url.to_string());
    save(&path, &config)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips() {
        let dir = std::env::temp_dir().join(format!("hmctl-config-test-{}", std::process::id()));
        let path = dir.join("config.yaml");
        let config = ConfigFile {
            server: Some("http://10.0.0.5:7443".into()),
        };
        save(&path, &config).unwrap();
        assert_eq!(load(&path).unwrap(), config);
        std::fs::write(&path, "sever: http://typo\n").unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("sever"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(load(&path).unwrap(), ConfigFile::default());
    }

    #[test]
    fn server_urls_are_checked() {
        assert!(check_server_url("http://127.0.0.1:7443").is_ok());
        assert!(check_server_url("https://cp.example:7443").is_ok());
        assert!(check_server_url("127.0.0.1:7443").is_err());
        assert!(check_server_url("http://").is_err());
    }
}
