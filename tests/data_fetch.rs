//! `data fetch` against a local HTTP server on 127.0.0.1 that serves a small
//! real .tar.gz of JPEGs and honours (or ignores) Range requests: a full
//! download, a resumed one, a checksum mismatch, extraction, and the CLI.

mod data_support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emotionet::data::fetch::{self, FetchOptions};
use emotionet::data::{DataError, loaders};
use sha2::{Digest, Sha256};

/// A .tar.gz holding `lfw/<person>/<person>_0001.jpg` for three people.
fn lfw_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for (i, person) in ["Ada_Lovelace", "Alan_Turing", "Grace_Hopper"].iter().enumerate() {
        let jpeg = data_support::jpeg_bytes(40, 40, i as u32);
        let mut header = tar::Header::new_gnu();
        header.set_size(jpeg.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("lfw/{person}/{person}_0001.jpg"), jpeg.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves `body` at `/<name>` for at most `max_requests` connections or 60 s,
/// logging each request's Range header.
struct Server {
    base_url: String,
    ranges: Arc<Mutex<Vec<Option<String>>>>,
}

fn serve(name: &'static str, body: Vec<u8>, honour_ranges: bool, max_requests: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let log = ranges.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            served += 1;
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request).to_string();
            let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
            let range = text.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(|r| r.trim().to_string()));
            log.lock().unwrap().push(range.clone());
            let response = if path != format!("/{name}") {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            } else {
                let start = range.filter(|_| honour_ranges).and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
                match start {
                    Some(s) if s >= body.len() => {
                        format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", body.len())
                            .into_bytes()
                    }
                    Some(s) => {
                        let mut r = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len() - 1,
                            body.len(),
                            body.len() - s
                        )
                        .into_bytes();
                        r.extend_from_slice(&body[s..]);
                        r
                    }
                    None => {
                        let mut r =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                }
            };
            let _ = stream.write_all(&response);
        }
    });
    Server { base_url, ranges }
}

fn options(dest: &std::path::Path, server: &Server, sha256: &str) -> FetchOptions {
    FetchOptions { dest: dest.to_path_buf(), base_url: Some(server.base_url.clone()), sha256: Some(sha256.to_string()), progress: false, extract: true }
}

#[test]
fn a_full_download_is_verified_and_extracted_into_the_lfw_layout() {
    let archive = lfw_archive();
    let server = serve("lfw.tgz", archive.clone(), true, 4);
    let dest = tempfile::tempdir().unwrap();
    let out = fetch::fetch_blocking(&fetch::LFW, &options(dest.path(), &server, &sha(&archive))).unwrap();
    assert_eq!(out.downloaded, archive.len() as u64);
    assert_eq!(out.resumed_from, 0);
    assert_eq!(std::fs::read(&out.archive).unwrap(), archive);
    let lfw = out.extracted_to.unwrap();
    assert_eq!(lfw, dest.path().join("lfw"));
    let catalog = loaders::load_lfw(&lfw).unwrap();
    assert_eq!(catalog.samples.len(), 3);
    assert!(catalog.skipped.is_empty());
    // A second fetch finds the verified archive and downloads nothing.
    let again = fetch::fetch_blocking(&fetch::LFW, &options(dest.path(), &server, &sha(&archive))).unwrap();
    assert_eq!(again.downloaded, 0);
    assert_eq!(server.ranges.lock().unwrap().len(), 1);
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let archive = lfw_archive();
    let server = serve("lfw.tgz", archive.clone(), true, 4);
    let dest = tempfile::tempdir().unwrap();
    let half = archive.len() / 2;
    std::fs::write(dest.path().join("lfw.tgz.part"), &archive[..half]).unwrap();
    let out = fetch::fetch_blocking(&fetch::LFW, &options(dest.path(), &server, &sha(&archive))).unwrap();
    assert_eq!(out.resumed_from, half as u64);
    assert_eq!(out.downloaded, (archive.len() - half) as u64);
    assert_eq!(server.ranges.lock().unwrap().as_slice(), &[Some(format!("{half}-"))]);
    assert_eq!(std::fs::read(&out.archive).unwrap(), archive);
    assert!(!dest.path().join("lfw.tgz.part").exists());
}

#[test]
fn a_server_that_ignores_ranges_gets_a_clean_restart() {
    let archive = lfw_archive();
    let server = serve("lfw.tgz", archive.clone(), false, 4);
    let dest = tempfile::tempdir().unwrap();
    std::fs::write(dest.path().join("lfw.tgz.part"), &archive[..100]).unwrap();
    let out = fetch::fetch_blocking(&fetch::LFW, &options(dest.path(), &server, &sha(&archive))).unwrap();
    assert_eq!(out.resumed_from, 0);
    assert_eq!(std::fs::read(&out.archive).unwrap(), archive);
}

#[test]
fn a_checksum_mismatch_is_an_error_and_the_bad_file_is_dropped() {
    let archive = lfw_archive();
    let server = serve("lfw.tgz", archive.clone(), true, 4);
    let dest = tempfile::tempdir().unwrap();
    let wrong = sha(b"something else");
    let err = fetch::fetch_blocking(&fetch::LFW, &options(dest.path(), &server, &wrong)).unwrap_err();
    let DataError::ChecksumMismatch { expected, actual, .. } = &err else { panic!("{err}") };
    assert_eq!((expected.as_str(), actual.as_str()), (wrong.as_str(), sha(&archive).as_str()));
    assert!(!dest.path().join("lfw.tgz.part").exists() && !dest.path().join("lfw.tgz").exists());
    assert!(!dest.path().join("lfw").exists(), "nothing extracted from an unverified archive");

    // A 404 is a download error naming the URL.
    let err = fetch::fetch_blocking(&fetch::SUN397, &options(dest.path(), &server, &sha(&archive))).unwrap_err();
    assert!(err.to_string().contains("SUN397.tar.gz") && err.to_string().contains("404"), "{err}");
}

#[test]
fn the_cli_fetches_from_a_mirror() {
    let archive = lfw_archive();
    let server = serve("lfw.tgz", archive.clone(), true, 2);
    let dest = tempfile::tempdir().unwrap();
    let o = data_support::emotionet(&[
        "data",
        "fetch",
        "lfw",
        "--dest",
        dest.path().to_str().unwrap(),
        "--base-url",
        &server.base_url,
        "--sha256",
        &sha(&archive),
        "--quiet",
    ]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("sha256 verified") && stdout.contains("extracted to"), "{stdout}");
    assert!(dest.path().join("lfw/Alan_Turing/Alan_Turing_0001.jpg").is_file());
}
