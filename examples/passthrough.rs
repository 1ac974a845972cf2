//! The framework floor: a bare Pingora `ProxyHttp` pass-through, built with the same
//! settings as keygate (mimalloc, threads, upstream keep-alive pool, peer timeouts),
//! for the load benchmark to compare keygate against.
//!
//! With `reject` as the fourth argument it answers every request with a fixed 401 written
//! in `request_filter` (keep-alive kept), the floor for keygate's rejection path.
//!
//! Run with: `cargo run --release --example passthrough -- 127.0.0.1:8090 127.0.0.1:8000 [threads] [reject]`

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::Opt;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use pingora::Result;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    peer: HttpPeer,
    reject: bool,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if !self.reject {
            return Ok(false);
        }
        let body = bytes::Bytes::from_static(br#"{"code":"invalid_api_key"}"#);
        let mut resp = pingora::http::ResponseHeader::build(401, Some(2))?;
        resp.insert_header("content-type", "application/problem+json")?;
        resp.insert_header("content-length", body.len())?;
        session.write_response_header(Box::new(resp), false).await?;
        session.write_response_body(Some(body), true).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: passthrough LISTEN UPSTREAM [THREADS] [reject]");
        std::process::exit(2);
    };
    let threads = args
        .get(3)
        .and_then(|t| t.parse().ok())
        .unwrap_or(keygate::config::DEFAULT_THREADS);
    let addr: SocketAddr = upstream.parse().expect("UPSTREAM is ip:port");
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(2));
    peer.options.read_timeout = Some(Duration::from_secs(30));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    let server_config = keygate::config::ServerConfig {
        threads,
        ..Default::default()
    };
    let mut server =
        Server::new_with_opt_and_conf(Opt::default(), keygate::server::server_conf(&server_config));
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(
        &server.configuration,
        Passthrough {
            peer,
            reject: args.get(4).is_some_and(|a| a == "reject"),
        },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
