//! What a Linux binary needs from the machine that is to run it: its CPU
//! architecture and the newest glibc symbol version it links against, read
//! from the ELF file (its `.gnu.version_r` section, the version needs) with
//! `goblin`. `emotionet cloud run` compares this with the VM before shipping
//! the binary, so that a binary built on a newer distribution than the VM's
//! image is refused with a way out (`--build-on-vm`) instead of failing on
//! the VM with "version `GLIBC_2.38' not found".

use std::path::Path;

use super::error::{CloudError, Result};

/// A glibc version such as 2.35 (major, minor, patch; patch is 0 when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GlibcVersion(pub u32, pub u32, pub u32);

impl GlibcVersion {
    /// Reads `2.35`, `GLIBC_2.34`, `GLIBC_2.2.5` or `getconf GNU_LIBC_VERSION`'s `glibc 2.35`.
    pub fn parse(text: &str) -> Option<GlibcVersion> {
        let text = text.trim();
        let number = text.strip_prefix("GLIBC_").or_else(|| text.strip_prefix("glibc ")).unwrap_or(text).trim();
        let mut parts = number.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = match parts.next() {
            Some(p) => p.ok()?,
            None => 0,
        };
        parts.next().is_none().then_some(GlibcVersion(major, minor, patch))
    }
}

impl std::fmt::Display for GlibcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.2 {
            0 => write!(f, "{}.{}", self.0, self.1),
            patch => write!(f, "{}.{}.{patch}", self.0, self.1),
        }
    }
}

/// What [`read_needs`] found in a binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryNeeds {
    /// As `uname -m` names it: `x86_64`, `aarch64`, or `e_machine N` for others.
    pub machine: String,
    /// The newest `GLIBC_*` version any of its symbol references need;
    /// `None` for a static binary or one that needs no versioned glibc symbol.
    pub glibc: Option<GlibcVersion>,
}

/// Reads the architecture and glibc needs of the ELF file at `path`.
pub fn read_needs(path: &Path) -> Result<BinaryNeeds> {
    let bytes = std::fs::read(path).map_err(|e| CloudError::io(path, e))?;
    let elf = goblin::elf::Elf::parse(&bytes).map_err(|e| CloudError::io(path, format!("not an ELF binary for Linux: {e}")))?;
    let machine = match elf.header.e_machine {
        goblin::elf::header::EM_X86_64 => "x86_64".to_string(),
        goblin::elf::header::EM_AARCH64 => "aarch64".to_string(),
        other => format!("e_machine {other}"),
    };
    let mut glibc = None;
    if let Some(needs) = &elf.verneed {
        for need in needs.iter() {
            for aux in need.iter() {
                let version = elf.dynstrtab.get_at(aux.vna_name).filter(|name| name.starts_with("GLIBC_")).and_then(GlibcVersion::parse);
                glibc = glibc.max(version);
            }
        }
    }
    Ok(BinaryNeeds { machine, glibc })
}

/// Whether a binary with `needs` runs on a machine of architecture `machine`
/// with glibc `available`; otherwise why not.
pub fn check_runs_on(binary: &Path, needs: &BinaryNeeds, machine: &str, available: Option<GlibcVersion>) -> std::result::Result<(), String> {
    if needs.machine != machine.trim() {
        return Err(format!("{} is built for {}, the VM is {}", binary.display(), needs.machine, machine.trim()));
    }
    match (needs.glibc, available) {
        (Some(needed), Some(available)) if needed > available => {
            Err(format!("{} needs glibc {needed} (its newest GLIBC_ symbol version), the VM's image has glibc {available}", binary.display()))
        }
        (Some(needed), None) => {
            Err(format!("{} needs glibc {needed}, and the VM did not say which glibc it has (`getconf GNU_LIBC_VERSION`)", binary.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_versions_parse_and_order_numerically() {
        assert_eq!(GlibcVersion::parse("glibc 2.35"), Some(GlibcVersion(2, 35, 0)));
        assert_eq!(GlibcVersion::parse("GLIBC_2.2.5"), Some(GlibcVersion(2, 2, 5)));
        assert_eq!(GlibcVersion::parse("2.9"), Some(GlibcVersion(2, 9, 0)));
        assert!(GlibcVersion::parse("2.9") < GlibcVersion::parse("2.10"));
        assert!(GlibcVersion::parse("GLIBC_PRIVATE").is_none());
        assert!(GlibcVersion::parse("glibc 2.x").is_none());
        assert_eq!(GlibcVersion(2, 2, 5).to_string(), "2.2.5");
    }

    #[test]
    fn this_test_binary_needs_a_glibc_no_newer_than_the_one_running_it() {
        let me = std::env::current_exe().unwrap();
        let needs = read_needs(&me).unwrap();
        assert_eq!(needs.machine, std::env::consts::ARCH);
        let needed = needs.glibc.expect("a Rust binary links glibc with versioned symbols");
        // This machine runs the binary, so its glibc is at least as new.
        let here = std::process::Command::new("getconf").arg("GNU_LIBC_VERSION").output().unwrap();
        let here = GlibcVersion::parse(&String::from_utf8_lossy(&here.stdout)).unwrap();
        assert!(needed <= here, "{needed} > {here}");
        assert!(check_runs_on(&me, &needs, std::env::consts::ARCH, Some(here)).is_ok());
        let err = check_runs_on(&me, &needs, std::env::consts::ARCH, Some(GlibcVersion(2, 17, 0))).unwrap_err();
        assert!(err.contains(&format!("needs glibc {needed}")) && err.contains("has glibc 2.17"), "{err}");
        assert!(check_runs_on(&me, &needs, "aarch64", Some(here)).unwrap_err().contains("the VM is aarch64"));
        assert!(read_needs(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml").as_path()).unwrap_err().to_string().contains("not an ELF"));
    }
}
