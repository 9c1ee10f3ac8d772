//! Shared by the registry tests: a real OCI registry (Debian's `docker-registry`, the
//! CNCF distribution 2.8 server) on a free loopback port with its own storage dir and an
//! htpasswd (bcrypt) user, killed on drop; pushing an OCI image archive into it through
//! the distribution v2 push API (blob upload POST + PUT, manifest PUT); and the docker
//! `config.json` the agent's `--registry-auth` reads. A missing `docker-registry` is a
//! test failure with the setup hint, never a skip: CI installs it via scripts/setup.sh.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A user of the test registry.
pub const USER: &str = "hypermesh";
pub const PASSWORD: &str = "pull-me-please";

/// A `docker-registry serve` process with htpasswd auth, its storage in a temp dir.
pub struct PrivateRegistry {
    child: Child,
    dir: tempfile::TempDir,
    addr: String,
}

/// What a push stored: the manifest's digest and the layers' digests.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: String,
    pub config: String,
    pub layers: Vec<String>,
}

impl PrivateRegistry {
    /// Starts the registry on `127.0.0.1:0` with user [`USER`] / [`PASSWORD`] and waits
    /// until it answers `/v2/`.
    pub fn start() -> PrivateRegistry {
        let dir = tempfile::Builder::new()
            .prefix("hm-registry-")
            .tempdir()
            .expect("temp dir for the registry");
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n")).expect("htpasswd");
        let storage = dir.path().join("storage");
        let htpasswd = dir.path().join("htpasswd");
        PrivateRegistry::spawn(dir, &storage, &htpasswd, "")
    }

