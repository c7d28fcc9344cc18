//! The sans-IO stream table of one joined link: which streams exist, in what state, how
//! much each side may still send, and what to send and report next. No sockets, no
//! tasks, no clock: the tokio glue ([`super::link`]) feeds it frames and commands and
//! drains [`Mux::poll_transmit`] and [`Mux::poll_event`] after each.
//!
//! Bounds, so a hostile or broken peer costs at most `max_streams × window` bytes of
//! this node's memory and never a panic: at most `max_streams` streams (more OPENs are
//! refused), a peer may have at most `window` bytes of a stream delivered and not yet
//! written to the local socket (more is a RESET), and credit it grants may not pass
//! 2^31 - 1. Malformed messages and OPENs that break the id rules close the link.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::wire::{Code, DecodeError, Msg};

/// The most credit a peer may grant on one stream (as HTTP/2).
pub const MAX_CREDIT: u64 = (1 << 31) - 1;

/// Per-link limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Streams open at once on the link, both directions together.
    pub max_streams: usize,
    /// Bytes a peer may send on a stream beyond what this node has written out.
    pub window: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams: 256,
            window: 256 * 1024,
        }
    }
}

/// Which end of the link this node is: the dialer opens odd stream ids, the acceptor
/// even ones, so both can open streams without colliding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

impl Side {
    fn first_id(self) -> u32 {
        match self {
            Self::Dialer => 1,
            Self::Acceptor => 2,
        }
    }

    fn owns(self, id: u32) -> bool {
        (id % 2 == 1) == (self == Self::Dialer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This node sent OPEN, waits for ACCEPT or REFUSE.
    Opening,
    /// The peer sent OPEN, this node has not decided yet.
    Pending,
    /// Accepted: data may flow.
    Open,
}

#[derive(Debug)]
struct Stream {
    state: State,
    service: String,
    /// Bytes this node may still send.
    send_credit: u64,
    /// Bytes the peer may still send.
    recv_left: u32,
    /// Bytes written out locally and not yet granted back with WINDOW.
    unacked: u32,
    fin_sent: bool,
    fin_recv: bool,
}

/// What the glue must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer asks for `service`: answer with [`Mux::accept`] or [`Mux::refuse`].
    Incoming { id: u32, service: String },
    /// This node may send `n` more bytes on the stream (ACCEPT's window, or WINDOW).
    Credit { id: u32, n: u32 },
    /// Bytes to write to the local socket; report them with [`Mux::consumed`] once
    /// written.
    Data { id: u32, bytes: Bytes },
    /// The peer will send no more: shut the local socket's write side.
    Fin { id: u32 },
    /// Both directions finished; the stream is gone.
    Closed { id: u32 },
    /// The stream is gone abnormally: reset the local socket. `by_peer`: the peer sent
    /// RESET or REFUSE; else this node reset it (a peer's violation, a local command).
    Ended {
        id: u32,
        code: Code,
        reason: String,
        by_peer: bool,
    },
}

/// The peer broke the rules badly enough that the link must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    Malformed(DecodeError),
    BadOpen { id: u32, why: &'static str },
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "{e}"),
            Self::BadOpen { id, why } => write!(f, "OPEN of stream {id}: {why}"),
        }
    }
}

/// A local command that cannot be carried out (the stream is gone, or the glue asked
/// for more than the credit): the glue resets its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// One link's stream table.
#[derive(Debug)]
pub struct Mux {
    side: Side,
    limits: Limits,
    streams: HashMap<u32, Stream>,
    /// The next id this node opens.
    next_local: u32,
    /// The highest id the peer has opened (0: none).
    peer_highest: u32,
    out: VecDeque<Msg>,
    events: VecDeque<Event>,
}

