//! TCP socket options that std and glommio do not offer, shared by the peer transport
//! and the SDK: the bound on how long sent data may stay unacknowledged.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Sets `TCP_USER_TIMEOUT` on `socket`: once sent data has stayed unacknowledged by the
/// peer's kernel for `timeout`, the kernel aborts the connection and the next read or
/// write fails. A connection across a network partition then ends within `timeout`
/// instead of retransmitting with an exponential backoff until long after the heal.
pub fn set_unacknowledged_timeout(socket: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    let timeout = timeout.max(Duration::from_millis(1));
    socket2::SockRef::from(socket).set_tcp_user_timeout(Some(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    // The option is accepted on a connected socket and reads back as set.
    #[test]
    fn the_timeout_is_set() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        set_unacknowledged_timeout(&stream, Duration::from_millis(1500)).unwrap();
        let read = socket2::SockRef::from(&stream).tcp_user_timeout().unwrap();
        assert_eq!(read, Some(Duration::from_millis(1500)));
    }
}