    /// A second registry serving this one's storage and users over https, with a
    /// certificate for 127.0.0.1 signed by a fresh CA; returns it and the CA's PEM file
    /// (what `--registry-ca` takes).
    pub fn https_mirror(&self) -> (PrivateRegistry, PathBuf) {
        let dir = tempfile::Builder::new()
            .prefix("hm-registry-tls-")
            .tempdir()
            .expect("temp dir for the registry");
        let ca = make_certificates(dir.path());
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display()
        );
        let storage = self.dir.path().join("storage");
        let htpasswd = self.dir.path().join("htpasswd");
        (PrivateRegistry::spawn(dir, &storage, &htpasswd, &tls), ca)
    }

    /// Writes the config into `dir` and starts `docker-registry serve` on it; `tls` is
    /// YAML added under `http:`.
    fn spawn(
        dir: tempfile::TempDir,
        storage: &Path,
        htpasswd: &Path,
        tls: &str,
    ) -> PrivateRegistry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} not found: the registry tests need the Debian package \
             `docker-registry`; run scripts/setup.sh"
        );
        let config = format!(
            "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
{tls}auth:
  htpasswd:
    realm: hypermesh-test
    path: {htpasswd}
",
            root = storage.display(),
            htpasswd = htpasswd.display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut registry = PrivateRegistry {
            child,
            dir,
            addr: String::new(),
        };
        registry.addr = registry.wait_listening(!tls.is_empty());
        registry
    }

    /// Reads the bound address from the log ("listening on 127.0.0.1:PORT"), then waits
    /// until `/v2/` answers (over TLS: until it accepts connections).
    fn wait_listening(&mut self, tls: bool) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", self.log());
            }
            let log = self.log();
            let addr = log.lines().find_map(|line| {
                let rest = line.split("listening on ").nth(1)?;
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                addr.starts_with("127.0.0.1:").then_some(addr)
            });
            let answers = |addr: &str| {
                if tls {
                    TcpStream::connect(addr).is_ok()
                } else {
                    request(addr, "GET", "/v2/", &[], &[]).is_ok()
                }
            };
            if let Some(addr) = addr
                && answers(&addr)
            {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start within {START_TIMEOUT:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`: the registry part of image references.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Writes a docker `config.json` with `user`/`password` for this registry (the
    /// `auth` field, base64 of `user:password`) and returns its path.
    pub fn auth_file(&self, user: &str, password: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("config-{user}-{}.json", password.len()));
        let auth = base64(format!("{user}:{password}").as_bytes());
        let json = serde_json::json!({"auths": {self.host(): {"auth": auth}}});
        std::fs::write(&path, json.to_string()).expect("auth file");
        path
    }

    /// Pushes the (single-image) OCI archive at `archive` as `repository:tag`.
    pub fn push(&self, archive: &Path, repository: &str, tag: &str) -> Pushed {
        let layout = tempfile::tempdir().expect("temp dir");
        let status = Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(layout.path())
            .status()
            .expect("running tar");
        assert!(status.success(), "unpacking {}", archive.display());
        let blob = |digest: &str| -> Vec<u8> {
            let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
            std::fs::read(layout.path().join("blobs/sha256").join(hex)).expect("blob in layout")
        };
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(layout.path().join("index.json")).expect("index"),
        )
        .expect("index.json");
        let entry = &index["manifests"][0];
        let manifest_digest = entry["digest"]
            .as_str()
            .expect("manifest digest")
            .to_string();
        let media_type = entry["mediaType"].as_str().expect("media type").to_string();
        let manifest_bytes = blob(&manifest_digest);
        let manifest: serde_json::Value =
            serde_json::from_slice(&manifest_bytes).expect("manifest json");
        let config = manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_string();
        let layers: Vec<String> = manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("layer digest").to_string())
            .collect();
        for digest in layers.iter().chain([&config]) {
            self.push_blob(repository, digest, &blob(digest));
        }
        let response = self.call(
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[("Content-Type", &media_type)],
            &manifest_bytes,
        );
        assert_eq!(
            response.status,
            201,
            "manifest PUT: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(
            response.header("docker-content-digest"),
            Some(manifest_digest.as_str())
        );
        Pushed {
            manifest: manifest_digest,
            config,
            layers,
        }
    }

    /// One blob: POST starts an upload session, PUT to its Location with `?digest=`
    /// sends the whole blob (a monolithic upload).
    fn push_blob(&self, repository: &str, digest: &str, data: &[u8]) {
        let started = self.call(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            &[],
        );
        assert_eq!(started.status, 202, "upload POST for {digest}");
        let location = started.header("location").expect("upload Location");
        // Absolute (http://host/…) or a path.
        let path = match location.find("/v2/") {
            Some(i) => location[i..].to_string(),
            None => panic!("unexpected upload location {location}"),
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let done = self.call(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(
            done.status,
            201,
            "blob PUT for {digest}: {}",
            String::from_utf8_lossy(&done.body)
        );
    }

    /// A request with this registry's credentials.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let auth = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
        let mut all: Vec<(&str, &str)> = vec![("Authorization", &auth)];
        all.extend_from_slice(headers);
        request(&self.addr, method, path, &all, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Flips one byte in the middle of blob `digest` as stored (same size, other
    /// digest); returns the original bytes for [`PrivateRegistry::restore_blob`].
    pub fn tamper_blob(&self, digest: &str) -> Vec<u8> {
        let path = self.blob_path(digest);
        let original = std::fs::read(&path).expect("stored blob");
        let mut tampered = original.clone();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0xff;
        std::fs::write(&path, tampered).expect("tampering blob");
        original
    }

    /// Puts back the bytes [`PrivateRegistry::tamper_blob`] returned.
    pub fn restore_blob(&self, digest: &str, original: &[u8]) {
        std::fs::write(self.blob_path(digest), original).expect("restoring blob");
    }
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`server.pem`,
/// `server.key`), made with the openssl command; returns the CA's path.
fn make_certificates(dir: &Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &[
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=hypermesh test CA",
            ][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions file");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    dir.join("ca.pem")
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
pub struct Reply {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the response
/// body runs to the end of the stream unless it has a Content-Length).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            if method != "HEAD" {
                reader.read_exact(&mut body)?;
            }
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
