//! A real OCI registry for push and pull tests (Debian's `docker-registry`, the CNCF
//! distribution registry) on a free loopback port with temp storage, and a TCP proxy that
//! can slow it down or cut its connections, to interrupt transfers at a chosen point.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

const CONFIG: &str = "../../shared/registry/registry-config.yml";
const CONFIG_HTPASSWD: &str = "../../shared/registry/registry-config-htpasswd.yml";

/// A running `docker-registry serve`; killed on drop.
pub struct TestRegistry {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Temp dir holding the storage (`data/`) and the htpasswd file.
    pub dir: tempfile::TempDir,
    htpasswd: bool,
    /// Token auth: the realm and the certificate bundle the tokens are checked against.
    token: Option<(String, PathBuf)>,
    log: PathBuf,
}

/// A free port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl TestRegistry {
    /// An anonymous registry.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A registry that requires HTTP Basic auth as `user` / `password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user, password)))
    }

    /// A registry that takes only Bearer tokens issued by `issuer` (the Docker token flow).
    pub fn start_with_token_auth(issuer: &TokenServer) -> Self {
        let mut registry = Self {
            child: None,
            port: free_port(),
            log: PathBuf::new(),
            dir: tempfile::tempdir().unwrap(),
            htpasswd: false,
            token: Some((issuer.realm(), issuer.certificate.clone())),
        };
        registry.log = registry.dir.path().join("registry.log");
        registry.spawn();
        registry
    }

    fn launch(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbc", dir.path().join("htpasswd").to_str().unwrap(), user, password])
                .output()
                .expect("htpasswd (apache2-utils) is installed by scripts/test");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut registry = Self {
            child: None,
            port: free_port(),
            log: dir.path().join("registry.log"),
            dir,
            htpasswd: auth.is_some(),
            token: None,
        };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(if self.htpasswd { CONFIG_HTPASSWD } else { CONFIG });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(config)
            .env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                self.dir.path().join("data"),
            )
            .env("REGISTRY_HTTP_ADDR", self.authority())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.htpasswd {
            command.env("REGISTRY_AUTH_HTPASSWD_PATH", self.dir.path().join("htpasswd"));
        }
        if let Some((realm, bundle)) = &self.token {
            command
                .env("REGISTRY_AUTH", "token")
                .env("REGISTRY_AUTH_TOKEN_REALM", realm)
                .env("REGISTRY_AUTH_TOKEN_SERVICE", TOKEN_SERVICE)
                .env("REGISTRY_AUTH_TOKEN_ISSUER", TOKEN_ISSUER)
                .env("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE", bundle);
        }
        crate::die_with_parent(&mut command);
        self.child =
            Some(crate::spawn_from_lasting_thread(command).expect("docker-registry is installed by scripts/test"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = reqwest::blocking::get(format!("http://{}/v2/", self.authority()))
                .map(|r| matches!(r.status().as_u16(), 200 | 401))
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the registry did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILLs the registry.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(self.authority()).is_err() {
            assert!(Instant::now() < deadline, "port {} stays busy", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn();
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join("data/docker/registry/v2")
    }

    /// Where the registry keeps the bytes of `digest` (`sha256:<hex>`).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage().join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// Publishes `manifest` bytes as `repository:tag` by writing them into the registry's
    /// storage, as a rogue or broken registry would serve them: the registry checks
    /// manifests on upload, not when it serves them.
    pub fn plant_manifest(&self, repository: &str, tag: &str, manifest: &[u8]) {
        let hex = hex_sha256(manifest);
        let data = self.blob_data(&hex);
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        std::fs::write(&data, manifest).unwrap();
        let manifests = self.storage().join(format!("repositories/{repository}/_manifests"));
        for dir in [
            manifests.join(format!("revisions/sha256/{hex}")),
            manifests.join(format!("tags/{tag}/current")),
            manifests.join(format!("tags/{tag}/index/sha256/{hex}")),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("link"), format!("sha256:{hex}")).unwrap();
        }
    }

    /// Publishes a small blob by writing it into storage and linking it into `repository`.
    pub fn plant_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let hex = hex_sha256(bytes);
        let data = self.blob_data(&hex);
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        std::fs::write(&data, bytes).unwrap();
        let link = self
            .storage()
            .join(format!("repositories/{repository}/_layers/sha256/{hex}"));
        std::fs::create_dir_all(&link).unwrap();
        std::fs::write(link.join("link"), format!("sha256:{hex}")).unwrap();
        format!("sha256:{hex}")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `service` a token is for.
const TOKEN_SERVICE: &str = "herd-test-registry";
/// Who issues the tokens.
const TOKEN_ISSUER: &str = "herd-test-token-issuer";

/// A Docker token server (the `realm` of a Bearer challenge): checks a user's Basic
/// credentials and answers an RS256 JWT granting the scope asked for, less the actions the
/// user may not have. Its certificate (made by `openssl`) is the registry's trust bundle.
pub struct TokenServer {
    port: u16,
    /// Holds the key and the certificate.
    _dir: tempfile::TempDir,
    /// The certificate the registry trusts.
    pub certificate: PathBuf,
    requests: Arc<AtomicU64>,
}

impl TokenServer {
    /// Starts a token server; `users` are (name, password, actions granted).
    pub fn start(users: &[(&str, &str, &[&str])]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (key, certificate) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=herd-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate)
            .output()
            .expect("openssl is installed");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "der", "-in"])
            .arg(&certificate)
            .output()
            .unwrap()
            .stdout;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let users: Vec<(String, Vec<String>)> = users
            .iter()
            .map(|(user, password, actions)| {
                (
                    base64_standard(format!("{user}:{password}").as_bytes()),
                    actions.iter().map(|a| a.to_string()).collect(),
                )
            })
            .collect();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let x5c = base64_standard(&der);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = answer_token_request(stream, &users, &x5c, &key);
            }
        });
        Self {
            port,
            _dir: dir,
            certificate,
            requests,
        }
    }

    /// `http://127.0.0.1:<port>/token`.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// How many requests it has answered.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers one `GET /token?service=..&scope=..` with a token, or 401 for unknown credentials.
