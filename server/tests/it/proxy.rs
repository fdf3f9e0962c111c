//! A TCP proxy between a client and the server (or the server and the
//! chain) that can cut every open connection, refuse new ones, or stall
//! them, to test what happens when the network breaks.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::broadcast,
};

/// A running proxy to one target.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    cut: broadcast::Sender<()>,
    refusing: Arc<AtomicBool>,
    // Only the chain tests (feature embedded-chain) stall connections.
    #[cfg_attr(not(feature = "embedded-chain"), allow(dead_code))]
    stalled: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a loopback port and forwards to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = broadcast::channel(4);
        let refusing = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let (cut_tx, refuse, stall) = (cut.clone(), refusing.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(forward(inbound, target, cut_tx.subscribe(), stall.clone()));
            }
        });
        Proxy {
            addr,
            cut,
            refusing,
            stalled,
        }
    }

    /// Drops every open connection (both directions, at once).
    pub(crate) fn cut(&self) {
        let _ = self.cut.send(());
    }

    /// While set, new connections are accepted and dropped at once.
    pub(crate) fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// While set, connections stay open but no byte goes through either
    /// way: the peer hangs, as behind a broken middlebox.
    #[cfg_attr(not(feature = "embedded-chain"), allow(dead_code))]
    pub(crate) fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }
}

async fn forward(
    inbound: TcpStream,
    target: SocketAddr,
    mut cut: broadcast::Receiver<()>,
    stalled: Arc<AtomicBool>,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::select! {
        _ = pump(in_read, out_write, stalled.clone()) => {}
        _ = pump(out_read, in_write, stalled) => {}
        _ = cut.recv() => {}
    }
}

/// Copies one direction, holding everything while stalled.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, stalled: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_unstalled(&stalled).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        wait_unstalled(&stalled).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_unstalled(stalled: &AtomicBool) {
    while stalled.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
