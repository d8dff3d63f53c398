//! One HTTP/1.0 `GET` on a unix socket, for engines whose API is plain HTTP there (CRI-O's
//! inspect endpoint, podman's libpod API): the answer ends when the server closes, so there is
//! no chunked encoding to decode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TIMEOUT: Duration = Duration::from_secs(5);
/// An inspect answer is a few KiB; more is not an engine's.
const MAX_RESPONSE: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered {0}")]
    Status(String),
}

/// Status code (200 or 404; others are errors) and body of `GET path` on `socket`.
pub async fn get(socket: &Path, path: &str) -> Result<(u16, Vec<u8>), HttpError> {
    let io = |source| HttpError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let exchange = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await.map_err(io)?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .map_err(io)?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(io)?;
        Ok::<_, HttpError>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout(TIMEOUT))??;
    split_response(&response)
}

/// Status code and body of an HTTP/1.x response.
fn split_response(response: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Status("no HTTP header".into()))?;
    let head = String::from_utf8_lossy(&response[..end]);
    let status_line = head.lines().next().unwrap_or_default();
    let refused = || HttpError::Status(crate::model::text::printable(status_line).into_owned());
    let code = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(refused)?;
    if code != 200 && code != 404 {
        return Err(refused());
    }
    Ok((code, response[end + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}";
        assert_eq!(split_response(ok).unwrap(), (200, b"{}".to_vec()));
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\ncontainer not found";
        assert_eq!(split_response(missing).unwrap().0, 404);
        assert!(split_response(b"HTTP/1.1 500 Internal\r\n\r\n").is_err());
        assert!(split_response(b"garbage").is_err());
        assert!(split_response(b"HTTP/1.1 2\r\n\r\n").is_err());
    }
}
