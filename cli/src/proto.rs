//! The tiny application protocol `palisade node` speaks over its links (DATA frames; the
//! first byte says what a frame is). It is the CLI's, not palisade's wire protocol:
//!
//! | byte | frame | the node answers |
//! |---|---|---|
//! | 1 | PING + any payload | PONG (2) + the same payload |
//! | 3 | INFO request | INFO (4) + `key=value` lines: node_id, cert_serial, cert_issuer, cert_not_after (unix s), key_id, links |
//! | 5 | TRAFFIC + payload | nothing (counted) |
//! | 0x10–0x16 | stream messages (OPEN, ACCEPT, REFUSE, DATA, WINDOW, FIN, RESET) | see [`crate::forward::wire`] and PROTOCOL.md §10 |
//!
//! Any other frame is counted and ignored.

pub const PING: u8 = 1;
pub const PONG: u8 = 2;
pub const INFO_REQUEST: u8 = 3;
pub const INFO: u8 = 4;
pub const TRAFFIC: u8 = 5;

/// Parses an INFO reply's lines.
pub fn parse_info(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// One value of an INFO reply.
pub fn info_value<'a>(info: &'a [(String, String)], key: &str) -> Option<&'a str> {
    info.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
