//! The wire format of Raft RPCs inside palisade DATA frames.
//!
//! One request or one response is one frame: the postcard encoding of
//! `(id: u64, body)`, where `body` is a [`Request`] or a [`Response`] (serde enums; postcard
//! writes an enum as its variant index, a varint, then the variant's fields). `id` is
//! chosen by the dialing side, unique among its requests in flight on the link, and the
//! response carries the same `id`, so responses may come back in any order.
//!
//! Why postcard: a documented, stable wire format (postcard 1.x, "the postcard wire
//! specification"), compact (varints, no field names), serde-driven so every openraft type
//! with the `serde` feature encodes without glue, and actively maintained; bincode 1.x is in
//! maintenance only. Frames are bounded by palisade's `max_frame` before decoding, and
//! postcard never allocates beyond the bytes it is given.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RaftTypeConfig;
use serde::{Deserialize, Serialize};

/// A Raft RPC, dialer → acceptor.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Request<C: RaftTypeConfig> {
    /// Variant 0: log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<C>),
    /// Variant 1: an election.
    Vote(VoteRequest<C::NodeId>),
    /// Variant 2: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<C>),
}

/// The acceptor's answer, acceptor → dialer; its variant matches the request's.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Response<C: RaftTypeConfig> {
    /// Variant 0.
    AppendEntries(Result<AppendEntriesResponse<C::NodeId>, RaftError<C::NodeId>>),
    /// Variant 1.
    Vote(Result<VoteResponse<C::NodeId>, RaftError<C::NodeId>>),
    /// Variant 2.
    InstallSnapshot(
        Result<InstallSnapshotResponse<C::NodeId>, RaftError<C::NodeId, InstallSnapshotError>>,
    ),
}

/// A message that did not encode, or a frame that did not decode.
#[derive(Debug)]
pub enum WireError {
    /// A value serde cannot represent in postcard (not one of openraft's messages: a
    /// type config whose `D`, `R` or `Node` serializes something postcard refuses).
    Encode(postcard::Error),
    /// The peer runs another palisade-openraft version or another Raft type config.
    Decode(postcard::Error),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encode(e) => write!(
                f,
                "a Raft RPC did not encode ({e}): the type config's data must be \
                 serializable by postcard"
            ),
            Self::Decode(e) => write!(
                f,
                "a Raft RPC frame did not decode ({e}): the peer runs another \
                 palisade-openraft version or another Raft type config"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// Encodes `(id, body)` as one frame's payload.
pub fn encode<T: Serialize>(id: u64, body: &T) -> Result<bytes::Bytes, WireError> {
    postcard::to_stdvec(&(id, body))
        .map(Into::into)
        .map_err(WireError::Encode)
}

/// Decodes one frame's payload as `(id, body)`.
pub fn decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<(u64, T), WireError> {
    postcard::from_bytes(frame).map_err(WireError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Vote};
    use std::io::Cursor;

    openraft::declare_raft_types!(T);

    #[test]
    fn a_vote_round_trips_with_its_id() {
        let req = Request::<T>::Vote(VoteRequest::new(
            Vote::new(3, 1),
            Some(LogId::new(CommittedLeaderId::new(2, 1), 7)),
        ));
        let frame = encode(42, &req).unwrap();
        let (id, back): (u64, Request<T>) = decode(&frame).unwrap();
        assert_eq!(id, 42);
        match back {
            Request::Vote(v) => {
                assert_eq!(v.vote, Vote::new(3, 1));
                assert_eq!(v.last_log_id.map(|l| l.index), Some(7));
            }
            other => panic!("{other:?}"),
        }
        // The layout the module doc states: the id varint, then the variant index 1.
        assert_eq!(&frame[..2], &[42, 1]);
    }

    #[test]
    fn a_truncated_frame_is_an_error_not_a_panic() {
        let frame = encode(
            7,
            &Response::<T>::Vote(Ok(VoteResponse::new(Vote::new(1, 2), None, true))),
        )
        .unwrap();
        for cut in 0..frame.len() {
            assert!(decode::<Response<T>>(&frame[..cut]).is_err(), "cut {cut}");
        }
    }
}
