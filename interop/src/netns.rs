//! The sync scenarios' network: a namespace of the test's own with a tap device the guest's `eth0` is plugged
//! into, so multicast sync flows both ways and never leaves this machine.
//!
//! ```text
//!   test namespace ipvsinterop-PID-TAG                       guest (qemu -netdev tap,ifname=tap0)
//!   tap0 192.168.77.1/24  ═══════════════ virtio-net ═══════  eth0 192.168.77.2/24
//!   tun-director's sync socket (224.0.0.81:8848)              ipvsadm --start-daemon …
//! ```
//!
//! qemu runs inside the namespace ([`GuestOptions::netns`](crate::guest::GuestOptions::netns)) and attaches to
//! the tap device created there beforehand. Our side runs on threads that [`in_netns`] moves into the
//! namespace, with a private mount namespace whose `/sys` shows the namespace's devices (as `ip netns exec`
//! does: the director reads interface indexes and MTUs from sysfs); threads they spawn (the director's sync
//! daemons) inherit both. [`Lab`] deletes the namespace on drop, also when the test panics; namespaces of
//! test processes that died before dropping theirs are removed by the next [`Lab::new`].

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

use crate::{Context, Error, Result};

/// The tap device's name inside the namespace.
pub const TAP: &str = "tap0";
/// Our address on the tap (the namespace's side).
pub const HOST_ADDR: &str = "192.168.77.1";
/// The guest's `eth0` address.
pub const GUEST_ADDR: &str = "192.168.77.2";
/// The prefix of every namespace this module creates.
const PREFIX: &str = "ipvsinterop-";

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().context(|| format!("running {program}"))?;
    if !out.status.success() {
        return Err(Error(format!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace with [`TAP`] up and addressed; deleted on drop.
#[derive(Debug)]
pub struct Lab {
    /// `ipvsinterop-PID-TAG`.
    pub ns: String,
}

impl Lab {
    /// Creates the namespace (loopback up) and its tap device ([`HOST_ADDR`]/24, multicast on), after
    /// removing namespaces left by dead test processes.
    ///
    /// # Errors
    /// An `ip` command fails (not root, no namespaces).
    pub fn new(tag: &str) -> Result<Self> {
        remove_stale();
        let ns = format!("{PREFIX}{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run("ip", &["netns", "add", &ns])?;
        let lab = Self { ns };
        for args in [
            "link set lo up".to_string(),
            format!("tuntap add {TAP} mode tap"),
            format!("addr add {HOST_ADDR}/24 dev {TAP}"),
            format!("link set {TAP} multicast on up"),
        ] {
            lab.ip(&args)?;
        }
        Ok(lab)
    }

    /// `ip -n NS ARGS` (words split at spaces).
    ///
    /// # Errors
    /// The command fails.
    pub fn ip(&self, args: &str) -> Result<String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend(args.split_whitespace());
        run("ip", &all)
    }

    /// The qemu arguments that plug the guest's `eth0` (virtio-net) into [`TAP`].
    pub fn qemu_args(&self) -> Vec<String> {
        ["-netdev", &format!("tap,id=n0,ifname={TAP},script=no,downscript=no"), "-device", "virtio-net-pci,netdev=n0"]
            .map(str::to_string)
            .to_vec()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        delete_netns(&self.ns);
    }
}

/// Kills what still runs in `ns` (a qemu of this suite) and deletes it.
fn delete_netns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Deletes `ipvsinterop-PID-…` namespaces whose test process no longer exists.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_netns(name);
        }
    }
}

fn check(r: libc::c_int, what: &str) -> Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(Error(format!("{what}: {}", io::Error::last_os_error())))
    }
}

/// Moves the calling thread into `ns` with a mount namespace of its own whose `/sys` is the namespace's
/// (what `ip netns exec` does for a process). Only for threads made for it: the move is permanent.
fn enter(ns: &str) -> Result<()> {
    let f = File::open(format!("/var/run/netns/{ns}")).context(|| format!("opening namespace {ns}"))?;
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (root, none, sys, sysfs) = (c("/"), c("none"), c("/sys"), c("sysfs"));
    // SAFETY: unshare(2) takes a flag word. CLONE_NEWNS (with the CLONE_FS it implies) only detaches this
    // thread's mount namespace and filesystem context from the other threads'.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare(CLONE_NEWNS)")?;
    let slave = libc::MS_SLAVE | libc::MS_REC;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call (or null for no data). Making
    // the new mount namespace a slave keeps the remount of /sys below from propagating to the host's.
    let r = unsafe { libc::mount(none.as_ptr(), root.as_ptr(), std::ptr::null(), slave, std::ptr::null()) };
    check(r, "making / a slave mount")?;
    // SAFETY: `f` is an open namespace file for the duration of the call; CLONE_NEWNET moves only this thread.
    check(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, "setns")?;
    // SAFETY: a NUL-terminated path; failure (no sysfs mounted there) is fine, the mount below covers it.
    let _ = unsafe { libc::umount2(sys.as_ptr(), libc::MNT_DETACH) };
    // SAFETY: NUL-terminated strings that outlive the call; no data. A sysfs mounted now shows this thread's
    // network namespace.
    check(unsafe { libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null()) }, "mounting sysfs")
}

/// Runs `f` on a new thread inside `ns` (see [`enter`]) and returns its result; a panic in `f` is the
/// caller's. Sockets made there stay in `ns`; threads spawned there run in `ns` too.
///
/// # Errors
/// The thread cannot enter the namespace.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
