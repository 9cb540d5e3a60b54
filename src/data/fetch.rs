//! `data fetch`: downloads LFW and SUN397 archives (resumable with HTTP
//! Range, SHA-256 verified, progress bar) and extracts them. KDEF and AKDEF
//! are behind a licence form, so for them we only print instructions.
//!
//! Checksums: LFW's two archives use the SHA-256 sums scikit-learn
//! publishes for the same figshare files. We know no published SHA-256 for
//! `lfw-deepfunneled.tgz` or `SUN397.tar.gz`, so for those the user must
//! pass one (`--sha256`); we never invent one.

use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use super::error::{DataError, Result};

/// A downloadable archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveSpec {
    pub name: &'static str,
    pub url: &'static str,
    pub file_name: &'static str,
    pub sha256: Option<&'static str>,
    /// The folder the archive unpacks to.
    pub top_folder: &'static str,
}

pub const LFW: ArchiveSpec = ArchiveSpec {
    name: "lfw",
    url: "https://ndownloader.figshare.com/files/5976018",
    file_name: "lfw.tgz",
    sha256: Some("055f7d9c632d7370e6fb4afc7468d40f970c34a80d4c6f50ffec63f5a8d536c0"),
    top_folder: "lfw",
};

pub const LFW_FUNNELED: ArchiveSpec = ArchiveSpec {
    name: "lfw-funneled",
    url: "https://ndownloader.figshare.com/files/5976015",
    file_name: "lfw-funneled.tgz",
    sha256: Some("b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a"),
    top_folder: "lfw_funneled",
};

pub const LFW_DEEPFUNNELED: ArchiveSpec = ArchiveSpec {
    name: "lfw-deepfunneled",
    url: "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz",
    file_name: "lfw-deepfunneled.tgz",
    sha256: None,
    top_folder: "lfw-deepfunneled",
};

pub const SUN397: ArchiveSpec = ArchiveSpec {
    name: "sun397",
    url: "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
    file_name: "SUN397.tar.gz",
    sha256: None,
    top_folder: "SUN397",
};

/// How KDEF and AKDEF are obtained and laid out.
pub const KDEF_INSTRUCTIONS: &str = "\
KDEF and AKDEF cannot be downloaded automatically: the Karolinska Institutet
hands them out after a licence form (free for non-commercial research).

1. Request them at https://www.kdef.se (\"Download\" / \"Order KDEF\").
2. Unpack so that the folders look like this:
     KDEF/AF01/AF01AFS.JPG ... KDEF/BM35/BM35SUFR.JPG   (4,900 pictures, 562x762)
     AKDEF/FAFFL.JPG ... AKDEF/MSUS.JPG                 (70 averaged pictures)
   File names: session A|B, sex F|M, subject 01-35, expression
   AF|AN|DI|HA|NE|SA|SU, angle S|HL|HR|FL|FR. A few files in the public
   release are misnamed; prep reports and skips them.
3. Point the data config at them:
     data:
       source:
         real: { kdef: /path/to/KDEF, akdef: /path/to/AKDEF, lfw: ..., sun397: ... }
";

/// Options of one fetch.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub dest: PathBuf,
    /// Replaces the archive's URL with `<base_url>/<file_name>` (mirrors, tests).
    pub base_url: Option<String>,
    /// Expected SHA-256; required where the spec has none, overrides it otherwise.
    pub sha256: Option<String>,
    pub progress: bool,
    /// Keep the archive after extracting (default: keep, so a re-run can verify without downloading).
    pub extract: bool,
}

/// What a fetch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOutcome {
    pub archive: PathBuf,
    pub extracted_to: Option<PathBuf>,
    /// Bytes transferred by this call (0 when the archive was already complete).
    pub downloaded: u64,
    /// Bytes of an earlier partial download that were kept (resumed from).
    pub resumed_from: u64,
}

