//! reefd's side of the monitor socket: blocking, one request at a time per connection.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to pod monitor at {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talk to pod monitor")]
    Io(#[source] std::io::Error),
    #[error("pod monitor sent an invalid response: {0}")]
    BadResponse(String),
}

pub struct MonitorClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl MonitorClient {
    pub fn connect(socket: &Path) -> Result<MonitorClient, ClientError> {
        let stream = UnixStream::connect(socket)
            .map_err(|source| ClientError::Connect { path: socket.display().to_string(), source })?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(ClientError::Io)?;
        let writer = stream.try_clone().map_err(ClientError::Io)?;
        Ok(MonitorClient { reader: BufReader::new(stream), writer })
    }

    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(request).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(ClientError::Io)?;
        let mut reply = String::new();
        let n = self.reader.read_line(&mut reply).map_err(ClientError::Io)?;
        if n == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "monitor closed the connection",
            )));
        }
        serde_json::from_str(&reply).map_err(|e| ClientError::BadResponse(e.to_string()))
    }
}
