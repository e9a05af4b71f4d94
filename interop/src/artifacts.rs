//! Everything the guest boots from, made once and cached: Debian's tools installed, the kernel package
//! fetched and unpacked, the guest helper compiled, the initramfs written.
//!
//! Cache layout (under the directory given to [`prepare`], by default `target/tmp/interop`):
//!
//! ```text
//! kernel/RELEASE/vmlinuz            the kernel of linux-image-RELEASE
//! kernel/RELEASE/modules/*.ko       the modules the guest loads, and load-order.txt
//! kernel/RELEASE/wanted.txt         the module list they were made for (a change re-extracts)
//! ipvs-guest, ipvs-guest.rs         the static helper and the source it was built from
//! initramfs-RELEASE.cpio            rebuilt on every prepare (fast; follows ipvsadm/busybox upgrades)
//! run/PID-N/                        one per booted guest (console log); removed when the guest is dropped
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::cpio::Archive;
use crate::kmod::ModuleTree;
use crate::{Context, Error, Result};

/// The Debian packages installed on the host when missing.
pub const HOST_PACKAGES: [&str; 3] = ["qemu-system-x86", "busybox-static", "ipvsadm"];

/// The metapackage whose dependency names the kernel package to download.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// The modules the guest loads at boot (with their dependencies): IPVS and every scheduler, the dummy
/// device real servers are routed to, the SIP persistence engine (`--pe sip`), and the virtio PCI transport
/// and NIC driver for the scenarios that add a network device (`-device virtio-net-pci`).
pub const WANTED_MODULES: [&str; 19] = [
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_dh",
    "ip_vs_sh",
    "ip_vs_mh",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_pe_sip",
    "dummy",
    "virtio_pci",
    "virtio_net",
    "nf_conntrack",
];

/// Modules loaded when the package has them: `twos` is in Linux 6.7 and later only.
pub const OPTIONAL_MODULES: [&str; 1] = ["ip_vs_twos"];

/// The guest helper's source, compiled into the initramfs.
const GUEST_HELPER_SRC: &str = include_str!("../guest/ipvs-guest.rs");

/// The guest's `/init`. `@IDLE@` is replaced by the idle timeout in seconds.
const INIT: &str = r#"#!/bin/busybox sh
# ipvs-interop guest init: load the modules, then serve the harness on ttyS1.
/bin/busybox --install -s /bin
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/load-order.txt); do
  insmod /lib/modules/$m.ko || echo "ipvs-interop: insmod $m failed" > /dev/console
done
ip link set lo up
exec 0<>/dev/ttyS1 1>&0 2>&0
stty raw -echo
echo "READY $(uname -r)"
# Protocol: the harness writes "ID LEN\n" and LEN bytes of shell script; the guest answers
# "BEGIN ID", the script's output (stdout and stderr), "END ID RC".
while read -r -t @IDLE@ id n; do
  head -c "$n" > /tmp/cmd.sh
  sh /tmp/cmd.sh < /dev/null > /tmp/out 2>&1
  rc=$?
  echo "BEGIN $id"
  cat /tmp/out
  echo "END $id $rc"
done
echo "ipvs-interop: idle for @IDLE@ s, powering off" > /dev/console
poweroff -f
"#;

/// Seconds without a command after which the guest powers itself off.
pub const GUEST_IDLE_SECS: u32 = 600;

/// What a guest boots from.
#[derive(Clone, Debug)]
pub struct Artifacts {
    /// The cache directory.
    pub cache: PathBuf,
    /// `vmlinuz`.
    pub kernel: PathBuf,
    /// The initramfs (`newc` cpio).
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// The modules loaded at boot, in load order.
    pub modules: Vec<String>,
}

impl Artifacts {
    /// The schedulers the guest's kernel has (`rr`, `wrr`, …), in load order.
    pub fn schedulers(&self) -> Vec<&str> {
        self.modules.iter().filter_map(|m| m.strip_prefix("ip_vs_")).filter(|m| !m.starts_with("pe_")).collect()
    }
}

/// The cache directory: `IPVS_INTEROP_CACHE`, else `default`.
pub fn cache_dir(default: &Path) -> PathBuf {
    std::env::var_os("IPVS_INTEROP_CACHE").map_or_else(|| default.to_path_buf(), PathBuf::from)
}

