//! The kernel interop suite (issue 8): ipvs-rs checked against a real Linux IPVS, booted under qemu.
//!
//! The tests in `tests/kernel.rs` boot Debian's stock kernel (`linux-image-amd64`, the 6.1 series of
//! `testdata/kernel-6.1`) with `qemu-system-x86_64 -accel tcg`, configure it with Debian's `ipvsadm`, send it
//! crafted packets, read back what it did, and compare that with our crates called in-process:
//!
//! - **scheduler differential** ([`sched`], [`persist`]): random services for every deterministic scheduler,
//!   random flows; the kernel's picks become `sched-picks` files. The plain services' flows are replayed
//!   through ipvs-sched (every pick and every refusal compared; [`ipvs_sched::replay`] reads the file too),
//!   the persistent services' through an [`ipvs_core::Engine`] (real server per flow, and the templates).
//! - **rules round trip** ([`rules`]): the guest's `ipvsadm -S -n` through [`ipvs_core::ipvsadm`] and back.
//! - **protocol state sequences** ([`states`]): random TCP (plain and `secure_tcp`), UDP and SCTP packet
//!   paths through the kernel and through [`ipvs_core::replay_states`] (UDP: [`states::replay_udp`]).
//! - **connection sync** ([`sync`], [`netns`]): a kernel master and a tun-director backup, a tun-director
//!   master and a kernel backup (v1 and v0), over real multicast between the guest's `eth0` and a tap device
//!   in the test's own network namespace; every conn and template listed alike on both sides.
//!
//! How it runs, in order ([`artifacts::prepare`]): Debian's `qemu-system-x86`, `busybox-static` and
//! `ipvsadm` are installed with apt-get when missing; `linux-image-amd64`'s kernel package is fetched with
//! `apt-get download` (the only download) and unpacked with `dpkg-deb`; the kernel, the modules the guest needs
//! and their dependencies (read from each module's `.modinfo`, since the package carries no `modules.dep`),
//! ipvsadm with the shared libraries `ldd` names, busybox and the packet injector `guest/ipvs-guest.rs`
//! (compiled statically with `rustc`) go into an initramfs that [`cpio`] writes. All of it is cached under
//! `target/tmp/interop/` (`CARGO_TARGET_TMPDIR`), so a rerun only boots. [`guest::Guest`] boots it with no
//! network device (`-nodefaults`; the sync scenarios add one on a tap of their namespace), talks to a shell on
//! the second serial port (qemu's stdin/stdout) with a length-prefixed command / `END id rc` protocol, and
//! kills qemu and removes its run directory on drop; the guest also powers itself off after ten idle minutes,
//! should the test process die without dropping it.
//!
//! A plain `cargo test --workspace` boots nothing; `.ci/run` shows the tests' counts in a step of their own.
//! [`gate`] decides: with `CI=true` or `IPVS_INTEROP=1` they run and every failure to
//! prepare or boot fails them; otherwise they print a notice and pass.
//!
//! The sync scenarios' network: [`netns::Lab`] makes a namespace with a tap device, [`guest::GuestOptions`]
//! runs qemu inside it (`netns`) with a virtio-net device on the tap (`qemu_args`; the initramfs loads
//! `virtio_pci` and `virtio_net`), and [`netns::in_netns`] starts the director's sync daemons on threads in
//! the namespace. Nothing reaches beyond this machine.

use std::fmt;

pub mod artifacts;
pub mod cpio;
pub mod guest;
pub mod kmod;
pub mod netns;
pub mod packet;
pub mod persist;
pub mod procfs;
pub mod rng;
pub mod rules;
pub mod sched;
pub mod states;
pub mod sync;

/// What went wrong, in words (with the command, file or guest output that tells why).
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An error with this text.
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Adds what was being done to an error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error(format!("{}: {e}", what())))
    }
}

/// Whether the suite runs here.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum Gate {
    /// Run, and fail on anything that keeps a scenario from running.
    Run,
    /// Not asked for: print [`Gate::NOTICE`] and pass.
    Skip,
}

impl Gate {
    /// What a skipped test prints.
    pub const NOTICE: &'static str = "kernel interop suite not run: it installs Debian packages and boots a kernel \
        under qemu (a few minutes); run it with `IPVS_INTEROP=1 cargo test -p ipvs-interop --test kernel` \
        (it always runs under CI=true)";
}

/// [`Gate::Run`] under `CI=true` (or `CI=1`) or with `IPVS_INTEROP=1`, else [`Gate::Skip`].
pub fn gate() -> Gate {
    let on = |var: &str| std::env::var(var).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if on("CI") || on("IPVS_INTEROP") {
        Gate::Run
    } else {
        Gate::Skip
    }
}
