//! A TCP proxy between a client and the server that can cut every open
//! connection, to test what happens when the network breaks mid-stream.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

/// A running proxy to one target.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: broadcast::Sender<()>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = broadcast::channel(4);
        let refusing = Arc::new(AtomicBool::new(false));
        let (cut_tx, refuse) = (cut.clone(), refusing.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(forward(inbound, target, cut_tx.subscribe()));
            }
        });
        Proxy {
            addr,
            cut,
            refusing,
        }
    }

    /// Drops every open connection (both directions, at once).
    pub fn cut(&self) {
        let _ = self.cut.send(());
    }

    /// While set, new connections are accepted and dropped at once.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, mut cut: broadcast::Receiver<()>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.recv() => {}
    }
}