/// [`prepare`] once per process; every caller gets the same outcome.
///
/// # Errors
/// The first call's error, again.
pub fn shared(default_cache: &Path) -> Result<&'static Artifacts> {
    static ONCE: OnceLock<Result<Artifacts>> = OnceLock::new();
    ONCE.get_or_init(|| prepare(&cache_dir(default_cache))).as_ref().map_err(Clone::clone)
}

/// Installs, downloads and builds whatever is missing (see the module docs), and writes the initramfs.
///
/// # Errors
/// A missing tool that apt-get could not install (not root, no package lists), a failed download, a module
/// that is not in the package, a helper that does not compile.
pub fn prepare(cache: &Path) -> Result<Artifacts> {
    fs::create_dir_all(cache).context(|| format!("creating {}", cache.display()))?;
    ensure_host_packages()?;
    let (release, kdir) = ensure_kernel(cache)?;
    let helper = ensure_guest_helper(cache)?;
    let modules = fs::read_to_string(kdir.join("modules/load-order.txt"))
        .context(|| "reading load-order.txt".to_string())?
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let initramfs = cache.join(format!("initramfs-{release}.cpio"));
    write_initramfs(&initramfs, &kdir.join("modules"), &modules, &helper)?;
    Ok(Artifacts { cache: cache.to_path_buf(), kernel: kdir.join("vmlinuz"), initramfs, release, modules })
}

