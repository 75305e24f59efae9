//! The client's address on every request: one gateway service per connection, which puts
//! the connection's peer address ([`PeerAddr`]) on each of its requests, for the admin guard
//! (loopback only without an admin key) and per-client-IP limits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use tower::Service;

use super::{Gateway, PeerAddr};

/// Makes a [`WithPeer`] for each accepted connection.
#[derive(Debug, Clone)]
pub struct PerConnection {
    gateway: Gateway,
}

impl PerConnection {
    pub fn new(gateway: Gateway) -> Self {
        Self { gateway }
    }
}

impl<'a, L> Service<IncomingStream<'a, L>> for PerConnection
where
    L: Listener<Addr = SocketAddr>,
{
    type Response = WithPeer;
    type Error = Infallible;
    type Future = std::future::Ready<Result<WithPeer, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(WithPeer {
            inner: self.gateway.clone(),
            peer: PeerAddr(*stream.remote_addr()),
        }))
    }
}

/// The gateway for one connection.
#[derive(Debug, Clone)]
pub struct WithPeer {
    inner: Gateway,
    peer: PeerAddr,
}

impl Service<Request> for WithPeer {
    type Response = Response;
    type Error = Infallible;
    type Future = <Gateway as Service<Request>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        self.inner.call(req)
    }
}