fn answer_token_request(
    mut stream: TcpStream,
    users: &[(String, Vec<String>)],
    x5c: &str,
    key: &Path,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let target = text.split_whitespace().nth(1).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let basic = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Authorization: Basic ")
                .or_else(|| l.strip_prefix("authorization: Basic "))
        })
        .map(str::trim);
    let Some((_, allowed)) = users
        .iter()
        .find(|(credentials, _)| Some(credentials.as_str()) == basic)
    else {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        let reply = format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        return stream.write_all(reply.as_bytes());
    };
    let user = basic
        .and_then(base64_decode_standard)
        .and_then(|d| String::from_utf8(d).ok())
        .and_then(|d| d.split(':').next().map(String::from))
        .unwrap_or_default();
    let mut access = Vec::new();
    for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
        if name != "scope" {
            continue;
        }
        let scope = percent_decode(value);
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(repository), Some(actions)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let granted: Vec<&str> = actions.split(',').filter(|a| allowed.iter().any(|x| x == a)).collect();
        access.push(serde_json::json!({ "type": kind, "name": repository, "actions": granted }));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [x5c] });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE, "exp": now + 300, "nbf": now - 10,
        "iat": now, "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64_url(header.to_string().as_bytes()),
        base64_url(claims.to_string().as_bytes())
    );
    let mut signer = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    signer.stdin.take().unwrap().write_all(signing_input.as_bytes())?;
    let signature = signer.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", base64_url(&signature));
    let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string();
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes())
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode_standard(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `%XX` escapes and `+` of a query value decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// sha256 of `bytes` as 64 hex digits.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex_of(Sha256::digest(bytes).as_slice())
}

