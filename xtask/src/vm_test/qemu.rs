//! The appliance VM under QEMU: software emulation only (`-accel tcg -cpu
//! max`; this machine's /dev/kvm cannot run stock kernels), UEFI firmware,
//! the system disk and the config drive on virtio-blk, and two virtio-net
//! NICs on TAP devices. The first serial port is the console, written to a
//! file; the second is a control line on which the test tells the guest that
//! it may power off.

use std::{
    fs,
    io::Write as _,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::command::render;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Guest memory: the kernel, systemd and the daemon need far less; the rest
/// is room for test binaries in /run.
const MEMORY_MIB: u32 = 1024;
/// Two vCPUs, so per-CPU maps and counters have more than one slot.
const CPUS: u32 = 2;
/// How often the console file is polled.
const POLL: Duration = Duration::from_millis(250);

/// One of the VM's NICs; the PCI slot fixes its name in the guest
/// (`enp0s<slot>`), the MAC lets network files match it.
pub struct Nic<'a> {
    /// The TAP device in the host's namespace.
    pub tap: &'a str,
    /// MAC address.
    pub mac: &'a str,
    /// PCI slot on the root bus.
    pub slot: u8,
}

/// What the VM is made of.
pub struct VmSpec<'a> {
    /// The system disk (raw, a private copy).
    pub disk: &'a Path,
    /// The config drive (raw FAT image).
    pub config_drive: &'a Path,
    /// NICs in order: WAN, LAN.
    pub nics: &'a [Nic<'a>],
    /// Directory for the console log, firmware variables and sockets.
    pub dir: &'a Path,
}

/// A running QEMU, killed on drop.
pub struct Vm {
    child: Child,
    console: PathBuf,
    control: PathBuf,
    monitor: PathBuf,
}

impl Vm {
    /// Starts QEMU paused (`-S`), so the caller can move the TAPs into their
    /// namespaces before the guest runs; [`Vm::resume`] starts the guest.
    pub fn start(spec: &VmSpec<'_>) -> Result<Self> {
        let vars = spec.dir.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).with_context(|| format!("failed to copy {OVMF_VARS}"))?;
        let console = spec.dir.join("console.log");
        let control = spec.dir.join("control.sock");
        let monitor = spec.dir.join("monitor.sock");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-cpu", "max", "-machine", "q35"])
            .args(["-m", &MEMORY_MIB.to_string(), "-smp", &CPUS.to_string()])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
                "-S",
            ])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .arg("-drive")
            .arg(format!(
                "if=none,id=system,format=raw,file={}",
                spec.disk.display()
            ))
            .args([
                "-device",
                "virtio-blk-pci,drive=system,addr=0x8,bootindex=0",
            ])
            .arg("-drive")
            .arg(format!(
                "if=none,id=config,format=raw,readonly=on,file={}",
                spec.config_drive.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=config,addr=0x9"]);
        for (index, nic) in spec.nics.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!(
                    "tap,id=net{index},ifname={},script=no,downscript=no",
                    nic.tap
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=net{index},mac={},addr={:#x}",
                    nic.mac, nic.slot
                ));
        }
        cmd.arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=control,path={},server=on,wait=off",
                control.display()
            ))
            .args(["-serial", "chardev:control"])
            .arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(spec.dir.join("qemu.stderr"))?);
        eprintln!("+ {}", render(&cmd));
        let child = cmd.spawn().context("failed to start qemu-system-x86_64")?;
        let mut vm = Self {
            child,
            console,
            control,
            monitor,
        };
        // The monitor answers once every device, the TAPs included, is set up.
        vm.connect(
            &vm.monitor.clone(),
            Instant::now() + Duration::from_secs(30),
        )?;
        Ok(vm)
    }

    /// Lets the paused guest run.
    pub fn resume(&mut self) -> Result<()> {
        let mut monitor = self.connect(
            &self.monitor.clone(),
            Instant::now() + Duration::from_secs(5),
        )?;
        monitor
            .write_all(b"cont\n")
            .context("failed to tell qemu to start the guest")
    }

    /// Everything the guest has written to its console so far.
    pub fn console(&self) -> String {
        fs::read(&self.console)
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\r', ""))
            .unwrap_or_default()
    }

    /// The console log's path.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// Waits until the console shows `marker`; fails if QEMU exits or the
    /// deadline passes first.
    pub fn wait_for_console(&mut self, marker: &str, deadline: Instant) -> Result<()> {
        loop {
            if self.console().contains(marker) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("qemu exited ({status}) before the console showed {marker:?}");
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for {marker:?} on the console");
            }
            if super::interrupted() {
                bail!("interrupted while waiting for {marker:?} on the console");
            }
            thread::sleep(POLL);
        }
    }

    /// Sends one line to the guest's control serial port.
    pub fn tell_guest(&mut self, line: &str) -> Result<()> {
        let mut control = self.connect(
            &self.control.clone(),
            Instant::now() + Duration::from_secs(5),
        )?;
        control
            .write_all(format!("{line}\n").as_bytes())
            .context("failed to write to the guest's control port")
    }

    /// Waits for QEMU to exit (the guest powered off); kills it at the
    /// deadline. Returns whether it exited by itself.
    pub fn wait_for_exit(&mut self, deadline: Instant) -> Result<bool> {
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline || super::interrupted() {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(false);
            }
            thread::sleep(POLL);
        }
    }

    fn connect(&mut self, socket: &Path, deadline: Instant) -> Result<UnixStream> {
        loop {
            if let Ok(stream) = UnixStream::connect(socket) {
                return Ok(stream);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "qemu exited ({status}) during start-up; see qemu.stderr next to the console log"
                );
            }
            if Instant::now() >= deadline {
                bail!("qemu did not open {} in time", socket.display());
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
