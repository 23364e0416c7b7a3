//! Per-connection shares of the IngestEvents stream slots
//! (GRPC_MAX_STREAMS_PER_CONNECTION): a connection, known by its peer address, holds at
//! most its share of the GRPC_MAX_STREAMS slots, so streams that trickle requests on
//! one connection cannot take every slot and lock out producers on other connections.
//! A [`Share`] is given back when its stream ends.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

/// The streams each connection holds.
#[derive(Debug)]
pub struct Shares {
    per_connection: usize,
    held: Mutex<HashMap<SocketAddr, usize>>,
}

/// One stream's place in its connection's share.
#[derive(Debug)]
pub struct Share {
    shares: Arc<Shares>,
    peer: Option<SocketAddr>,
}

impl Shares {
    pub fn new(per_connection: usize) -> Arc<Self> {
        Arc::new(Self {
            per_connection,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The streams one connection may hold.
    pub fn per_connection(&self) -> usize {
        self.per_connection
    }

    /// A place for one more stream of the connection from `peer`, or None when the
    /// connection holds its whole share. A stream without a peer address (not over
    /// TCP) is not counted.
    pub fn take(self: &Arc<Self>, peer: Option<SocketAddr>) -> Option<Share> {
        if let Some(addr) = peer {
            let mut held = self.held.lock().expect("stream shares");
            let n = held.entry(addr).or_insert(0);
            if *n >= self.per_connection {
                return None;
            }
            *n += 1;
        }
        Some(Share {
            shares: self.clone(),
            peer,
        })
    }

    /// Streams the connection from `peer` holds now.
    pub fn held(&self, peer: SocketAddr) -> usize {
        let held = self.held.lock().expect("stream shares");
        held.get(&peer).copied().unwrap_or(0)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let Some(addr) = self.peer else { return };
        let mut held = self.shares.held.lock().expect("stream shares");
        if let Some(n) = held.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                held.remove(&addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_holds_at_most_its_share_and_gets_places_back() {
        let shares = Shares::new(2);
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:1000".parse().unwrap(),
            "10.0.0.1:1001".parse().unwrap(),
        );
        let a1 = shares.take(Some(a)).unwrap();
        let a2 = shares.take(Some(a)).unwrap();
        assert!(shares.take(Some(a)).is_none(), "a's share is spent");
        let b1 = shares
            .take(Some(b))
            .expect("another connection has its own share");
        assert!(
            shares.take(None).is_some(),
            "streams without a peer are not counted"
        );
        drop(a1);
        assert_eq!(shares.held(a), 1);
        let a3 = shares
            .take(Some(a))
            .expect("a place given back is taken again");
        drop((a2, a3));
        assert_eq!(shares.held(a), 0);
        assert_eq!(shares.held(b), 1);
        drop(b1);
        assert!(
            shares.held.lock().unwrap().is_empty(),
            "no entry is left behind"
        );
    }
}
