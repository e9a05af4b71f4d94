//! A booted guest: qemu under TCG, and a shell on its second serial port.
//!
//! ```text
//! qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot -m 512 -smp 1
//!     -kernel vmlinuz -initrd initramfs.cpio -append "console=ttyS0 panic=-1 quiet"
//!     -serial file:RUN/console.log                           ttyS0: the kernel's console, for diagnostics
//!     -chardev stdio,id=ctl,signal=off -serial chardev:ctl   ttyS1: the command channel (our pipes)
//! ```
//!
//! `-nodefaults` leaves the guest without any network device (and without VGA, floppy, CD-ROM); a scenario
//! that needs one adds it with [`GuestOptions::qemu_args`]. `-accel tcg` because KVM may hang on these
//! machines. The guest's `/init` (see [`crate::artifacts`]) answers each `ID LEN\n` + script with `BEGIN ID`,
//! the output and `END ID RC`. Serial input is slow under TCG (about 20 KB/s; output is faster): scripts
//! should stay in the tens of kilobytes.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::artifacts::Artifacts;
use crate::{Context, Error, Result};

/// How to boot.
#[derive(Clone, Debug)]
pub struct GuestOptions {
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// How long to wait for the guest's `READY`.
    pub boot_timeout: Duration,
    /// How long one command may take unless [`Guest::run_timeout`] says otherwise.
    pub command_timeout: Duration,
    /// Extra qemu arguments, e.g. a netdev and a `virtio-net-pci` device for the sync scenarios (the
    /// initramfs loads `virtio_net`; the device shows up as `eth0`).
    pub qemu_args: Vec<String>,
    /// Extra kernel command-line words.
    pub append: String,
    /// Run qemu inside this network namespace (`ip netns exec NS qemu-system-x86_64 …`), so a tap netdev in
    /// [`GuestOptions::qemu_args`] opens a tap device of that namespace.
    pub netns: Option<String>,
}

impl Default for GuestOptions {
    fn default() -> Self {
        Self {
            memory_mb: 512,
            boot_timeout: Duration::from_secs(180),
            command_timeout: Duration::from_secs(300),
            qemu_args: Vec::new(),
            append: String::new(),
            netns: None,
        }
    }
}

/// What a script printed and its exit status.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Output {
    /// Standard output and standard error, interleaved as the guest wrote them.
    pub text: String,
    /// The shell's exit status.
    pub rc: i32,
}

/// A running guest. Dropping it kills qemu and removes its run directory.
#[derive(Debug)]
pub struct Guest {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    dir: PathBuf,
    next_id: u64,
    opts: GuestOptions,
    /// The guest's `uname -r`.
    pub release: String,
    /// How long the boot took, to `READY`.
    pub boot_time: Duration,
}

impl Guest {
    /// Boots a guest from `art` and waits until its shell is ready.
    ///
    /// # Errors
    /// qemu does not start, or the guest is not ready within [`GuestOptions::boot_timeout`] (the error
    /// holds the end of the console log).
    pub fn boot(art: &Artifacts, opts: &GuestOptions) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = art.cache.join("run").join(format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
        let console = dir.join("console.log");
        // `ip netns exec` execs qemu after entering the namespace: the child is qemu itself.
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                c
            }
            None => Command::new("qemu-system-x86_64"),
        };
        cmd.args(["-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot", "-smp", "1"])
            .args(["-m", &opts.memory_mb.to_string()])
            .arg("-kernel")
            .arg(&art.kernel)
            .arg("-initrd")
            .arg(&art.initramfs)
            .args(["-append", format!("console=ttyS0 panic=-1 quiet {}", opts.append).trim_end()])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-chardev", "stdio,id=ctl,signal=off", "-serial", "chardev:ctl"])
            .args(&opts.qemu_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let start = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(Error(format!("starting qemu-system-x86_64: {e}")));
            }
        };
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut guest = Self {
            child,
            stdin,
            lines,
            dir,
            next_id: 1,
            opts: opts.clone(),
            release: String::new(),
            boot_time: Duration::ZERO,
        };
        let deadline = start + opts.boot_timeout;
        loop {
            let line = guest.next_line(deadline).map_err(|e| Error(format!("booting the guest: {e}")))?;
            if let Some(release) = line.trim().strip_prefix("READY ") {
                guest.release = release.to_string();
                break;
            }
        }
        guest.boot_time = start.elapsed();
        Ok(guest)
    }

    /// Runs a shell script in the guest, with [`GuestOptions::command_timeout`].
    ///
    /// # Errors
    /// The guest does not answer in time or qemu exits.
    pub fn run(&mut self, script: &str) -> Result<Output> {
        self.run_timeout(script, self.opts.command_timeout)
    }

    /// [`Guest::run`] with its own timeout.
    ///
    /// # Errors
    /// As [`Guest::run`].
    pub fn run_timeout(&mut self, script: &str, timeout: Duration) -> Result<Output> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = format!("{id} {}\n", script.len()).into_bytes();
        msg.extend_from_slice(script.as_bytes());
        self.stdin.write_all(&msg).and_then(|()| self.stdin.flush()).context(|| "writing to qemu".to_string())?;
        let deadline = Instant::now() + timeout;
        let begin = format!("BEGIN {id}");
        while self.next_line(deadline)?.trim_end() != begin {}
        let end = format!("END {id} ");
        let mut text = String::new();
        loop {
            let line = self.next_line(deadline)?;
            if let Some(rc) = line.strip_prefix(&end) {
                let rc = rc.trim().parse().map_err(|_| Error(format!("bad END line {line:?}")))?;
                return Ok(Output { text, rc });
            }
            text.push_str(&line);
            text.push('\n');
        }
    }

    /// Runs a script that must succeed; its output.
    ///
    /// # Errors
    /// As [`Guest::run`], or a non-zero exit status (the error holds the script's output).
    pub fn sh(&mut self, script: &str) -> Result<String> {
        let out = self.run(script)?;
        if out.rc != 0 {
            let head: String = script.chars().take(200).collect();
            return Err(Error(format!("guest script failed (rc {}): {head:?}…\n{}", out.rc, out.text)));
        }
        Ok(out.text)
    }

    /// The last `n` lines of the guest's console (kernel messages).
    pub fn console_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn next_line(&mut self, deadline: Instant) -> Result<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(wait) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => {
                Err(Error(format!("the guest did not answer in time; console:\n{}", self.console_tail(30))))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                Err(Error(format!("qemu exited ({status:?}); console:\n{}", self.console_tail(30))))
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