fn expected_sha(spec: &ArchiveSpec, options: &FetchOptions) -> Result<String> {
    match (&options.sha256, spec.sha256) {
        (Some(s), _) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DataError::config("--sha256", s, "64 hexadecimal digits"));
            }
            Ok(s)
        }
        (None, Some(s)) => Ok(s.to_string()),
        (None, None) => Err(DataError::config(
            "--sha256",
            "(missing)",
            format!("{} has no published SHA-256 that we trust; pass --sha256 HEX (e.g. from `sha256sum {}` on a copy you trust)", spec.name, spec.file_name),
        )),
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| DataError::io(path, e))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Downloads (or resumes), verifies and extracts an archive.
pub async fn fetch(spec: &ArchiveSpec, options: &FetchOptions) -> Result<FetchOutcome> {
    let expected = expected_sha(spec, options)?;
    std::fs::create_dir_all(&options.dest).map_err(|e| DataError::io(&options.dest, e))?;
    let archive = options.dest.join(spec.file_name);
    let partial = options.dest.join(format!("{}.part", spec.file_name));
    let url = match &options.base_url {
        Some(base) => format!("{}/{}", base.trim_end_matches('/'), spec.file_name),
        None => spec.url.to_string(),
    };

    let mut downloaded = 0;
    let mut resumed_from = 0;
    let have_archive = archive.is_file() && sha256_file(&archive)? == expected;
    if !have_archive {
        (downloaded, resumed_from) = download(&url, &partial, options.progress).await?;
        let actual = sha256_file(&partial)?;
        if actual != expected {
            // A bad partial must not be resumed again: start over next time.
            let _ = std::fs::remove_file(&partial);
            return Err(DataError::ChecksumMismatch { path: archive.clone(), expected, actual });
        }
        std::fs::rename(&partial, &archive).map_err(|e| DataError::io(&archive, e))?;
    }
    let extracted_to = if options.extract { Some(extract(&archive, &options.dest, spec.top_folder)?) } else { None };
    Ok(FetchOutcome { archive, extracted_to, downloaded, resumed_from })
}

/// Blocking wrapper for callers without a runtime (the CLI, tests).
pub fn fetch_blocking(spec: &ArchiveSpec, options: &FetchOptions) -> Result<FetchOutcome> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| DataError::io(&options.dest, e))?;
    runtime.block_on(fetch(spec, options))
}

/// Appends the rest of `url` to `partial`, asking for a byte range when part
/// of it is already there. Returns (bytes transferred, bytes resumed from).
async fn download(url: &str, partial: &Path, progress: bool) -> Result<(u64, u64)> {
    let failed = |reason: String| DataError::Download { url: url.to_string(), reason };
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let client = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(30)).build().map_err(|e| failed(e.to_string()))?;
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut response = request.send().await.map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let (append, start) = if status == reqwest::StatusCode::PARTIAL_CONTENT {
        (true, have)
    } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The partial file is already whole (or longer than the archive);
        // the checksum decides which.
        return Ok((0, have));
    } else if status.is_success() {
        // The server ignored the range (or there was none): start over.
        (false, 0)
    } else {
        return Err(failed(format!("HTTP {status}")));
    };
    let total = response.content_length().map(|n| n + start);
    let mut file =
        std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(partial).map_err(|e| DataError::io(partial, e))?;
    let bar = ProgressBar::with_draw_target(total, if progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("downloading");
    bar.set_position(start);
    let mut transferred = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(format!("connection broke after {} bytes ({e}); run the same command again to resume", start + transferred)))?
    {
        file.write_all(&chunk).map_err(|e| DataError::io(partial, e))?;
        transferred += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().map_err(|e| DataError::io(partial, e))?;
    bar.finish_and_clear();
    Ok((transferred, start))
}

/// Unpacks a .tgz / .tar.gz into `dest` (the tar crate refuses entries that
/// would land outside it). A marker file makes a second call a no-op.
pub fn extract(archive: &Path, dest: &Path, top_folder: &str) -> Result<PathBuf> {
    let marker = dest.join(format!(".{}.extracted", archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let target = dest.join(top_folder);
    if marker.is_file() && target.is_dir() {
        return Ok(target);
    }
    let file = std::fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.set_preserve_permissions(false);
    tar.unpack(dest).map_err(|e| DataError::Extract { path: archive.to_path_buf(), reason: e.to_string() })?;
    if !target.is_dir() {
        return Err(DataError::Extract { path: archive.to_path_buf(), reason: format!("the archive did not contain the expected folder {top_folder}/") });
    }
    std::fs::write(&marker, b"").map_err(|e| DataError::io(&marker, e))?;
    Ok(target)
}
