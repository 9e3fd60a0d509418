//! A TCP proxy the test controls, to cut the network silently.
//!
//! [`TcpProxy`] listens on a free loopback port and forwards every connection to an upstream
//! address. [`TcpProxy::cut`] stops forwarding **without closing anything**: the bytes in
//! flight stay in kernel buffers, no FIN or RST is sent, each side's kernel keeps
//! acknowledging, exactly like a network whose packets vanish behind a NAT or a load
//! balancer. Connections open at the cut stay frozen for good (as when the path's state is
//! lost); connections opened while cut are accepted and then blackholed until
//! [`TcpProxy::heal`], after which new connections forward again. Dropping the proxy closes
//! everything.
//!
//! ```text
//! client ──► 127.0.0.1:proxy_port ──(generation g: forwards while not cut and g current)──► upstream
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Whether forwarding is cut, and the generation that may forward (bumped by each cut, which
/// freezes every older connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gate {
    cut: bool,
    generation: u64,
}

impl Gate {
    fn open_for(&self, generation: u64) -> bool {
        !self.cut && self.generation == generation
    }
}

/// A forwarding proxy on a free loopback port; see the module doc.
pub struct TcpProxy {
    port: u16,
    gate: Arc<watch::Sender<Gate>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` (a loopback port).
    pub fn start(upstream_port: u16) -> TcpProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("start the proxy's runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the proxy's port");
        let port = listener.local_addr().expect("proxy address").port();
        let gate = Arc::new(watch::Sender::new(Gate {
            cut: false,
            generation: 0,
        }));
        let upstream: SocketAddr = ([127, 0, 0, 1], upstream_port).into();
        runtime.spawn(accept_loop(listener, upstream, gate.clone()));
        TcpProxy {
            port,
            gate,
            runtime: Some(runtime),
        }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops forwarding silently: open connections freeze for good, new ones hang.
    pub fn cut(&self) {
        self.gate.send_modify(|g| {
            g.cut = true;
            g.generation += 1;
        });
    }

    /// New connections forward again (the ones frozen by [`TcpProxy::cut`] stay frozen).
    pub fn heal(&self) {
        self.gate.send_modify(|g| g.cut = false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, gate: Arc<watch::Sender<Gate>>) {
    while let Ok((client, _)) = listener.accept().await {
        let generation = gate.borrow().generation;
        tokio::spawn(forward(client, upstream, gate.subscribe(), generation));
    }
}

/// Waits until `generation` may forward; never returns for a frozen connection.
async fn wait_open(gate: &mut watch::Receiver<Gate>, generation: u64) {
    if gate.wait_for(|g| g.open_for(generation)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut gate: watch::Receiver<Gate>,
    generation: u64,
) {
    wait_open(&mut gate, generation).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, gate.clone(), generation));
    pump(server_read, client_write, gate, generation).await;
    let _ = up.await;
}

/// Copies one direction while the gate is open for `generation`; holds the bytes otherwise.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<Gate>,
    generation: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        wait_open(&mut gate, generation).await;
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // A cut while waiting for bytes: stop reading, so nothing more is taken in.
            _ = gate.wait_for(|g| !g.open_for(generation)) => continue,
        };
        wait_open(&mut gate, generation).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
