//! deploy/fetch-libtpu.sh trusts an existing libtpu.so by its own SHA-256
//! (issue 24, item 6), not by the `.sha256` file beside it: run on a small
//! stand-in wheel (the script copied next to a libtpu.env that pins it, and
//! served through EMOTIONET_LIBTPU_MIRROR), so no 640 MB are read.

use std::path::Path;
use std::process::Command;

fn sha256(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().and_then(|mut child| {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes)?;
        child.wait_with_output()
    });
    String::from_utf8(out.unwrap().stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// The script beside a libtpu.env pinning a wheel that holds `library`.
fn setup(dir: &Path, library: &[u8]) {
    let deploy = dir.join("deploy");
    std::fs::create_dir_all(dir.join("mirror")).unwrap();
    std::fs::create_dir_all(&deploy).unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fetch-libtpu.sh"), deploy.join("fetch-libtpu.sh")).unwrap();
    std::fs::write(dir.join("libtpu.so.in"), library).unwrap();
    let wheel = dir.join("mirror/libtpu-test.whl");
    let zipped = Command::new("python3")
        .args(["-c", "import sys, zipfile; zipfile.ZipFile(sys.argv[1], 'w').write(sys.argv[2], 'libtpu/libtpu.so')"])
        .arg(&wheel)
        .arg(dir.join("libtpu.so.in"))
        .status()
        .unwrap();
    assert!(zipped.success());
    std::fs::write(
        deploy.join("libtpu.env"),
        format!(
            "LIBTPU_VERSION=test\nLIBTPU_WHEEL=libtpu-test.whl\nLIBTPU_WHEEL_URL=http://127.0.0.1:9/unused\nLIBTPU_WHEEL_SHA256={}\nLIBTPU_SO_SHA256={}\n",
            sha256(&std::fs::read(&wheel).unwrap()),
            sha256(library)
        ),
    )
    .unwrap();
}

fn fetch(dir: &Path) -> String {
    let out = Command::new("bash")
        .arg(dir.join("deploy/fetch-libtpu.sh"))
        .arg(dir.join("wheels"))
        .arg(dir.join("libtpu/libtpu.so"))
        .env("EMOTIONET_LIBTPU_MIRROR", format!("file://{}", dir.join("mirror").display()))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn a_changed_libtpu_is_hashed_and_replaced_whatever_its_sha256_file_says() {
    let dir = tempfile::tempdir().unwrap();
    let library = b"\x7fELF pretend libtpu.so, pinned by its SHA-256".repeat(100);
    setup(dir.path(), &library);
    let so = dir.path().join("libtpu/libtpu.so");
    assert!(fetch(dir.path()).contains("extracting"));
    assert_eq!(std::fs::read(&so).unwrap(), library);

    // Unchanged (same size and mtime): trusted without reading it again.
    assert!(fetch(dir.path()).contains("size and mtime as when its SHA-256 was checked"));

    // Damaged, while the .sha256 beside it still names the pinned hash
    // (what the script used to trust): hashed, found wrong, extracted again.
    let mut damaged = library.clone();
    damaged.truncate(library.len() / 2);
    std::fs::write(&so, &damaged).unwrap();
    let text = fetch(dir.path());
    assert!(text.contains("is not the pinned libtpu") && text.contains("extracting"), "{text}");
    assert_eq!(std::fs::read(&so).unwrap(), library, "the pinned library is back");

    // Touched but intact: hashed once, found right, kept.
    let touched = Command::new("touch").args(["-d", "2001-01-01"]).arg(&so).status().unwrap();
    assert!(touched.success());
    let text = fetch(dir.path());
    assert!(text.contains("checking the SHA-256") && !text.contains("extracting"), "{text}");
    assert!(fetch(dir.path()).contains("size and mtime as when"), "the new size and mtime were stamped");
}
