//! Many datagrams per system call: `recvmmsg`/`sendmmsg` on a tokio UDP
//! socket (Linux), one datagram per call elsewhere. The relay's driver
//! reads and writes in batches with these, so a busy relay makes a few
//! system calls and channel hand-offs per batch instead of per packet.
//!
//! Both calls are non-blocking (`try_*`): they return `WouldBlock` when
//! nothing is ready, and the caller awaits readiness on the socket.

use std::io;
use std::net::SocketAddr;
use tokio::net::UdpSocket;

/// Datagrams received at once, each in its own slot of one buffer.
#[derive(Debug)]
pub struct RecvBatch {
    /// Bytes a slot holds (longer datagrams are cut, as `recv_from` does).
    slot: usize,
    buf: Vec<u8>,
    /// Length and source of each datagram received, `len()` of them.
    lens: Vec<usize>,
    from: Vec<SocketAddr>,
    n: usize,
}

impl RecvBatch {
    /// Room for `count` datagrams of up to `slot` bytes.
    pub fn new(count: usize, slot: usize) -> Self {
        RecvBatch {
            slot,
            buf: vec![0; count * slot],
            lens: vec![0; count],
            from: vec![SocketAddr::from(([0, 0, 0, 0], 0)); count],
            n: 0,
        }
    }

    /// Datagrams held from the last receive.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// How many datagrams one receive can return.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Rewrite the sources received (e.g. IPv4-mapped to IPv4 with
    /// `crate::socket::canonical`).
    pub fn map_sources(&mut self, f: impl Fn(SocketAddr) -> SocketAddr) {
        for a in &mut self.from[..self.n] {
            *a = f(*a);
        }
    }

    /// Datagram `i` (below `len()`): its source and bytes.
    pub fn get(&self, i: usize) -> (SocketAddr, &[u8]) {
        let at = i * self.slot;
        (self.from[i], &self.buf[at..at + self.lens[i]])
    }
}

/// Receive up to `b.capacity()` datagrams waiting on `sock` without
/// blocking (`WouldBlock` when none). Sources are as the socket gives
/// them (IPv4-mapped on a dual-stack socket).
pub fn try_recv_batch(sock: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
    b.n = 0;
    let n = sock.try_io(tokio::io::Interest::READABLE, || imp::recv(sock, b))?;
    b.n = n;
    Ok(n)
}

/// Send `msgs` from `sock` without blocking; returns how many left (a
/// prefix; `WouldBlock` when not even the first could go). A datagram the
/// kernel refuses outright (an unreachable destination) counts as sent,
/// as with `send_to`, whose error the caller would only log.
pub fn try_send_batch(sock: &UdpSocket, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    sock.try_io(tokio::io::Interest::WRITABLE, || imp::send(sock, msgs))
}

/// Send all of `msgs`, waiting for room when the socket is full; returns
/// how many the kernel refused (each skipped, the rest sent).
pub async fn send_batch(sock: &UdpSocket, mut msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let mut refused = 0;
    while !msgs.is_empty() {
        match try_send_batch(sock, msgs) {
            Ok(n) => msgs = &msgs[n.max(1)..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => {
                // One bad destination: skip it, keep the rest.
                tracing::debug!(dst = %msgs[0].0, "send: {e}");
                refused += 1;
                msgs = &msgs[1..];
            }
        }
    }
    Ok(refused)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::RecvBatch;
    use socket2::{SockAddr, SockAddrStorage};
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use tokio::net::UdpSocket;

    /// Most messages per `sendmmsg` call.
    const SEND_MAX: usize = 64;

    pub fn recv(sock: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
        let count = b.lens.len();
        let mut names: Vec<SockAddrStorage> =
            (0..count).map(|_| SockAddrStorage::zeroed()).collect();
        let mut iovs: Vec<libc::iovec> = b
            .buf
            .chunks_mut(b.slot)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; every pointer set below points
        // into `names` and `iovs`, which outlive the call.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; count];
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_namelen = names[i].size_of();
            h.msg_hdr.msg_name = (&mut names[i] as *mut SockAddrStorage).cast();
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds `count` initialised headers as above.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                count as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, name) in names.into_iter().enumerate().take(n) {
            b.lens[i] = (hdrs[i].msg_len as usize).min(b.slot);
            // SAFETY: the kernel wrote a socket address of `msg_namelen`
            // bytes into `names[i]`.
            let addr = unsafe { SockAddr::new(name, hdrs[i].msg_hdr.msg_namelen) };
            b.from[i] = addr
                .as_socket()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        }
        Ok(n)
    }

    pub fn send(sock: &UdpSocket, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        let msgs = &msgs[..msgs.len().min(SEND_MAX)];
        let names: Vec<SockAddr> = msgs.iter().map(|(a, _)| SockAddr::from(*a)).collect();
        let mut iovs: Vec<libc::iovec> = msgs
            .iter()
            .map(|(_, d)| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; the pointers set below point
        // into `names` and `iovs`, which outlive the call, and the kernel
        // only reads through them.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; msgs.len()];
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = names[i].as_ptr() as *mut libc::c_void;
            // (the kernel only reads the address)
            h.msg_hdr.msg_namelen = names[i].len();
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds `msgs.len()` initialised headers.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                hdrs.len() as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::RecvBatch;
    use std::io;
    use std::net::SocketAddr;
    use tokio::net::UdpSocket;

    pub fn recv(sock: &UdpSocket, b: &mut RecvBatch) -> io::Result<usize> {
        let slot = b.slot;
        let (n, from) = sock.try_recv_from(&mut b.buf[..slot])?;
        b.lens[0] = n;
        b.from[0] = from;
        Ok(1)
    }

    pub fn send(sock: &UdpSocket, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
        sock.try_send_to(msgs[0].1, msgs[0].0)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_goes_out_and_comes_back_in_order() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 10 + i as usize]).collect();
        let msgs: Vec<(SocketAddr, &[u8])> = payloads.iter().map(|p| (to, &p[..])).collect();
        send_batch(&a, &msgs).await.unwrap();
        let mut batch = RecvBatch::new(32, 2048);
        let mut got = Vec::new();
        while got.len() < 100 {
            b.readable().await.unwrap();
            match try_recv_batch(&b, &mut batch) {
                Ok(n) => {
                    assert!(n <= batch.capacity());
                    for i in 0..batch.len() {
                        let (from, d) = batch.get(i);
                        assert_eq!(from, a.local_addr().unwrap());
                        got.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads);
        assert_eq!(
            try_recv_batch(&b, &mut batch).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
