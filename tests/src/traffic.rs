//! Real TCP and UDP traffic between the namespaces, and nmap for packets no
//! socket API sends (an unsolicited SYN-ACK).

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use befund_testbed::netns::Netns;
use socket2::{Domain, Socket, Type};

/// How long a connection attempt may take. A SYN that the filter drops never
/// completes however long one waits; this only bounds the test's run time.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP listener in a namespace that echoes what it receives and counts
/// the connections it accepted. Stopped on drop.
pub struct EchoServer {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let listener = ns
            .enter(|| TcpListener::bind(addr))
            .with_context(|| format!("listen on {addr}"))?;
        listener.set_nonblocking(true)?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let accepted = accepted.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            thread::spawn(move || echo(stream));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            })
        };
        Ok(Self {
            accepted,
            stop,
            thread: Some(thread),
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let mut buf = [0; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Opens a TCP connection from `ns` (from `source` when given, any port) to
/// `target`.
pub fn connect(ns: &Netns, source: Option<IpAddr>, target: SocketAddr) -> io::Result<TcpStream> {
    connect_from(ns, source.map(|ip| SocketAddr::new(ip, 0)), target)
}

/// Opens a TCP connection from `ns`, bound to `source` if given.
pub fn connect_from(
    ns: &Netns,
    source: Option<SocketAddr>,
    target: SocketAddr,
) -> io::Result<TcpStream> {
    connect_within(ns, source, target, CONNECT_TIMEOUT)
}

/// Like [`connect_from`] with another bound on the attempt.
pub fn connect_within(
    ns: &Netns,
    source: Option<SocketAddr>,
    target: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    ns.enter(|| {
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
        if let Some(source) = source {
            socket.set_reuse_address(true)?;
            socket.bind(&source.into())?;
        }
        socket.connect_timeout(&target.into(), timeout)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        Ok(stream)
    })
}

/// Sends `message` and reads the echo back.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    stream.write_all(message)?;
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back)?;
    if back != message {
        return Err(io::Error::other("echo differs from the message"));
    }
    Ok(())
}

/// A connection from `ns` to `target` that completes and echoes.
pub fn can_talk(ns: &Netns, source: Option<IpAddr>, target: SocketAddr) -> Result<()> {
    let mut stream = connect(ns, source, target).with_context(|| format!("connect to {target}"))?;
    round_trip(&mut stream, b"befund").with_context(|| format!("echo with {target}"))
}

/// A UDP socket bound inside `ns`.
pub fn udp(ns: &Netns, addr: SocketAddr) -> Result<UdpSocket> {
    let socket = ns
        .enter(|| UdpSocket::bind(addr))
        .with_context(|| format!("bind UDP {addr}"))?;
    socket.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    Ok(socket)
}

/// A UDP echo responder in a namespace, stopped on drop.
pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Echoes every datagram received on `addr` in `ns`.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let socket = udp(ns, addr)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = [0; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], peer);
                    }
                }
            })
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a raw SYN-ACK from `source_port` in `ns` to `target:port` with nmap
/// and returns the port state it reports: `closed` when the target's kernel
/// answered with a reset (the packet got through), `filtered` when nothing
/// came back (the packet was dropped).
pub fn nmap_syn_ack(ns: &Netns, source_port: u16, target: IpAddr, port: u16) -> Result<String> {
    let out = ns
        .command("nmap")
        .args([
            "-n",
            "-Pn",
            "-sS",
            "--scanflags",
            "SYNACK",
            "--max-retries",
            "1",
        ])
        .args(["-g", &source_port.to_string(), "-p", &port.to_string()])
        .args(["-oG", "-", &target.to_string()])
        .output()?;
    parse_nmap_state(&out, port)
}

fn parse_nmap_state(out: &std::process::Output, port: u16) -> Result<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let marker = format!("{port}/");
    let state = text
        .split("Ports: ")
        .nth(1)
        .and_then(|ports| ports.strip_prefix(&marker))
        .and_then(|rest| rest.split('/').next());
    match state {
        Some(state) if out.status.success() => Ok(state.to_owned()),
        _ => bail!(
            "unexpected nmap output: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Whether `nmap` is installed (`cargo xtask setup` installs it).
pub fn nmap_available() -> bool {
    Command::new("nmap").arg("--version").output().is_ok()
}
