//! Where the apiserver is and who hmctl is to it.
//!
//! The config file (the format every HyperMesh client reads, see
//! [`hypermesh_trust::client_config`]) is `--config FILE`, else `$HYPERMESH_CONFIG`,
//! else `$HOME/.hypermesh/config.yaml`. It names the server and the TLS identity
//! (CA, client certificate and key). The server URL is `--server`, else
//! `$HYPERMESH_SERVER`, else the file's `server:`, else the local default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use hypermesh_trust::client_config::ClientConfigFile;

/// The apiserver hmctl uses when nothing else says otherwise.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7443";

/// The environment variable naming the apiserver.
pub const SERVER_ENV: &str = "HYPERMESH_SERVER";

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "HYPERMESH_CONFIG";

/// Where a setting came from, for `hmctl config view`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// The config file at this path.
    File(PathBuf),
    /// The built-in default.
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "${name}"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Default => f.write_str("built-in default"),
        }
    }
}

/// `$HOME/.hypermesh/config.yaml`, or `None` when `HOME` is not set.
pub fn default_config_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".hypermesh").join("config.yaml"))
}

/// The config file to use and where that choice came from.
pub fn config_path(flag: Option<&Path>) -> Option<(PathBuf, Source)> {
    if let Some(path) = flag {
        return Some((path.to_path_buf(), Source::Flag));
    }
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), Source::Env(CONFIG_ENV)));
    }
    default_config_path().map(|p| {
        let source = Source::File(p.clone());
        (p, source)
    })
}

/// What hmctl connects with.
#[derive(Clone)]
pub struct Resolved {
    /// The server URL.
    pub server: String,
    /// Where the URL came from.
    pub server_source: Source,
    /// The config file read (if any).
    pub config_path: Option<PathBuf>,
    /// The TLS configuration, when the config file has one.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The cluster CA certificate (PEM), when the config file names one.
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("server", &self.server)
            .field("config_path", &self.config_path)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Reads the config file (a missing default file is an empty config; a missing file
/// named by flag or environment is an error).
fn load(path: &Path, source: &Source) -> Result<ClientConfigFile> {
    if !path.exists() && *source != Source::File(path.to_path_buf()) {
        bail!(
            "config file {} ({source}) does not exist; an admin creates one with `hmctl user create NAME --role viewer > NAME.config`",
            path.display()
        );
    }
    Ok(ClientConfigFile::load(path)?)
}

/// Resolves server and identity from flags, environment and the config file.
pub fn resolve(server_flag: Option<&str>, config_flag: Option<&Path>) -> Result<Resolved> {
    let chosen = config_path(config_flag);
    let file = match &chosen {
        Some((path, source)) => load(path, source)?,
        None => ClientConfigFile::default(),
    };
    let (server, server_source) = if let Some(url) = server_flag.filter(|u| !u.is_empty()) {
        (url.to_string(), Source::Flag)
    } else if let Some(url) = std::env::var(SERVER_ENV).ok().filter(|u| !u.is_empty()) {
        (url, Source::Env(SERVER_ENV))
    } else if let (Some(url), Some((path, _))) = (file.server.clone(), &chosen) {
        (url, Source::File(path.clone()))
    } else {
        (DEFAULT_SERVER.to_string(), Source::Default)
    };
    check_server_url(&server)?;
    let (tls, ca_pem) = match &chosen {
        Some((path, _)) => (
            file.tls_config(path)
                .with_context(|| format!("reading the TLS settings of {}", path.display()))?,
            file.ca_pem(path)?,
        ),
        None => (None, None),
    };
    Ok(Resolved {
        server,
        server_source,
        config_path: chosen.map(|(p, _)| p),
        tls,
        ca_pem,
    })
}

/// Checks that `url` is something hmctl can connect to.
pub fn check_server_url(urls: &str) -> Result<()> {
    for url in urls.split(',').map(str::trim) {
        check_one_url(url)?;
    }
    Ok(())
}

fn check_one_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => bail!(
            "invalid server URL {url:?}: use https://HOST:PORT (or http://HOST:PORT for an --insecure-dev server)"
        ),
    }
}

/// `hmctl config view`: the file (keys elided) and the effective settings.
pub fn view(server_flag: Option<&str>, config_flag: Option<&Path>) -> Result<String> {
    let mut out = String::new();
    match config_path(config_flag) {
        Some((path, source)) => {
            let mut config = load(&path, &source)?;
            out.push_str(&format!("# {} (from {source})\n", path.display()));
            if config == ClientConfigFile::default() {
                out.push_str("# (empty or missing)\n");
            } else {
                let elide = |v: &mut Option<String>, what: &str| {
                    if v.as_deref().is_some_and(|s| s.contains("-----BEGIN")) {
                        *v = Some(format!("<{what}, inline PEM>"));
                    }
                };
                elide(&mut config.certificate_authority, "CA certificate");
                elide(&mut config.client_certificate, "client certificate");
                elide(&mut config.client_key, "private key");
                out.push_str(&serde_saphyr::to_string(&config).context("cannot encode config")?);
            }
        }
        None => out.push_str("# HOME is not set and no --config given: no config file\n"),
    }
    let resolved = resolve(server_flag, config_flag)?;
    out.push_str(&format!(
        "# effective server: {} (from {})\n# TLS identity: {}\n",
        resolved.server,
        resolved.server_source,
        if resolved.tls.is_some() {
            "from the config file"
        } else {
            "none (plaintext, for --insecure-dev servers)"
        }
    ));
    Ok(out)
}

/// `hmctl config set-server URL`; returns the file written.
pub fn set_server(url: &str, config_flag: Option<&Path>) -> Result<PathBuf> {
    check_server_url(url)?;
    let Some((path, _)) = config_path(config_flag) else {
        bail!("HOME is not set: cannot locate ~/.hypermesh/config.yaml (use --config FILE)");
    };
    let mut config = ClientConfigFile::load(&path)?;
    config.server = Some(url.to_string());
    config.save(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked() {
        assert!(check_server_url("http://127.0.0.1:7443").is_ok());
        assert!(check_server_url("https://cp.example:7443").is_ok());
        assert!(check_server_url("127.0.0.1:7443").is_err());
        assert!(check_server_url("http://").is_err());
    }
}