/// sha256 of a file as `sha256:<hex>`.
pub fn file_digest(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    format!("sha256:{}", hex_of(hasher.finalize().as_slice()))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP proxy in front of a server: counts the bytes it sends back, can limit their rate,
/// and can cut every open connection (a registry that dies or drops clients mid-transfer).
pub struct FaultProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    downstream_bytes: Arc<AtomicU64>,
    heavy_connections: Arc<HeavyConnections>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

/// A connection that has sent back this much carries blob bytes, not a manifest or a config.
const HEAVY: u64 = 4 << 20;

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`) passing at most `bytes_per_second` back to clients,
    /// all connections together.
    pub fn start(upstream: &str, bytes_per_second: u64) -> Self {
        Self::start_limited(upstream, bytes_per_second, false)
    }

    /// A proxy to `upstream` passing at most `bytes_per_second` back on each connection, as
    /// a far registry does: more connections fetch faster.
    pub fn start_per_connection(upstream: &str, bytes_per_second: u64) -> Self {
        Self::start_limited(upstream, bytes_per_second, true)
    }

    fn start_limited(upstream: &str, bytes_per_second: u64, per_connection: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let downstream_bytes = Arc::new(AtomicU64::new(0));
        let heavy_connections = Arc::new(HeavyConnections::default());
        let connections = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let shared_budget = Arc::new(Mutex::new(Instant::now()));
        {
            let (upstream, counter, heavy, connections, stop) = (
                upstream.to_string(),
                downstream_bytes.clone(),
                heavy_connections.clone(),
                connections.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    {
                        let mut open = connections.lock().unwrap();
                        open.push(client.try_clone().unwrap());
                        open.push(server.try_clone().unwrap());
                    }
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || pipe(c2, s2, None));
                    let budget = Budget {
                        counter: counter.clone(),
                        heavy: heavy.clone(),
                        next_free: match per_connection {
                            true => Arc::new(Mutex::new(Instant::now())),
                            false => shared_budget.clone(),
                        },
                        rate: bytes_per_second,
                    };
                    std::thread::spawn(move || pipe(server, client, Some(budget)));
                }
            });
        }
        Self {
            port,
            downstream_bytes,
            heavy_connections,
            connections,
            stop,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Bytes sent back to clients so far.
    pub fn bytes_served(&self) -> u64 {
        self.downstream_bytes.load(Ordering::Relaxed)
    }

    /// The most connections that were open at once after each sent back more than a few MB
    /// (blob bytes).
    pub fn peak_heavy_connections(&self) -> u64 {
        self.heavy_connections.peak.load(Ordering::Relaxed)
    }

    /// Cuts every open connection.
    pub fn cut_connections(&self) {
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut_connections();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Open connections that sent back more than [`HEAVY`], now and at most.
#[derive(Default)]
struct HeavyConnections {
    open: AtomicU64,
    peak: AtomicU64,
}

/// What a limited direction of the proxy counts, and its rate.
struct Budget {
    /// Bytes sent back, every connection together.
    counter: Arc<AtomicU64>,
    heavy: Arc<HeavyConnections>,
    /// When the link (this connection's or the shared one) is next free.
    next_free: Arc<Mutex<Instant>>,
    rate: u64,
}

/// Copies `from` to `to`; with a budget, counts the bytes and keeps them under the rate.
fn pipe(mut from: TcpStream, mut to: TcpStream, budget: Option<Budget>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(budget) = &budget {
            // No credit for idle time: a pause never turns into a burst that fills the
            // sockets' buffers.
            let wait = {
                let mut next_free = budget.next_free.lock().unwrap();
                let start = next_free.max(Instant::now());
                *next_free = start + Duration::from_secs_f64(n as f64 / budget.rate as f64);
                start.saturating_duration_since(Instant::now())
            };
            std::thread::sleep(wait);
            budget.counter.fetch_add(n as u64, Ordering::Relaxed);
            if sent < HEAVY && sent + n as u64 >= HEAVY {
                let open = budget.heavy.open.fetch_add(1, Ordering::Relaxed) + 1;
                budget.heavy.peak.fetch_max(open, Ordering::Relaxed);
            }
            sent += n as u64;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if let Some(budget) = budget.filter(|_| sent >= HEAVY) {
        budget.heavy.open.fetch_sub(1, Ordering::Relaxed);
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A real nginx (Debian's) in the foreground with the given `server { ... }` blocks, as a
/// registry front that answers 307 to another host, a rogue registry, or a capture server.
/// `{dir}` in the blocks is its temp dir; `log_format auth` records each request's
/// `Authorization` header.
pub struct TestNginx {
    child: Child,
    /// Its temp dir (config, logs, files it serves).
    pub dir: tempfile::TempDir,
}

impl TestNginx {
    /// Starts nginx; `prepare` may write files into the dir first.
    pub fn start(servers: &str, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let d = dir.path().display().to_string();
        let user = if nix::unistd::Uid::effective().is_root() {
            "user root root;"
        } else {
            ""
        };
        let config = format!(
            "{user}\ndaemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  log_format auth '$request $status auth=\"$http_authorization\"';\n  access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
               uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n  client_max_body_size 0;\n{}\n}}\n",
            servers.replace("{dir}", &d)
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let mut command = Command::new("nginx");
        command
            .args([
                "-p",
                &d,
                "-c",
                &format!("{d}/nginx.conf"),
                "-e",
                &format!("{d}/error.log"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::die_with_parent(&mut command);
        let mut child = crate::spawn_from_lasting_thread(command).expect("nginx is installed by scripts/test");
        // Ready when every `listen` port accepts.
        let ports: Vec<u16> = servers
            .split("listen 127.0.0.1:")
            .skip(1)
            .filter_map(|rest| rest.split(';').next()?.trim().parse().ok())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ports.iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited ({status}): {}",
                    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, dir }
    }

    /// The contents of a log file in its dir (empty if it was never written).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
