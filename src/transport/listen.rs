//! Opening listeners: IPv4 and IPv6 side by side, IPv6 optional.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel may queue per listener (it caps this at
/// `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// Opens a listener on each address, for either transport (the tokio
/// server converts them).
///
/// IPv6 sockets are IPv6-only, so `0.0.0.0:1688` and `[::]:1688` can be
/// listened on together. An IPv6 address the machine cannot use (IPv6
/// disabled, `::1` absent) is skipped, so a default of "`127.0.0.1` and
/// `[::1]`" keeps working on an IPv4-only machine; compare the returned
/// listeners' `local_addr` with what was asked to see which were skipped.
/// Port 0 picks a free port per listener.
///
/// ```
/// use kms_activation::transport::bind;
///
/// let listeners = bind(&["127.0.0.1:0".parse()?, "[::1]:0".parse()?])?;
/// assert!(!listeners.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// The first error other than an unusable IPv6 address (address in use,
/// permission denied), or [`io::ErrorKind::AddrNotAvailable`] when no
/// address could be used.
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    let mut skipped = None;
    for &addr in addrs {
        match bind_one(addr) {
            Ok(listener) => listeners.push(listener),
            Err(e) if addr.is_ipv6() && ipv6_unusable(&e) => skipped = Some(e),
            Err(e) => return Err(e),
        }
    }
    if listeners.is_empty() {
        return Err(skipped.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::AddrNotAvailable, "no address to listen on")
        }));
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Errors that mean "this machine has no such IPv6 address or no IPv6".
fn ipv6_unusable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
    ) || e.raw_os_error().is_some_and(|code| {
        // EAFNOSUPPORT (97) and EPROTONOSUPPORT (93) on Linux; 47 and 43 on the BSDs.
        matches!(code, 97 | 93 | 47 | 43)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_ipv6_is_skipped() {
        assert!(ipv6_unusable(&io::Error::from(
            io::ErrorKind::AddrNotAvailable
        )));
        assert!(ipv6_unusable(&io::Error::from_raw_os_error(97)));
        assert!(!ipv6_unusable(&io::Error::from(io::ErrorKind::AddrInUse)));
        assert!(!ipv6_unusable(&io::Error::from(
            io::ErrorKind::PermissionDenied
        )));
    }

    #[test]
    fn an_address_in_use_is_an_error_an_absent_ipv6_address_is_skipped() {
        let first = bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let taken = first[0].local_addr().unwrap();
        assert!(bind(&[taken]).is_err());
        // A machine without the address: an IPv6 one is skipped, not fatal.
        let skipped = bind(&[
            "127.0.0.1:0".parse().unwrap(),
            "[2001:db8::1]:0".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(skipped.len(), 1);
    }
}
