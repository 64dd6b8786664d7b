//! The socket behind a socket inode: protocol, addresses, TCP state.
//!
//! A thread blocked in `recvfrom(fd)` is only half explained by "fd 7 is `socket:[81234]`";
//! `watch` wants the connection: TCP from 127.0.0.1:41234 to 127.0.0.1:5432, established. The kernel's socket
//! tables `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}` map inodes to that, read with `procfs`.
//! They are per network namespace, so they are read through the process (`/proc/PID/net`
//! is its namespace's view) and cached per namespace by [`SocketTables`] users.
//!
//! Unix socket peers are not in `/proc/net/unix`: [`super::fds`] adds them (the peer's name
//! as [`SocketInfo::peer`], the peer socket with its holder and unread bytes as
//! [`SocketInfo::local_peer`]) from a `sock_diag` dump ([`super::unix_diag`]).

use std::net::SocketAddr;

use procfs::net::{TcpNetEntry, TcpState, UdpNetEntry, UnixNetEntry, UnixState};

use super::InspectError;
pub(crate) use crate::model::{SocketInfo, SocketProtocol};

/// The socket tables of one network namespace.
#[derive(Debug, Default)]
pub(crate) struct SocketTables {
    tcp: Vec<TcpNetEntry>,
    tcp6: Vec<TcpNetEntry>,
    udp: Vec<UdpNetEntry>,
    udp6: Vec<UdpNetEntry>,
    unix: Vec<UnixNetEntry>,
}

impl SocketTables {
    /// Reads all five tables as seen by process `pid` (its network namespace). A table that
    /// does not exist (IPv6 disabled) is left empty.
    pub(crate) fn read(pid: u32) -> Result<Self, InspectError> {
        let path = format!("/proc/{pid}/net");
        let process = procfs::process::Process::new(pid as i32)
            .map_err(|e| InspectError::procfs(&path, e))?;
        Ok(Self {
            tcp: optional_table(&process, process.tcp(), &path, "tcp")?,
            tcp6: optional_table(&process, process.tcp6(), &path, "tcp6")?,
            udp: optional_table(&process, process.udp(), &path, "udp")?,
            udp6: optional_table(&process, process.udp6(), &path, "udp6")?,
            unix: optional_table(&process, process.unix(), &path, "unix")?,
        })
    }

    /// For TCP socket `inode`, the socket at the other end of its connection when it is in
    /// these tables too (a loopback connection): its inode and unread bytes (`rx_queue`).
    pub(crate) fn tcp_peer(&self, inode: u64) -> Option<(u64, u32)> {
        [&self.tcp, &self.tcp6].into_iter().find_map(|table| {
            let own = table.iter().find(|e| e.inode == inode)?;
            table
                .iter()
                .find(|e| {
                    e.inode != 0
                        && e.local_address == own.remote_address
                        && e.remote_address == own.local_address
                })
                .map(|e| (e.inode, e.rx_queue))
        })
    }

    /// The socket with inode `inode`, if it is TCP, UDP or unix.
    pub(crate) fn find(&self, inode: u64) -> Option<SocketInfo> {
        let tcp = |protocol, table: &[TcpNetEntry]| {
            table.iter().find(|e| e.inode == inode).map(|e| SocketInfo {
                protocol,
                inode,
                local: format_addr(&e.local_address),
                peer: peer_addr(&e.remote_address),
                tcp_state: Some(tcp_state_name(&e.state).to_string()),
                unix_kind: None,
                tcp_timing: None,
                local_peer: None,
            })
        };
        let udp = |protocol, table: &[UdpNetEntry]| {
            table.iter().find(|e| e.inode == inode).map(|e| SocketInfo {
                protocol,
                inode,
                local: format_addr(&e.local_address),
                peer: peer_addr(&e.remote_address),
                tcp_state: None,
                unix_kind: None,
                tcp_timing: None,
                local_peer: None,
            })
        };
        tcp(SocketProtocol::Tcp, &self.tcp)
            .or_else(|| tcp(SocketProtocol::Tcp6, &self.tcp6))
            .or_else(|| udp(SocketProtocol::Udp, &self.udp))
            .or_else(|| udp(SocketProtocol::Udp6, &self.udp6))
            .or_else(|| {
                self.unix
                    .iter()
                    .find(|e| e.inode == inode)
                    .map(|e| SocketInfo {
                        protocol: SocketProtocol::Unix,
                        inode,
                        local: e
                            .path
                            .as_ref()
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        peer: None,
                        tcp_state: None,
                        unix_kind: Some((
                            unix_type_name(e.socket_type).to_string(),
                            unix_state_name(&e.state).to_string(),
                        )),
                        tcp_timing: None,
                        local_peer: None,
                    })
            })
    }
}

/// A table that is missing in a live process (IPv6 disabled) is empty, not an error.
fn optional_table<T>(
    process: &procfs::process::Process,
    table: procfs::ProcResult<Vec<T>>,
    dir: &str,
    name: &str,
) -> Result<Vec<T>, InspectError> {
    match table {
        Ok(entries) => Ok(entries),
        Err(procfs::ProcError::NotFound(_)) if process.is_alive() => Ok(Vec::new()),
        Err(e) => Err(InspectError::procfs(format!("{dir}/{name}"), e)),
    }
}

/// `a.b.c.d:port`, or `[v6]:port`; v4-mapped IPv6 addresses are shown as IPv4.
pub(crate) fn format_addr(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{}", a.port()),
            None => format!("[{}]:{}", a.ip(), a.port()),
        },
    }
}

/// The remote address, or `None` for the all-zero "not connected" address.
fn peer_addr(addr: &SocketAddr) -> Option<String> {
    (!(addr.ip().is_unspecified() && addr.port() == 0)).then(|| format_addr(addr))
}

/// The kernel's names for TCP states (`tcp_states.h`).
pub(crate) fn tcp_state_name(state: &TcpState) -> &'static str {
    match state {
        TcpState::Established => "ESTABLISHED",
        TcpState::SynSent => "SYN_SENT",
        TcpState::SynRecv => "SYN_RECV",
        TcpState::FinWait1 => "FIN_WAIT1",
        TcpState::FinWait2 => "FIN_WAIT2",
        TcpState::TimeWait => "TIME_WAIT",
        TcpState::Close => "CLOSE",
        TcpState::CloseWait => "CLOSE_WAIT",
        TcpState::LastAck => "LAST_ACK",
        TcpState::Listen => "LISTEN",
        TcpState::Closing => "CLOSING",
        TcpState::NewSynRecv => "NEW_SYN_RECV",
    }
}

fn unix_state_name(state: &UnixState) -> &'static str {
    match state {
        UnixState::UNCONNECTED => "UNCONNECTED",
        UnixState::CONNECTING => "CONNECTING",
        UnixState::CONNECTED => "CONNECTED",
        UnixState::DISCONNECTING => "DISCONNECTING",
    }
}

fn unix_type_name(socket_type: u16) -> &'static str {
    match i32::from(socket_type) {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "socket",
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use super::*;

    #[test]
    fn addresses() {
        let v4 = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 5432));
        assert_eq!(format_addr(&v4), "127.0.0.1:5432");
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 80));
        assert_eq!(format_addr(&v6), "[::1]:80");
        let mapped = SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped(),
            443,
            0,
            0,
        ));
        assert_eq!(format_addr(&mapped), "10.1.2.3:443");
        assert_eq!(
            peer_addr(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            None
        );
        assert_eq!(
            peer_addr(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
            None
        );
    }
}
