//! The socket loops both transports share, written once over [`Wire`]: the
//! tokio transport awaits them, the blocking one runs them with
//! `block_on` (its sockets answer at once, so each future is ready on its
//! first poll).

use std::io;

use super::session::{ClientSession, READ_CHUNK};
use super::{Error, Outcome};
use crate::host::HostConnection;

/// A connected socket as the shared loops use it.
pub(crate) trait Wire {
    /// Writes some of `bytes`; returns how many (0: the peer takes no more).
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Reads into `buf`; returns how many bytes (0: the peer closed).
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// An engine's queue of bytes to send.
pub(crate) trait Queued {
    /// The bytes waiting to be sent.
    fn queued(&self) -> &[u8];
    /// Drops the first `n` of them, sent.
    fn sent(&mut self, n: usize);
}

impl Queued for HostConnection {
    fn queued(&self) -> &[u8] {
        self.transmit()
    }

    fn sent(&mut self, n: usize) {
        self.advance_transmit(n);
    }
}

impl Queued for ClientSession {
    fn queued(&self) -> &[u8] {
        self.transmit()
    }

    fn sent(&mut self, n: usize) {
        self.advance_transmit(n);
    }
}

/// Writes everything `queue` holds; returns how many bytes. A peer that
/// takes nothing is [`io::ErrorKind::WriteZero`].
pub(crate) async fn write_output(
    wire: &mut impl Wire,
    queue: &mut impl Queued,
) -> io::Result<usize> {
    let mut written = 0;
    while !queue.queued().is_empty() {
        let n = wire.write(queue.queued()).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        queue.sent(n);
        written += n;
    }
    Ok(written)
}

/// One client exchange: sends what the session queued (the request, and the
/// bind on a new connection) and reads until the request's outcome. The
/// caller bounds it in time.
pub(crate) async fn exchange(
    wire: &mut impl Wire,
    session: &mut ClientSession,
) -> Result<Outcome, Error> {
    loop {
        match write_output(wire, session).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WriteZero => return Err(Error::Closed),
            Err(e) => return Err(io_error(e)),
        }
        let mut buf = [0u8; READ_CHUNK];
        let n = match wire.read(&mut buf).await {
            Ok(0) => return Err(Error::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        if let Some(outcome) = session.ingest(buf.get(..n).unwrap_or_default())? {
            return Ok(outcome);
        }
    }
}

/// A socket error as a client error: a timed-out socket is [`Error::Timeout`].
pub(crate) fn io_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::Io(e),
    }
}

#[cfg(feature = "tokio")]
impl Wire for ::tokio::net::TcpStream {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        ::tokio::io::AsyncWriteExt::write(self, bytes).await
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        ::tokio::io::AsyncReadExt::read(self, buf).await
    }
}

#[cfg(feature = "blocking")]
impl Wire for std::net::TcpStream {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        io::Write::write(self, bytes)
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(self, buf)
    }
}

/// A blocking socket whose every read and write ends by `deadline`: one
/// client exchange.
#[cfg(feature = "blocking")]
pub(crate) struct Deadlined<'a> {
    /// The socket.
    pub(crate) stream: &'a mut std::net::TcpStream,
    /// When the exchange must be over.
    pub(crate) deadline: std::time::Instant,
}

#[cfg(feature = "blocking")]
impl Deadlined<'_> {
    /// What is left until the deadline; none left is a timeout.
    fn left(&self) -> io::Result<std::time::Duration> {
        let left = self
            .deadline
            .saturating_duration_since(super::clock::instant());
        if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            Ok(left)
        }
    }
}

#[cfg(feature = "blocking")]
impl Wire for Deadlined<'_> {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        io::Write::write(self.stream, bytes)
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        io::Read::read(self.stream, buf)
    }
}
