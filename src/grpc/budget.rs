//! The byte budget of IngestEvents (GRPC_MAX_BUFFERED_BYTES): every request's bytes are
//! reserved from one semaphore when its gRPC length prefix arrives, before its body is
//! buffered, and stay reserved until the request's ack is resolved. While the budget is
//! spent, a stream's body is not read, so HTTP/2 flow control holds its producer back;
//! memory for requests read from the wire, queued and in batches stays within the
//! budget whatever the number of streams and the size of their requests.
use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tonic::{
    body::Body,
    codegen::{http, Service},
    server::NamedService,
    Status,
};

/// The budget shared by every stream.
#[derive(Clone, Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    total: usize,
    max_message: usize,
}

impl Budget {
    /// `total` bytes for all streams; messages over `max_message` are refused by the
    /// decoder without being buffered, so they reserve nothing.
    pub fn new(total: usize, max_message: usize) -> Self {
        Self {
            sem: Arc::new(Semaphore::new(total)),
            total,
            max_message,
        }
    }

    /// What a message of `len` body bytes reserves: its prefix and body, at most the
    /// whole budget.
    pub fn cost(&self, len: usize) -> usize {
        if len > self.max_message {
            0
        } else {
            (len + 5).min(self.total)
        }
    }
}

/// The reservations of one stream's messages that arrived and were not yet taken by
/// the reader, and whether the stream's body waits for the budget; shared between the
/// stream's body and its reader.
#[derive(Clone, Debug, Default)]
pub struct Held(Arc<(Mutex<Option<OwnedSemaphorePermit>>, AtomicBool)>);

impl Held {
    /// True while the stream's next message waits for room in the budget (the stream
    /// is then not idle: its producer has sent, the server holds it back).
    pub fn waiting(&self) -> bool {
        self.0 .1.load(Ordering::SeqCst)
    }

    fn set_waiting(&self, waiting: bool) {
        self.0 .1.store(waiting, Ordering::SeqCst);
    }

    fn add(&self, permit: OwnedSemaphorePermit) {
        let mut held = self.0 .0.lock().expect("held permits");
        match held.as_mut() {
            Some(p) => p.merge(permit),
            None => *held = Some(permit),
        }
    }

    /// Takes the reservation of one message of `cost` bytes (see [`Budget::cost`]).
    pub fn take(&self, cost: usize) -> Option<OwnedSemaphorePermit> {
        let mut held = self.0 .0.lock().expect("held permits");
        let p = held.as_mut()?;
        if cost >= p.num_permits() {
            held.take()
        } else {
            p.split(cost)
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body that reserves each message's bytes before passing on the frame in
/// which its length prefix completes.
struct BudgetBody {
    inner: Body,
    budget: Budget,
    held: Held,
    /// The bytes of the current length prefix read so far.
    prefix: [u8; 5],
    got: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// A frame waiting for its reservation.
    pending: Option<(Frame<Bytes>, Acquire)>,
}

impl BudgetBody {
    /// Walks `data` and returns the bytes to reserve for the messages whose prefix
    /// completes in it.
    fn account(&mut self, data: &[u8]) -> usize {
        let (mut need, mut i) = (0, 0);
        while i < data.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len() - i);
                self.remaining -= take;
                i += take;
                continue;
            }
            self.prefix[self.got] = data[i];
            self.got += 1;
            i += 1;
            if self.got == 5 {
                let len = u32::from_be_bytes(self.prefix[1..5].try_into().expect("4 bytes"));
                self.remaining = len as usize;
                need += self.budget.cost(len as usize);
                self.got = 0;
            }
        }
        need.min(self.budget.total)
    }
}

impl http_body::Body for BudgetBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some((_, acquire)) = this.pending.as_mut() {
            let permit = match acquire.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(p)) => p,
                Poll::Ready(Err(_)) => {
                    return Poll::Ready(Some(Err(Status::unavailable("server is shutting down"))))
                }
            };
            this.held.add(permit);
            this.held.set_waiting(false);
            let (frame, _) = this.pending.take().expect("pending frame");
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let need = frame.data_ref().map_or(0, |d| this.account(d));
        if need == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        let acquire = Box::pin(this.budget.sem.clone().acquire_many_owned(need as u32));
        this.pending = Some((frame, acquire));
        this.held.set_waiting(true);
        self.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }
}

/// A gRPC service whose request bodies reserve from the budget; the reader finds the
/// stream's [`Held`] in the request's extensions.
#[derive(Clone)]
pub struct Budgeted<S> {
    pub inner: S,
    pub budget: Budget,
}

impl<S: NamedService> NamedService for Budgeted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Budgeted<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let held = Held::default();
        let (mut parts, inner) = req.into_parts();
        parts.extensions.insert(held.clone());
        let body = BudgetBody {
            inner,
            budget: self.budget.clone(),
            held,
            prefix: [0; 5],
            got: 0,
            remaining: 0,
            pending: None,
        };
        self.inner
            .call(http::Request::from_parts(parts, Body::new(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(total: usize) -> BudgetBody {
        BudgetBody {
            inner: Body::empty(),
            budget: Budget::new(total, 1000),
            held: Held::default(),
            prefix: [0; 5],
            got: 0,
            remaining: 0,
            pending: None,
        }
    }

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend(len.to_be_bytes());
        m.extend(std::iter::repeat_n(7, len as usize));
        m
    }

    #[test]
    fn each_message_reserves_its_prefix_and_body_when_its_prefix_completes() {
        let mut b = body(10_000);
        let wire: Vec<u8> = [message(10), message(0), message(300)].concat();
        // Split inside the third prefix: the first two are reserved with the first part.
        assert_eq!(b.account(&wire[..22]), 15 + 5);
        assert_eq!(b.account(&wire[22..]), 305);
        assert_eq!(b.account(&message(20)[..3]), 0);
    }

    #[test]
    fn oversize_messages_reserve_nothing_and_none_reserves_over_the_budget() {
        let mut b = body(100);
        assert_eq!(b.account(&message(2000)[..5]), 0);
        let mut b = body(100);
        assert_eq!(b.account(&message(500)), 100);
    }

    #[tokio::test]
    async fn held_reservations_are_taken_per_message_and_returned_on_drop() {
        let sem = Arc::new(Semaphore::new(100));
        let held = Held::default();
        held.add(sem.clone().acquire_many_owned(30).await.unwrap());
        held.add(sem.clone().acquire_many_owned(20).await.unwrap());
        let first = held.take(30).unwrap();
        assert_eq!(first.num_permits(), 30);
        assert_eq!(sem.available_permits(), 50);
        drop(first);
        assert_eq!(sem.available_permits(), 80);
        drop(held);
        assert_eq!(sem.available_permits(), 100);
    }
}