/// Runs a command to completion; its stdout on success.
fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().context(|| format!("running {shown}"))?;
    if !out.status.success() {
        return Err(Error(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apt_get(args: &[&str]) -> Result<String> {
    run(Command::new("apt-get")
        .args(["-q", "-y", "-o", "APT::Sandbox::User=root"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// `apt-get update`, once per process.
fn apt_update() -> Result<()> {
    static DONE: OnceLock<Result<()>> = OnceLock::new();
    DONE.get_or_init(|| apt_get(&["update"]).map(drop)).clone()
}

fn ensure_host_packages() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES.into_iter().filter(|p| !is_installed(p)).collect();
    if !missing.is_empty() {
        eprintln!("interop: installing {}", missing.join(" "));
        apt_update()?;
        let mut args = vec!["install", "--no-install-recommends"];
        args.extend(&missing);
        apt_get(&args).map_err(|e| Error(format!("installing the host packages (needs root): {e}")))?;
    }
    for tool in ["qemu-system-x86_64", "busybox", "ipvsadm", "ldd", "dpkg-deb", "rustc"] {
        which(tool)?;
    }
    Ok(())
}

/// The full path of `tool` in `PATH` (plus the sbin directories).
pub fn which(tool: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| Error(format!("{tool} not found in PATH")))
}

/// The kernel package `linux-image-amd64` depends on (`linux-image-6.1.0-56-amd64`).
fn kernel_package() -> Result<String> {
    let find = || -> Result<Option<String>> {
        let out = run(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(str::trim)
            .find(|p| p.starts_with("linux-image-"))
            .map(str::to_string))
    };
    if let Ok(Some(p)) = find() {
        return Ok(p);
    }
    apt_update()?;
    find()?.ok_or_else(|| Error(format!("apt-cache depends {KERNEL_METAPACKAGE} names no linux-image package")))
}

/// The kernel and its modules, downloaded and unpacked unless cached; returns the release and its directory.
fn ensure_kernel(cache: &Path) -> Result<(String, PathBuf)> {
    let wanted = [&WANTED_MODULES[..], &OPTIONAL_MODULES[..]].concat().join("\n");
    // Reuse any cached kernel made for this module list when apt cannot name one (no package lists).
    let package = match kernel_package() {
        Ok(p) => p,
        Err(e) => {
            let cached =
                fs::read_dir(cache.join("kernel")).into_iter().flatten().flatten().map(|e| e.path()).find(|d| {
                    fs::read_to_string(d.join("wanted.txt")).is_ok_and(|w| w == wanted) && d.join("vmlinuz").is_file()
                });
            let d = cached.ok_or(e)?;
            let release = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            return Ok((release, d));
        }
    };
    let release = package.trim_start_matches("linux-image-").to_string();
    let kdir = cache.join("kernel").join(&release);
    if fs::read_to_string(kdir.join("wanted.txt")).is_ok_and(|w| w == wanted) && kdir.join("vmlinuz").is_file() {
        return Ok((release, kdir));
    }
    eprintln!("interop: downloading {package}");
    let dl = cache.join("download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl).context(|| format!("creating {}", dl.display()))?;
    // apt-get download writes into the current directory.
    let download = || {
        run(Command::new("apt-get")
            .args(["-q", "-y", "-o", "APT::Sandbox::User=root", "download", &package])
            .current_dir(&dl))
    };
    download().or_else(|_| {
        apt_update()?;
        download()
    })?;
    let deb = fs::read_dir(&dl)
        .context(|| format!("reading {}", dl.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| Error(format!("apt-get download {package} left no .deb")))?;
    let x = dl.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    let tree = ModuleTree::open(&x.join("lib/modules").join(&release))?;
    let mut wanted_here = WANTED_MODULES.to_vec();
    wanted_here.extend(OPTIONAL_MODULES.into_iter().filter(|m| tree.path(m).is_some()));
    let order = tree.closure(&wanted_here)?;
    let _ = fs::remove_dir_all(&kdir);
    let mdir = kdir.join("modules");
    fs::create_dir_all(&mdir).context(|| format!("creating {}", mdir.display()))?;
    for m in &order {
        let src = tree.path(m).ok_or_else(|| Error(format!("module {m} vanished")))?;
        fs::copy(src, mdir.join(format!("{m}.ko"))).context(|| format!("copying {}", src.display()))?;
    }
    fs::write(mdir.join("load-order.txt"), order.join("\n") + "\n").context(|| "writing load-order".to_string())?;
    let vmlinuz = x.join("boot").join(format!("vmlinuz-{release}"));
    fs::copy(&vmlinuz, kdir.join("vmlinuz")).context(|| format!("copying {}", vmlinuz.display()))?;
    fs::write(kdir.join("wanted.txt"), &wanted).context(|| "writing wanted.txt".to_string())?;
    let _ = fs::remove_dir_all(&dl);
    Ok((release, kdir))
}

/// The guest helper, compiled statically unless the cached binary was built from the same source.
fn ensure_guest_helper(cache: &Path) -> Result<PathBuf> {
    let bin = cache.join("ipvs-guest");
    let src = cache.join("ipvs-guest.rs");
    if bin.is_file() && fs::read_to_string(&src).is_ok_and(|s| s == GUEST_HELPER_SRC) {
        return Ok(bin);
    }
    fs::write(&src, GUEST_HELPER_SRC).context(|| format!("writing {}", src.display()))?;
    let tmp = cache.join("ipvs-guest.tmp");
    run(Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--edition", "2021", "-O", "-C", "target-feature=+crt-static", "-C", "panic=abort"])
        .args(["-C", "strip=symbols", "-o"])
        .arg(&tmp)
        .arg(&src))
    .map_err(|e| Error(format!("compiling the guest helper: {e}")))?;
    fs::rename(&tmp, &bin).context(|| format!("renaming to {}", bin.display()))?;
    Ok(bin)
}

/// The shared libraries `ldd` names for `bin` (the loader included), as absolute paths.
fn shared_libs(bin: &Path) -> Result<Vec<String>> {
    let out = run(Command::new("ldd").arg(bin))?;
    Ok(out.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/'))).map(str::to_string).collect())
}

fn write_initramfs(path: &Path, mdir: &Path, modules: &[String], helper: &Path) -> Result<()> {
    let read = |p: &Path| fs::read(p).context(|| format!("reading {}", p.display()));
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "tmp", "root", "etc", "sbin", "usr/bin", "usr/sbin"] {
        a.dir(d);
    }
    a.char_dev("/dev/console", 0o600, 5, 1);
    a.char_dev("/dev/null", 0o666, 1, 3);
    a.file("/init", 0o755, INIT.replace("@IDLE@", &GUEST_IDLE_SECS.to_string()).as_bytes());
    a.file("/bin/busybox", 0o755, &read(&which("busybox")?)?);
    let ipvsadm = which("ipvsadm")?;
    a.file("/sbin/ipvsadm", 0o755, &read(&ipvsadm)?);
    for lib in shared_libs(&ipvsadm)? {
        a.file(&lib, 0o755, &read(Path::new(&lib))?);
    }
    a.file("/bin/ipvs-guest", 0o755, &read(helper)?);
    for m in modules {
        a.file(&format!("/lib/modules/{m}.ko"), 0o644, &read(&mdir.join(format!("{m}.ko")))?);
    }
    a.file("/lib/modules/load-order.txt", 0o644, (modules.join("\n") + "\n").as_bytes());
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, a.finish()).context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).context(|| format!("renaming to {}", path.display()))
}
