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

/// A frame that did not decode: the peer speaks another version or another type config.
#[derive(Debug)]
pub struct DecodeError(postcard::Error);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a Raft RPC frame did not decode ({}): the peer runs another palisade-openraft \
             version or another Raft type config",
            self.0
        )
    }
}

impl std::error::Error for DecodeError {}

/// Encodes `(id, body)` as one frame's payload.
pub fn encode<T: Serialize>(id: u64, body: &T) -> bytes::Bytes {
    // Serializing to a Vec fails only for types serde cannot represent (maps with
    // non-string keys are fine in postcard); openraft's messages are all representable.
    match postcard::to_stdvec(&(id, body)) {
        Ok(v) => v.into(),
        Err(e) => {
            tracing::error!(error = %e, "a Raft RPC did not encode");
            bytes::Bytes::new()
        }
    }
}

/// Decodes one frame's payload as `(id, body)`.
pub fn decode<T: for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<(u64, T), DecodeError> {
    postcard::from_bytes(frame).map_err(DecodeError)
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
        let frame = encode(42, &req);
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
        );
        for cut in 0..frame.len() {
            assert!(decode::<Response<T>>(&frame[..cut]).is_err(), "cut {cut}");
        }
    }
}
