//! `GET /metrics` over HTTP/1.1, served by hyper: one read-only route on the address
//! `--metrics` names (loopback unless the operator names another, see
//! [`super::metrics::parse_listen`]), no keep-alive, and bounded in header size, time and
//! number of connections, so a scraper gone wrong cannot hold the daemon's memory or sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::metrics::{self, Metrics};

/// Largest request head read (hyper's smallest buffer): a scrape needs a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head, and to be answered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 16;

/// Serves `metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of fds and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (metrics, open) = (metrics.clone(), open.clone());
        tokio::spawn(async move {
            let service = service_fn(|req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .max_buf_size(MAX_REQUEST)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn).await;
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// The response to one request; hyper leaves out the body of a HEAD response.
fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, "text/plain".parse().expect("static header"));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(ALLOW, "GET, HEAD".parse().expect("static header"));
        return r;
    }
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        metrics::CONTENT_TYPE.parse().expect("static header"),
    );
    r
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Sends `request` raw and returns the whole response as text.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new("tp_btf", &[("cap_capable", true)], 1024, 0));
        let server = tokio::spawn(serve(listener, metrics));

        let ok = exchange(addr, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("application/openmetrics-text"), "{ok}");
        assert!(
            ok.contains("capspy_hook_info") && ok.ends_with("# EOF\n"),
            "{ok}"
        );
        assert!(
            ok.to_ascii_lowercase().contains("connection: close"),
            "{ok}"
        );

        let head = exchange(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "a HEAD response has no body: {head}"
        );

        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );

        let missing = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

        let junk = exchange(addr, b"NOT HTTP\r\n\r\n").await;
        assert!(junk.starts_with("HTTP/1.1 400"), "{junk}");

        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 4 * MAX_REQUEST));
        huge.extend_from_slice(b"\r\n\r\n");
        let refused = exchange(addr, &huge).await;
        assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
        server.abort();
    }
}