impl Mux {
    pub fn new(side: Side, limits: Limits) -> Self {
        Self {
            side,
            limits,
            streams: HashMap::new(),
            next_local: side.first_id(),
            peer_highest: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // Getters.

    /// Streams open now.
    #[cfg(test)]
    fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Every stream the peer opened and this node accepted or is deciding on, with its
    /// service: what a reload checks again.
    pub fn peer_streams(&self) -> Vec<(u32, String)> {
        self.streams
            .iter()
            .filter(|(id, _)| !self.side.owns(**id))
            .map(|(id, s)| (*id, s.service.clone()))
            .collect()
    }

    // Commands.

    /// Opens a stream to the peer's `service`; its id, or why not.
    pub fn open(&mut self, service: &str) -> Result<u32, Code> {
        if self.streams.len() >= self.limits.max_streams {
            return Err(Code::TooManyStreams);
        }
        // Ids are never reused; after 2^31 opens the link must be replaced.
        let id = self.next_local;
        if id > u32::MAX - 2 {
            return Err(Code::TooManyStreams);
        }
        self.next_local += 2;
        self.streams.insert(
            id,
            Stream {
                state: State::Opening,
                service: service.to_owned(),
                send_credit: 0,
                recv_left: self.limits.window,
                unacked: 0,
                fin_sent: false,
                fin_recv: false,
            },
        );
        self.out.push_back(Msg::Open {
            id,
            window: self.limits.window,
            service: service.to_owned(),
        });
        Ok(id)
    }

    /// Accepts a stream the peer opened ([`Event::Incoming`]).
    pub fn accept(&mut self, id: u32) -> Result<(), Gone> {
        let s = self.streams.get_mut(&id).ok_or(Gone)?;
        if s.state != State::Pending {
            return Err(Gone);
        }
        s.state = State::Open;
        // The OPEN's window (and any WINDOW since) becomes the glue's to spend now.
        let credit = u32::try_from(s.send_credit).unwrap_or(u32::MAX);
        self.out.push_back(Msg::Accept {
            id,
            window: self.limits.window,
        });
        if credit > 0 {
            self.events.push_back(Event::Credit { id, n: credit });
        }
        Ok(())
    }

    /// Refuses a stream the peer opened.
    pub fn refuse(&mut self, id: u32, code: Code, reason: &str) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| s.state == State::Pending)
        {
            self.streams.remove(&id);
            self.out.push_back(Msg::Refuse {
                id,
                code,
                reason: reason.to_owned(),
            });
        }
    }

    /// Sends bytes read from the local socket; at most the credit the peer granted.
    pub fn send_data(&mut self, id: u32, bytes: Bytes) -> Result<(), Gone> {
        let s = self.streams.get_mut(&id).ok_or(Gone)?;
        let len = bytes.len() as u64;
        if s.state != State::Open || s.fin_sent || len > s.send_credit {
            return Err(Gone);
        }
        s.send_credit -= len;
        self.out.push_back(Msg::Data { id, bytes });
        Ok(())
    }

    /// The local socket ended its input: half-close this direction.
    pub fn finish(&mut self, id: u32) -> Result<(), Gone> {
        let s = self.streams.get_mut(&id).ok_or(Gone)?;
        if s.fin_sent {
            return Ok(());
        }
        s.fin_sent = true;
        let done = s.fin_recv;
        self.out.push_back(Msg::Fin { id });
        if done {
            self.streams.remove(&id);
            self.events.push_back(Event::Closed { id });
        }
        Ok(())
    }

    /// Resets a stream from this side (its local socket failed, or a reload withdrew
    /// it); the glue is told with [`Event::Ended`] too.
    pub fn reset(&mut self, id: u32, code: Code, reason: &str) {
        if self.streams.remove(&id).is_some() {
            self.out.push_back(Msg::Reset {
                id,
                code,
                reason: reason.to_owned(),
            });
            self.events.push_back(Event::Ended {
                id,
                code,
                reason: reason.to_owned(),
                by_peer: false,
            });
        }
    }

    /// `n` bytes of [`Event::Data`] were written to the local socket: once a quarter
    /// window has been, the peer gets that credit back (fewer, larger WINDOWs).
    pub fn consumed(&mut self, id: u32, n: u32) {
        let window = self.limits.window;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        // Never more than was delivered: the window stays exact even if the glue errs.
        let delivered = window.saturating_sub(s.recv_left).saturating_sub(s.unacked);
        s.unacked += n.min(delivered);
        if s.unacked >= (window / 4).max(1) && !s.fin_recv {
            s.recv_left += s.unacked;
            self.out.push_back(Msg::Window {
                id,
                increment: s.unacked,
            });
            s.unacked = 0;
        }
    }

