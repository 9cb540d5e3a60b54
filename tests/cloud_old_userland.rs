//! The VM side on an older userland than this machine's (Debian 12, glibc
//! 2.36): a Debian 11 chroot made with debootstrap (glibc 2.31, Python 3.9,
//! no pip), reached through a stand-in `gcloud` whose `tpu-vm ssh` runs the
//! command inside the chroot. On it:
//! - the binary built here (it needs glibc 2.34) is refused before shipping,
//!   with both versions named;
//! - `--build-on-vm` ships the source and builds emotionet inside the chroot
//!   with its own glibc, the real setup script fetches libtpu there (from a
//!   local copy of the pinned wheel), and the built binary runs a campaign.
//!
//! `make test-old-userland` makes the chroot (debootstrap from Debian's
//! mirror, plus gcc), mounts /proc and this machine's Rust toolchain into it
//! (rustup's own server cannot be reached from here; on a real VM
//! `vm-build.sh` installs it with rustup), and runs this test. The first
//! build compiles every dependency: many minutes on 2 cores.

mod cli_support;
mod cloud_fake;

use std::path::{Path, PathBuf};

use cli_support::{command, output, text};
use cloud_fake::{FakeTpu, REFRESH_TOKEN, temp_dir, write_script};

fn chroot() -> PathBuf {
    let root =
        std::env::var_os("EMOTIONET_OLD_USERLAND").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chroots/bullseye"));
    assert!(
        root.join("root/.cargo/bin/cargo").exists() && root.join("proc/self").exists(),
        "no prepared chroot at {} (with /proc and the Rust toolchain mounted): run `make test-old-userland`",
        root.display()
    );
    root
}

/// `gcloud compute tpus tpu-vm ssh ... --command=C` runs C in the chroot,
/// as root in /root, with a clean environment (as an ssh login would have).
const CHROOT_GCLOUD: &str = r#"#!/bin/bash
[ "$1 $2 $3 $4" = "compute tpus tpu-vm ssh" ] || { echo "unexpected: $*" >&2; exit 2; }
for arg in "$@"; do
  case "$arg" in --command=*) command="${arg#--command=}" ;; esac
done
exec chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/root/.cargo/bin:/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
    EMOTIONET_LIBTPU_MIRROR=file:///mirror bash -c "cd /root && $command"
"#;

#[test]
#[ignore = "needs the Debian 11 chroot and a full build inside it: make test-old-userland"]
fn an_older_userland_refuses_the_binary_and_builds_its_own() {
    let root = chroot();
    let fake = FakeTpu::start();
    let dir = temp_dir("old-userland");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    std::fs::write(project.join("campaign.yaml"), "experiments: [experiments/paper-tpu.yaml]\n").unwrap();
    std::fs::write(project.join("experiments/paper-tpu.yaml"), "model: face\n").unwrap();
    // --build-on-vm ships the source of this checkout.
    for file in ["Cargo.toml", "Cargo.lock", "src", "deploy"] {
        std::os::unix::fs::symlink(Path::new(env!("CARGO_MANIFEST_DIR")).join(file), project.join(file)).unwrap();
    }
    let gcloud = dir.path().join("gcloud");
    write_script(&gcloud, &CHROOT_GCLOUD.replacen("#!/bin/bash\n", &format!("#!/bin/bash\nCHROOT={}\n", root.display()), 1));
    let vm_home = root.join("root/emotionet-cloud");
    let _ = std::fs::remove_dir_all(vm_home.join("bin"));
    let credentials = fake.authorized_user_file(dir.path(), REFRESH_TOKEN);
    let emotionet = |args: &[&str]| {
        output(
            command()
                .args(args)
                .current_dir(&project)
                .env("EMOTIONET_TPU_API_URL", &fake.url)
                .env("EMOTIONET_CLOUD_STATE", dir.path().join("state.json"))
                .env("GOOGLE_APPLICATION_CREDENTIALS", &credentials)
                .env("GCE_METADATA_HOST", "127.0.0.1:9")
                .env("EMOTIONET_GCLOUD", &gcloud),
        )
    };
    let up = ["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--poll-every", "0.05"];
    assert!(emotionet(&up).status.success());

    let needs = emotionet::cloud::elf::read_needs(Path::new(env!("CARGO_BIN_EXE_emotionet"))).unwrap();
    let refused = emotionet(&["cloud", "run", "campaign.yaml", "--skip-preflight", "--out", "../out", "--command", "true", "--poll-every", "0.2"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains(&format!("needs glibc {}", needs.glibc.unwrap())) && stderr.contains("has glibc 2.31"), "{stderr}");
    assert!(stderr.contains("--build-on-vm") && !vm_home.join("bin/emotionet").exists(), "{stderr}");

    let built = emotionet(&[
        "cloud",
        "run",
        "campaign.yaml",
        "--skip-preflight",
        "--build-on-vm",
        "--out",
        "../out",
        "--command",
        "{bin} --version > {out}/version.txt && {bin} hlo --model emotion --size 64 --out {out}/hlo && \
         getconf GNU_LIBC_VERSION > {out}/glibc.txt && python3 --version > {out}/python.txt 2>&1 && \
         sha256sum < {deps}/pjrt/libtpu/libtpu.so | cut -d' ' -f1 > {out}/libtpu.sha256",
        "--poll-every",
        "0.5",
        "--step-timeout",
        "7200",
    ]);
    assert!(built.status.success(), "{}", text(&built.stderr));
    let out = dir.path().join("out");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap().trim().to_string();
    assert!(read("version.txt").starts_with("emotionet "), "{}", read("version.txt"));
    assert_eq!(read("glibc.txt"), "glibc 2.31");
    assert!(read("python.txt").starts_with("Python 3.9"), "{}", read("python.txt"));
    let pin = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/libtpu.env")).unwrap();
    assert!(pin.contains(&format!("LIBTPU_SO_SHA256={}", read("libtpu.sha256"))), "libtpu on the old userland is the pinned one");
    assert!(out.join("hlo").read_dir().unwrap().next().is_some(), "the binary built there ran a command");
    let there = emotionet::cloud::elf::read_needs(&vm_home.join("bin/emotionet")).unwrap();
    eprintln!("built on the old userland: needs glibc {:?} (the one built here needs {:?})", there.glibc, needs.glibc);
    assert!(there.glibc.unwrap() <= emotionet::cloud::elf::GlibcVersion(2, 31, 0));
    assert!(emotionet(&["cloud", "down", "--poll-every", "0.05"]).status.success());
}
