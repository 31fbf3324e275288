//! A small synchronous client: one request at a time over a std `TcpStream`, sent to the
//! port given (the server forwards to the owning shard). For the CLI and for tests that
//! run outside a glommio executor; it speaks the same protocol through the same codec.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{ok_body, ClientError, GetResult};
use crate::protocol::{
    decode_response, encode_request, Consistency, FrameHeader, QuorumMode, Request, Response,
    ResponseBody, ShardMap, Status, HEADER_LEN,
};

/// Largest response body accepted (a GET with many large siblings).
const RESPONSE_BODY_BYTES_MAX: u32 = 64 << 20;

pub struct BlockingClient {
    stream: TcpStream,
    addr: String,
    next_id: u32,
    /// R or W of the reads and writes it sends (default: the server's).
    consistency: Consistency,
    /// Sloppy (default) or strict quorum for the writes it sends.
    quorum: QuorumMode,
}

impl BlockingClient {
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self, ClientError> {
        let addr = format!("{host}:{port}");
        let io = |op: &'static str, addr: &str| {
            let addr = addr.to_string();
            move |source| ClientError::Io { op, addr, source }
        };
        let stream = TcpStream::connect(&addr).map_err(io("connect", &addr))?;
        stream.set_nodelay(true).map_err(io("set_nodelay", &addr))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("set_read_timeout", &addr))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io("set_write_timeout", &addr))?;
        Ok(Self {
            stream,
            addr,
            next_id: 1,
            consistency: Consistency::Default,
            quorum: QuorumMode::Sloppy,
        })
    }

    /// Sends later GET, PUT and DELETE requests at `consistency`.
    pub fn set_consistency(&mut self, consistency: Consistency) {
        self.consistency = consistency;
    }

    /// Sends later PUT and DELETE requests under sloppy or strict quorum.
    pub fn set_quorum(&mut self, quorum: QuorumMode) {
        self.quorum = quorum;
    }

    /// Sends one request and reads its response.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut frame = Vec::new();
        encode_request(request, id, &mut frame);
        self.send_raw(&frame)?;
        let (header, body) = self.read_frame()?;
        if header.request_id != id {
            return Err(ClientError::Protocol(format!(
                "response for request {} while waiting for {id}",
                header.request_id
            )));
        }
        decode_response(&header, body, request.opcode())
            .map_err(|e| ClientError::Protocol(e.message))
    }

    /// Writes raw bytes (tests use this to send malformed frames).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(bytes)
            .map_err(|source| ClientError::Io {
                op: "write",
                addr: self.addr.clone(),
                source,
            })
    }

    /// Reads one whole frame.
    pub fn read_frame(&mut self) -> Result<(FrameHeader, Bytes), ClientError> {
        let mut header_bytes = [0u8; HEADER_LEN];
        self.read_exact(&mut header_bytes)?;
        let header = FrameHeader::decode(&header_bytes)
            .map_err(|e| ClientError::Protocol(format!("bad response header: {e}")))?;
        if header.body_len > RESPONSE_BODY_BYTES_MAX {
            return Err(ClientError::Protocol(format!(
                "response body of {} bytes",
                header.body_len
            )));
        }
        let mut body = BytesMut::zeroed(header.body_len as usize);
        self.read_exact(&mut body)?;
        Ok((header, body.freeze()))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ClientError> {
        self.stream.read_exact(buf).map_err(|source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                ClientError::Closed(format!("{}: closed by the server", self.addr))
            } else {
                ClientError::Io {
                    op: "read",
                    addr: self.addr.clone(),
                    source,
                }
            }
        })
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        ok_body(self.request(&Request::Ping)?).map(|_| ())
    }

    pub fn get(&mut self, key: &[u8]) -> Result<GetResult, ClientError> {
        let response = self.request(&Request::Get {
            key: Bytes::copy_from_slice(key),
            consistency: self.consistency,
        })?;
        match (response.status, response.body) {
            (Status::Ok | Status::NotFound, ResponseBody::Get { context, values }) => {
                Ok(GetResult { values, context })
            }
            (Status::NotFound, _) => Ok(GetResult::default()),
            (status, _) => Err(ClientError::Server {
                status,
                message: response.message,
            }),
        }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8], context: &[u8]) -> Result<Bytes, ClientError> {
        self.write(Request::Put {
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            context: Bytes::copy_from_slice(context),
            consistency: self.consistency,
            quorum: self.quorum,
        })
    }

    pub fn delete(&mut self, key: &[u8], context: &[u8]) -> Result<Bytes, ClientError> {
        self.write(Request::Delete {
            key: Bytes::copy_from_slice(key),
            context: Bytes::copy_from_slice(context),
            consistency: self.consistency,
            quorum: self.quorum,
        })
    }

    pub fn shard_map(&mut self) -> Result<ShardMap, ClientError> {
        match ok_body(self.request(&Request::ShardMap)?)? {
            ResponseBody::ShardMap(map) => Ok(map),
            _ => Err(ClientError::Protocol(
                "SHARD_MAP answered without a map".into(),
            )),
        }
    }

    fn write(&mut self, request: Request) -> Result<Bytes, ClientError> {
        match ok_body(self.request(&request)?)? {
            ResponseBody::Written { context } => Ok(context),
            _ => Err(ClientError::Protocol(
                "write answered without a context".into(),
            )),
        }
    }
}
