//! `tcp-relay`: a byte relay between the load tool and an upstream, for the floor of any proxy.
//!
//! It accepts connections, opens one to the upstream for each, and copies bytes both ways
//! (`TCP_NODELAY` on both sides, tokio's multi-threaded runtime like weir's). It parses
//! nothing, so what it adds over the direct path is the cost of one more process and one more
//! loopback hop on this machine: the least any HTTP proxy can add. Prints `listening on
//! http://ADDR` once bound.

use std::net::SocketAddr;

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(name = "tcp-relay", about = "A byte relay, the floor of any proxy")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to relay to.
    #[arg(long)]
    to: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (mut client, _) = listener.accept().await?;
        let to = args.to;
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(to).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            // Either side closing ends the pair; errors are a closed connection here.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}