    /// The link is going away: every stream ends with `code`.
    pub fn close_all(&mut self, code: Code, reason: &str) {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.streams.remove(&id);
            self.events.push_back(Event::Ended {
                id,
                code,
                reason: reason.to_owned(),
                by_peer: false,
            });
        }
    }

    // Inputs.

    /// One stream frame from the peer (kind byte first).
    pub fn handle_frame(&mut self, frame: &Bytes) -> Result<(), LinkError> {
        let msg = Msg::decode(frame).map_err(LinkError::Malformed)?;
        self.handle(msg)
    }

    /// One decoded stream message from the peer.
    pub fn handle(&mut self, msg: Msg) -> Result<(), LinkError> {
        let id = msg.id();
        if let Msg::Open {
            id,
            window,
            service,
        } = msg
        {
            return self.handle_open(id, window, service);
        }
        let Some(s) = self.streams.get_mut(&id) else {
            let opened = if self.side.owns(id) {
                id != 0 && id < self.next_local
            } else {
                id != 0 && id <= self.peer_highest
            };
            // A stream that existed: the peer had not seen its end yet when it sent
            // this; nothing to do. A RESET is never answered (no RESET storms).
            if !opened && !matches!(msg, Msg::Reset { .. }) {
                self.out.push_back(Msg::Reset {
                    id,
                    code: Code::Protocol,
                    reason: "unknown stream id".into(),
                });
            }
            return Ok(());
        };
        let ours = self.side.owns(id);
        match msg {
            // Handled above, before the stream lookup.
            Msg::Open { .. } => {}
            Msg::Accept { window, .. } => {
                if !ours || s.state != State::Opening {
                    return self.violation(id, "ACCEPT of a stream not waiting for one");
                }
                if u64::from(window) > MAX_CREDIT {
                    return self.violation(id, "window above 2^31-1");
                }
                s.state = State::Open;
                s.send_credit = u64::from(window);
                self.events.push_back(Event::Credit { id, n: window });
            }
            Msg::Refuse { code, reason, .. } => {
                if !ours || s.state != State::Opening {
                    return self.violation(id, "REFUSE of a stream not waiting for one");
                }
                self.streams.remove(&id);
                self.events.push_back(Event::Ended {
                    id,
                    code,
                    reason,
                    by_peer: true,
                });
            }
            Msg::Data { bytes, .. } => {
                if s.state != State::Open || s.fin_recv {
                    return self.violation(id, "DATA before ACCEPT or after FIN");
                }
                let Ok(len) = u32::try_from(bytes.len()) else {
                    return self.violation(id, "window exceeded");
                };
                if len > s.recv_left {
                    return self.violation(id, "window exceeded");
                }
                s.recv_left -= len;
                if len > 0 {
                    self.events.push_back(Event::Data { id, bytes });
                }
            }
            Msg::Window { increment, .. } => {
                if s.state == State::Opening {
                    return self.violation(id, "WINDOW before ACCEPT");
                }
                let credit = s.send_credit + u64::from(increment);
                if increment == 0 || credit > MAX_CREDIT {
                    return self.violation(id, "WINDOW of 0 or credit above 2^31-1");
                }
                s.send_credit = credit;
                // While pending, the credit is handed over whole at `accept`.
                if s.state == State::Open {
                    self.events.push_back(Event::Credit { id, n: increment });
                }
            }
            Msg::Fin { .. } => {
                if s.state == State::Opening || s.fin_recv {
                    return self.violation(id, "FIN before ACCEPT or twice");
                }
                s.fin_recv = true;
                self.events.push_back(Event::Fin { id });
                if s.fin_sent {
                    self.streams.remove(&id);
                    self.events.push_back(Event::Closed { id });
                }
            }
            Msg::Reset { code, reason, .. } => {
                self.streams.remove(&id);
                self.events.push_back(Event::Ended {
                    id,
                    code,
                    reason,
                    by_peer: true,
                });
            }
        }
        Ok(())
    }

    fn handle_open(&mut self, id: u32, window: u32, service: String) -> Result<(), LinkError> {
        if id == 0 || self.side.owns(id) {
            return Err(LinkError::BadOpen {
                id,
                why: "the id has the parity of this node's streams",
            });
        }
        if id <= self.peer_highest {
            return Err(LinkError::BadOpen {
                id,
                why: "ids must increase",
            });
        }
        self.peer_highest = id;
        if u64::from(window) > MAX_CREDIT {
            self.out.push_back(Msg::Refuse {
                id,
                code: Code::Protocol,
                reason: "window above 2^31-1".into(),
            });
            return Ok(());
        }
        if self.streams.len() >= self.limits.max_streams {
            self.out.push_back(Msg::Refuse {
                id,
                code: Code::TooManyStreams,
                reason: format!(
                    "the link carries its maximum of {} streams",
                    self.limits.max_streams
                ),
            });
            return Ok(());
        }
        self.streams.insert(
            id,
            Stream {
                state: State::Pending,
                service: service.clone(),
                send_credit: u64::from(window),
                recv_left: self.limits.window,
                unacked: 0,
                fin_sent: false,
                fin_recv: false,
            },
        );
        self.events.push_back(Event::Incoming { id, service });
        Ok(())
    }

    /// The peer broke a stream's rules: RESET it (both ways) and go on with the link.
    fn violation(&mut self, id: u32, why: &str) -> Result<(), LinkError> {
        self.reset(id, Code::Protocol, why);
        Ok(())
    }

    // Outputs, drained after every input or command: transmits, then events.

    /// The next message to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Msg> {
        self.out.pop_front()
    }

    /// The next event for the glue.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes the peer may still send on `id` plus those written and not yet granted
    /// back: never above the window (tests).
    #[cfg(test)]
    fn receive_budget(&self, id: u32) -> Option<u32> {
        self.streams.get(&id).map(|s| s.recv_left + s.unacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn drain(m: &mut Mux) -> (Vec<Msg>, Vec<Event>) {
        (
            std::iter::from_fn(|| m.poll_transmit()).collect(),
            std::iter::from_fn(|| m.poll_event()).collect(),
        )
    }

    fn pair() -> (Mux, Mux) {
        let l = Limits {
            max_streams: 4,
            window: 100,
        };
        (Mux::new(Side::Dialer, l), Mux::new(Side::Acceptor, l))
    }

    /// Moves everything `from` wants sent into `to`; `to`'s events.
    fn deliver(from: &mut Mux, to: &mut Mux) -> Vec<Event> {
        while let Some(m) = from.poll_transmit() {
            to.handle(m).unwrap();
        }
        drain(to).1
    }

    #[test]
    fn a_stream_opens_carries_data_both_ways_and_half_closes() {
        let (mut a, mut b) = pair();
        let id = a.open("echo").unwrap();
        assert_eq!(id, 1);
        assert_eq!(
            deliver(&mut a, &mut b),
            [Event::Incoming {
                id,
                service: "echo".into()
            }]
        );
        b.accept(id).unwrap();
        assert_eq!(
            b.poll_event(),
            Some(Event::Credit { id, n: 100 }),
            "the OPEN's window"
        );
        assert_eq!(deliver(&mut b, &mut a), [Event::Credit { id, n: 100 }]);
        a.send_data(id, Bytes::from_static(b"hi")).unwrap();
        a.finish(id).unwrap();
        assert_eq!(
            deliver(&mut a, &mut b),
            [
                Event::Data {
                    id,
                    bytes: Bytes::from_static(b"hi")
                },
                Event::Fin { id }
            ]
        );
        // b still sends after a's FIN (half-close), then finishes: both sides forget it.
        b.send_data(id, Bytes::from_static(b"hi")).unwrap();
        b.finish(id).unwrap();
        assert_eq!(b.poll_event(), Some(Event::Closed { id }));
        let events = deliver(&mut b, &mut a);
        assert_eq!(events.last(), Some(&Event::Closed { id }));
        assert_eq!((a.stream_count(), b.stream_count()), (0, 0));
    }

    #[test]
    fn the_window_is_enforced_and_refilled_by_consumption() {
        let (mut a, mut b) = pair();
        let id = a.open("s").unwrap();
        deliver(&mut a, &mut b);
        b.accept(id).unwrap();
        assert!(matches!(b.poll_event(), Some(Event::Credit { .. })));
        deliver(&mut b, &mut a);
        a.send_data(id, Bytes::from(vec![0; 100])).unwrap();
        assert_eq!(
            a.send_data(id, Bytes::from_static(b"x")),
            Err(Gone),
            "no credit left"
        );
        deliver(&mut a, &mut b);
        b.consumed(id, 30);
        assert_eq!(deliver(&mut b, &mut a), [Event::Credit { id, n: 30 }]);
        // A peer that ignores the window: its stream is reset, the link goes on.
        b.handle(Msg::Data {
            id,
            bytes: Bytes::from(vec![0; 31]),
        })
        .unwrap();
        let (out, events) = drain(&mut b);
        assert!(
            matches!(
                out[..],
                [Msg::Reset {
                    code: Code::Protocol,
                    ..
                }]
            ),
            "{out:?}"
        );
        assert!(matches!(events[..], [Event::Ended { by_peer: false, .. }]));
        assert_eq!(b.stream_count(), 0);
    }

    #[test]
    fn refusals_unknown_ids_and_bad_opens() {
        let (mut a, mut b) = pair();
        let id = a.open("nope").unwrap();
        deliver(&mut a, &mut b);
        b.refuse(id, Code::UnknownService, "no such service");
        let events = deliver(&mut b, &mut a);
        assert!(matches!(
            &events[..],
            [Event::Ended {
                code: Code::UnknownService,
                by_peer: true,
                ..
            }]
        ));
        // An id never opened gets a RESET; an id that existed is ignored.
        b.handle(Msg::Fin { id: 99 }).unwrap();
        assert!(matches!(drain(&mut b).0[..], [Msg::Reset { id: 99, .. }]));
        b.handle(Msg::Fin { id }).unwrap();
        assert_eq!(drain(&mut b), (vec![], vec![]));
        // OPENs that break the id rules close the link.
        assert!(b
            .handle(Msg::Open {
                id: 2,
                window: 1,
                service: "s".into()
            })
            .is_err());
        assert!(b
            .handle(Msg::Open {
                id: 1,
                window: 1,
                service: "s".into()
            })
            .is_err());
        assert!(b.handle_frame(&Bytes::from_static(&[0x15, 0])).is_err());
    }

    /// PROTOCOL.md §10.3: before ACCEPT the opener may send WINDOW, FIN or RESET but not
    /// DATA; the acceptor only ACCEPT, REFUSE or RESET.
    #[test]
    fn what_may_come_before_accept() {
        let resets = |m: &mut Mux| {
            drain(m)
                .0
                .iter()
                .filter(|x| {
                    matches!(
                        x,
                        Msg::Reset {
                            code: Code::Protocol,
                            ..
                        }
                    )
                })
                .count()
        };
        // The acceptor's view: the opener's WINDOW and FIN are fine, DATA is not.
        let (_, mut b) = pair();
        b.handle(Msg::Open {
            id: 1,
            window: 10,
            service: "s".into(),
        })
        .unwrap();
        b.handle(Msg::Window {
            id: 1,
            increment: 5,
        })
        .unwrap();
        b.handle(Msg::Fin { id: 1 }).unwrap();
        assert_eq!(resets(&mut b), 0);
        b.accept(1).unwrap();
        assert!(
            drain(&mut b).1.contains(&Event::Credit { id: 1, n: 15 }),
            "both grants"
        );
        b.handle(Msg::Open {
            id: 3,
            window: 10,
            service: "s".into(),
        })
        .unwrap();
        b.handle(Msg::Data {
            id: 3,
            bytes: Bytes::from_static(b"x"),
        })
        .unwrap();
        assert_eq!(resets(&mut b), 1);
        // The opener's view: WINDOW, FIN and DATA before ACCEPT all reset.
        for early in [
            Msg::Window {
                id: 1,
                increment: 5,
            },
            Msg::Fin { id: 1 },
            Msg::Data {
                id: 1,
                bytes: Bytes::from_static(b"x"),
            },
        ] {
            let (mut a, _) = pair();
            let id = a.open("s").unwrap();
            drain(&mut a);
            a.handle(early).unwrap();
            assert_eq!(resets(&mut a), 1, "stream {id}");
        }
    }

    #[test]
    fn opens_beyond_the_limit_are_refused() {
        let (mut a, mut b) = pair();
        for n in 0..5u32 {
            b.handle(Msg::Open {
                id: 2 * n + 1,
                window: 10,
                service: "s".into(),
            })
            .unwrap();
        }
        assert_eq!(b.stream_count(), 4);
        assert!(matches!(
            drain(&mut b).0[..],
            [Msg::Refuse {
                id: 9,
                code: Code::TooManyStreams,
                ..
            }]
        ));
        for _ in 0..4 {
            a.open("s").unwrap();
        }
        assert_eq!(a.open("s"), Err(Code::TooManyStreams));
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        let id = 0u32..12;
        let code = any::<u8>().prop_map(Code::from_byte);
        prop_oneof![
            (id.clone(), any::<u32>()).prop_map(|(id, window)| Msg::Open {
                id,
                window,
                service: "s".into()
            }),
            (
                id.clone(),
                prop_oneof![Just(0u32), Just(u32::MAX), 0u32..300]
            )
                .prop_map(|(id, window)| Msg::Accept { id, window }),
            (id.clone(), code.clone()).prop_map(|(id, code)| Msg::Refuse {
                id,
                code,
                reason: "r".into()
            }),
            (id.clone(), 0usize..150).prop_map(|(id, n)| Msg::Data {
                id,
                bytes: Bytes::from(vec![7; n])
            }),
            (
                id.clone(),
                prop_oneof![Just(0u32), Just(u32::MAX), 0u32..300]
            )
                .prop_map(|(id, increment)| Msg::Window { id, increment }),
            id.clone().prop_map(|id| Msg::Fin { id }),
            (id, code).prop_map(|(id, code)| Msg::Reset {
                id,
                code,
                reason: "r".into()
            }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Peer(Msg),
        Open,
        Accept(u32),
        Refuse(u32),
        Send(u32, usize),
        Finish(u32),
        Reset(u32),
        Consumed(u32, u32),
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => arb_msg().prop_map(Step::Peer),
            1 => Just(Step::Open),
            1 => (0u32..12).prop_map(Step::Accept),
            1 => (0u32..12).prop_map(Step::Refuse),
            1 => (0u32..12, 0usize..150).prop_map(|(i, n)| Step::Send(i, n)),
            1 => (0u32..12).prop_map(Step::Finish),
            1 => (0u32..12).prop_map(Step::Reset),
            1 => (0u32..12, 0u32..200).prop_map(|(i, n)| Step::Consumed(i, n)),
        ]
    }

    proptest! {
        /// Random peers and commands never panic, never hold more streams than the
        /// limit, never let a peer have more than a window outstanding, and a link
        /// error comes only from a bad OPEN.
        #[test]
        fn random_sequences_stay_within_bounds(side in prop_oneof![Just(Side::Dialer), Just(Side::Acceptor)], steps in prop::collection::vec(arb_step(), 0..200)) {
            let limits = Limits { max_streams: 4, window: 100 };
            let mut m = Mux::new(side, limits);
            // Bytes delivered per stream and not yet reported consumed.
            let mut held: HashMap<u32, u64> = HashMap::new();
            for step in steps {
                match step {
                    Step::Peer(msg) => {
                        let open = matches!(msg, Msg::Open { .. });
                        if m.handle(msg).is_err() {
                            prop_assert!(open, "only OPEN closes the link");
                        }
                    }
                    Step::Open => { let _ = m.open("s"); }
                    Step::Accept(id) => { let _ = m.accept(id); }
                    Step::Refuse(id) => m.refuse(id, Code::NotAllowed, "no"),
                    Step::Send(id, n) => { let _ = m.send_data(id, Bytes::from(vec![1; n])); }
                    Step::Finish(id) => { let _ = m.finish(id); }
                    Step::Reset(id) => m.reset(id, Code::Aborted, "x"),
                    Step::Consumed(id, n) => {
                        let h = held.entry(id).or_default();
                        let n = u64::from(n).min(*h);
                        *h -= n;
                        m.consumed(id, n as u32);
                    }
                }
                prop_assert!(m.stream_count() <= limits.max_streams);
                let (out, events) = drain(&mut m);
                prop_assert!(out.len() <= 1 && events.len() <= 2, "{out:?} {events:?}");
                for e in events {
                    match e {
                        Event::Data { id, bytes } => *held.entry(id).or_default() += bytes.len() as u64,
                        Event::Closed { id } | Event::Ended { id, .. } => { held.remove(&id); }
                        _ => {}
                    }
                }
                for (id, h) in &held {
                    prop_assert!(*h <= u64::from(limits.window));
                    if let Some(budget) = m.receive_budget(*id) {
                        prop_assert!(budget <= limits.window);
                    }
                }
            }
        }
    }
}
