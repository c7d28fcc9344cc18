//! In-memory benchmarks: palisade beside its baseline, measured in the same run.
//!
//! - `inmem_codec_encode` / `inmem_codec_decode`: the frame codec against tokio-util's
//!   `LengthDelimitedCodec` on the same payloads (64 B, 1 KiB, 16 KiB, 64 KiB; 256 KiB of
//!   payload per iteration). Decoding splits payloads off without copying, so at 16 KiB
//!   and up it costs per frame, not per byte, and its "GB/s" is very high;
//! - `inmem_join_plain`: the join handshake alone (TLS off), both sides in memory;
//! - `inmem_handshake_tls`: TLS 1.3 mutual TLS (ECDSA P-256) plus the join, against a bare
//!   rustls mutual-TLS handshake with the same certificates (both TLS 1.3 only, without
//!   resumption or tickets, as palisade's sessions; rustls shares one config per side);
//!   `inmem_handshake_tls_cold` the same with palisade's chain cache off (each side
//!   verifies the peer's chain in full every time, as rustls does);
//! - `inmem_bulk`: 1 MiB of frames per iteration from initiator to acceptor through two
//!   joined palisade connections with TLS (handed over with `send_frames`, read with
//!   `poll_frame_run`: every frame still its own payload, a slice of the run's buffer), against raw rustls connections carrying the
//!   same payload bytes (without palisade's 5-byte headers): one `write` per frame (one
//!   record per frame, as a naive user would), and the frames already coalesced (writes
//!   of up to 64 KiB, rustls's send buffer);
//! - `inmem_bulk_plain`: the same 1 MiB through plaintext links (TLS off) with the shared
//!   secret, so every frame carries a 16-byte HMAC-SHA256 tag (PROTOCOL.md §5.7), against
//!   plaintext links without the secret (no tag): the cost of frame authentication at
//!   64 B, 1 KiB and 16 KiB;
//! - round trips to joined on the simulated link (the testkit's `Pair`), beside bare TLS
//!   1.3 on the same model.
//!
//! Connections are driven directly (`poll_transmit` → peer `handle_input`), not through
//! the `Pair`'s simulated clock, so only the protocol work is timed.
//!
//! Run: `cargo bench --bench inmemory`. Quick (about a minute):
//! `PALISADE_BENCH_QUICK=1 cargo bench --bench inmemory` (short warm-up and measurement)
//! or criterion's `cargo bench --bench inmemory -- --quick`. A filter works as usual
//! (`-- inmem_bulk`).
//!
//! After criterion's output, a summary table gives every figure: palisade, the baseline
//! and their ratio from criterion's estimates of this run, and the same three again from
//! an interleaved run (palisade and its baselines take turns in short blocks; the 20th
//! percentile of the block times), which holds up better when other work shares the
//! machine, since both sides see the same load.

use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use palisade_core::frame::{encode, FrameDecoder, FrameKind, DEFAULT_MAX_FRAME};
use palisade_core::{Config, Connection, Endpoint, SendError, Side};
use palisade_testkit::PairBuilder;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use common::{
    benchmarking, has_arg, join, link, manifest_target, quick_env, rustls_handshake, rustls_pair,
    rustls_transfer, rustls_write, seeded_endpoint, Certs, ACCEPTOR,
};

mod common;

/// Frame sizes of the codec and bulk figures.
const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];

/// Payload bytes per codec iteration (the number of frames is this over the size).
const CODEC_BATCH: usize = 256 * 1024;

/// Payload bytes per bulk iteration.
const BULK_BATCH: usize = 1024 * 1024;

/// Bytes per write of the coalesced rustls baseline (its default send buffer limit).
const COALESCED_BLOCK: usize = 64 * 1024;

/// Handshakes between endpoint rebuilds: each acceptor endpoint's replay cache holds
/// 16384 nonces by default, at most 1024 of them from one source
/// (`replay_cache_per_source`), and never forgets one inside the clock-skew window.
/// The in-memory links all come from one source, so the endpoints are rebuilt before
/// the 1025th plaintext join would be refused as busy.
const HANDSHAKES_PER_ENDPOINT: u32 = 1000;

// ---------------------------------------------------------------------------------------
// Settings and helpers

/// Where criterion writes its estimates (set explicitly so the summary can read them).
fn criterion_dir() -> PathBuf {
    common::criterion_dir(manifest_target)
}

/// Benchmark ids that ran in this process (so the summary never reports stale files).
static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn ran(id: String) {
    let mut ran = RAN.lock().unwrap_or_else(|p| p.into_inner());
    if !ran.contains(&id) {
        ran.push(id);
    }
}

/// Two endpoints (initiator, acceptor) with seeded random sources.
struct Endpoints {
    configs: (Config, Config),
    a: Endpoint,
    b: Endpoint,
    seed: u64,
    made: u32,
}

impl Endpoints {
    fn new(configs: (Config, Config)) -> Self {
        let (a, b) = Self::build(&configs, 1);
        Self {
            configs,
            a,
            b,
            seed: 1,
            made: 0,
        }
    }

    fn build(configs: &(Config, Config), seed: u64) -> (Endpoint, Endpoint) {
        let seed = seed.wrapping_mul(0x1_0000_0001);
        (
            seeded_endpoint(configs.0.clone(), seed),
            seeded_endpoint(configs.1.clone(), seed.wrapping_add(0x5eed)),
        )
    }

    /// A fresh, unjoined link. Rebuilds the endpoints (new seeds, empty replay cache)
    /// every [`HANDSHAKES_PER_ENDPOINT`] links.
    fn link(&mut self, now: Instant) -> (Connection, Connection) {
        if self.made == HANDSHAKES_PER_ENDPOINT {
            self.seed += 1;
            (self.a, self.b) = Self::build(&self.configs, self.seed);
            self.made = 0;
        }
        self.made += 1;
        link(&self.a, &self.b, now)
    }
}

// ---------------------------------------------------------------------------------------
// The figures: palisade and its baselines as routines shared by criterion and the
// interleaved comparison

/// Runs `iters` iterations and returns the time spent in the measured part.
type Routine<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// What one iteration produces.
#[derive(Clone, Copy)]
enum Unit {
    /// Payload bytes (reported as GB/s, 10^9 bytes per second).
    Bytes(usize),
    /// One handshake (reported per second).
    Handshake,
}

/// One criterion benchmark: `group/function[/size]`.
struct Bench<'a> {
    /// The baseline's name in the summary (palisade's own entry: "palisade").
    label: &'static str,
    function: &'static str,
    routine: Routine<'a>,
}

/// A figure: palisade first, then its baselines.
struct Figure<'a> {
    name: String,
    group: &'static str,
    size: Option<usize>,
    unit: Unit,
    benches: Vec<Bench<'a>>,
}

impl Figure<'_> {
    fn id(&self, function: &str) -> String {
        match self.size {
            Some(size) => format!("{}/{function}/{size}", self.group),
            None => format!("{}/{function}", self.group),
        }
    }
}

/// Times `iters` runs of `f` as one block.
fn timed<'a>(mut f: impl FnMut() + 'a) -> Routine<'a> {
    Box::new(move |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        start.elapsed()
    })
}

/// A codec figure: palisade's frame codec beside tokio-util's `LengthDelimitedCodec`,
/// each routine handling `frames` payloads of `size` bytes per iteration.
fn codec_figure<'a>(
    group: &'static str,
    operation: &str,
    size: usize,
    frames: usize,
    ours: Routine<'a>,
    theirs: Routine<'a>,
) -> Figure<'a> {
    Figure {
        name: format!("codec {operation} {}", size_name(size)),
        group,
        size: Some(size),
        unit: Unit::Bytes(frames * size),
        benches: vec![
            Bench {
                label: "palisade",
                function: "palisade",
                routine: ours,
            },
            Bench {
                label: "LengthDelimitedCodec",
                function: "length_delimited",
                routine: theirs,
            },
        ],
    }
}

/// A routine decoding all of `wire` per iteration with `decode_all`, which returns the
/// payload bytes it found (`payload_bytes` in all). Decoding consumes the buffer: each
/// iteration gets a fresh copy, made outside the measured part.
fn decoding<'a>(
    wire: BytesMut,
    payload_bytes: usize,
    mut decode_all: impl FnMut(&mut BytesMut) -> usize + 'a,
) -> Routine<'a> {
    Box::new(move |iters| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let mut buf = BytesMut::from(&wire[..]);
            let start = Instant::now();
            let n = decode_all(&mut buf);
            total += start.elapsed();
            assert_eq!(n, payload_bytes);
        }
        total
    })
}

fn codec_figures<'a>() -> Vec<Figure<'a>> {
    let mut figures = Vec::new();
    for size in SIZES {
        let frames = (CODEC_BATCH / size).max(1);
        let payload = Bytes::from(vec![0xa5; size]);

        let ours = {
            let payload = payload.clone();
            let mut dst = BytesMut::with_capacity(frames * (size + 5));
            timed(move || {
                dst.clear();
                for _ in 0..frames {
                    encode(FrameKind::Data, black_box(&payload), &mut dst);
                }
                black_box(dst.len());
            })
        };
        let theirs = {
            let payload = payload.clone();
            let mut codec = LengthDelimitedCodec::new();
            let mut dst = BytesMut::with_capacity(frames * (size + 4));
            timed(move || {
                dst.clear();
                for _ in 0..frames {
                    codec
                        .encode(black_box(payload.clone()), &mut dst)
                        .expect("encode");
                }
                black_box(dst.len());
            })
        };
        figures.push(codec_figure(
            "inmem_codec_encode",
            "encode",
            size,
            frames,
            ours,
            theirs,
        ));

        let mut ours_wire = BytesMut::new();
        let mut theirs_wire = BytesMut::new();
        let mut codec = LengthDelimitedCodec::new();
        for _ in 0..frames {
            encode(FrameKind::Data, &payload, &mut ours_wire);
            codec
                .encode(payload.clone(), &mut theirs_wire)
                .expect("encode");
        }
        let mut ours = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let ours = decoding(ours_wire, frames * size, move |buf| {
            let mut n = 0;
            while let Some(frame) = ours.decode(buf).expect("decode") {
                n += frame.payload.len();
            }
            n
        });
        let mut theirs = LengthDelimitedCodec::new();
        let theirs = decoding(theirs_wire, frames * size, move |buf| {
            let mut n = 0;
            while let Some(frame) = theirs.decode(buf).expect("decode") {
                n += frame.len();
            }
            n
        });
        figures.push(codec_figure(
            "inmem_codec_decode",
            "decode",
            size,
            frames,
            ours,
            theirs,
        ));
    }
    figures
}

/// A routine making one palisade link per iteration and running it to joined; with
/// `remember` off, each side verifies the peer's chain in full every time, as bare
/// rustls does (palisade remembers chains it verified: `core/src/tls/chain_cache.rs`).
fn palisade_handshakes<'a>(configs: (Config, Config), remember: bool) -> Routine<'a> {
    let mut endpoints = Endpoints::new(configs);
    let now = Instant::now();
    timed(move || {
        palisade_core::tls::remember_verified_chains(remember);
        let (mut a, mut b) = endpoints.link(now);
        join(&mut a, &mut b, now);
        black_box((a, b));
    })
}

/// A routine making one bare rustls mutual-TLS handshake per iteration.
fn rustls_handshakes<'a>(
    (client, server): (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>),
) -> Routine<'a> {
    let mut wire = Vec::new();
    let mut scratch = vec![0; 64 * 1024];
    timed(move || {
        let (mut c, mut s) = rustls_pair(&client, &server);
        rustls_handshake(&mut c, &mut s, &mut wire, &mut scratch);
        black_box((c, s));
    })
}

/// A handshake figure: palisade (its chain cache on or off) beside a bare rustls
/// routine.
fn handshake_figure<'a>(
    name: &str,
    group: &'static str,
    palisade: (Config, Config),
    remember: bool,
    baseline: (&'static str, Routine<'a>),
) -> Figure<'a> {
    Figure {
        name: name.into(),
        group,
        size: None,
        unit: Unit::Handshake,
        benches: vec![
            Bench {
                label: "palisade",
                function: "palisade",
                routine: palisade_handshakes(palisade, remember),
            },
            Bench {
                label: baseline.0,
                function: "rustls",
                routine: baseline.1,
            },
        ],
    }
}

fn handshake_figures<'a>(certs: &Certs) -> Vec<Figure<'a>> {
    vec![
        Figure {
            name: "join alone (TLS off)".into(),
            group: "inmem_join_plain",
            size: None,
            unit: Unit::Handshake,
            benches: vec![Bench {
                label: "palisade",
                function: "palisade",
                routine: palisade_handshakes(certs.palisade(false), true),
            }],
        },
        handshake_figure(
            "handshake: TLS 1.3 mTLS + join",
            "inmem_handshake_tls",
            certs.palisade(true),
            true,
            ("rustls mTLS handshake", rustls_handshakes(certs.rustls())),
        ),
        // The same with every chain verified in full, as if each handshake brought a
        // certificate palisade had not seen: what the chain cache buys.
        handshake_figure(
            "handshake, every peer chain verified in full (chain cache off)",
            "inmem_handshake_tls_cold",
            certs.palisade(true),
            false,
            ("rustls mTLS handshake", rustls_handshakes(certs.rustls())),
        ),
        // What each user gets out of the box: palisade's default suite order against
        // rustls's (the figure above forces palisade's order on rustls too).
        handshake_figure(
            "handshake, each stack's default suites",
            "inmem_handshake_tls_defaults",
            certs.palisade(true),
            true,
            (
                "rustls, its default suites",
                rustls_handshakes(certs.rustls_defaults()),
            ),
        ),
    ]
}

/// One joined palisade link (TLS unless built `with_configs`), carrying `BULK_BATCH` bytes of `size`-byte frames
/// from the initiator to the acceptor per call.
struct PalisadeBulk {
    a: Connection,
    b: Connection,
    now: Instant,
    /// The batch: one payload shared by every frame, handed to `send_frames`.
    frames: Vec<Bytes>,
    size: usize,
}

impl PalisadeBulk {
    fn new(certs: &Certs, size: usize) -> Self {
        Self::with_configs(certs.palisade(true), size)
    }

    fn with_configs(configs: (Config, Config), size: usize) -> Self {
        let mut endpoints = Endpoints::new(configs);
        let now = Instant::now();
        let (mut a, mut b) = endpoints.link(now);
        join(&mut a, &mut b, now);
        Self {
            a,
            b,
            now,
            frames: vec![Bytes::from(vec![0xa5; size]); (BULK_BATCH / size).max(1)],
            size,
        }
    }

    fn run(&mut self) -> usize {
        let (mut sent, mut got, mut bytes) = (0, 0, 0);
        let mut on_frame = |f: &[u8]| {
            got += 1;
            bytes += f.len();
        };
        while sent < self.frames.len() || self.a.send_buffered() > 0 {
            if sent < self.frames.len() {
                match self.a.send_frames(&self.frames[sent..]) {
                    Ok(n) => sent += n,
                    Err(SendError::Full(_)) => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            while let Some(out) = self.a.poll_transmit() {
                feed_frames(&mut self.b, &out, self.now, &mut on_frame);
            }
        }
        assert_eq!(
            (got, bytes),
            (self.frames.len(), BULK_BATCH / self.size * self.size)
        );
        bytes
    }
}

/// Hands `bytes` to `conn` and reads every frame it delivers, a run at a time with
/// `poll_frame_run` (each payload a slice of the run's buffer); any other event fails
/// the bench.
fn feed_frames(
    conn: &mut Connection,
    bytes: &[u8],
    now: Instant,
    on_frame: &mut impl FnMut(&[u8]),
) {
    let mut off = 0;
    loop {
        let n = conn.handle_input(&bytes[off..], now);
        off += n;
        let mut frames = 0;
        while let Some(run) = conn.poll_frame_run() {
            frames += run.len();
            run.payloads().for_each(&mut *on_frame);
        }
        if let Some(event) = conn.poll_event() {
            panic!("unexpected event {event:?}");
        }
        if off == bytes.len() {
            return;
        }
        assert!(n > 0 || frames > 0, "the connection stopped taking input");
    }
}

/// One raw rustls client/server pair carrying the same payload bytes.
struct RustlsBulk {
    client: rustls::Connection,
    server: rustls::Connection,
    wire: Vec<u8>,
    scratch: Vec<u8>,
    payload: Vec<u8>,
    frames: usize,
    /// Whole frames back to back, up to 64 KiB (rustls's send buffer), for the
    /// coalesced baseline: written `BULK_BATCH / len` times, so its bytes stay as warm in
    /// the cache as palisade's send buffer.
    coalesced: Vec<u8>,
}

impl RustlsBulk {
    fn new(certs: &Certs, size: usize) -> Self {
        let (client, server) = certs.rustls();
        let (mut client, mut server) = rustls_pair(&client, &server);
        let mut wire = Vec::new();
        let mut scratch = vec![0; 64 * 1024];
        rustls_handshake(&mut client, &mut server, &mut wire, &mut scratch);
        let frames = (BULK_BATCH / size).max(1);
        Self {
            client,
            server,
            wire,
            scratch,
            payload: vec![0xa5; size],
            frames,
            coalesced: vec![0xa5; (COALESCED_BLOCK / size).max(1) * size],
        }
    }

    /// One `write` per frame: one record per frame.
    fn run_per_frame(&mut self) -> usize {
        self.carry(false)
    }

    /// The batch handed over already coalesced.
    fn run_coalesced(&mut self) -> usize {
        self.carry(true)
    }

    /// Writes the batch to the server, a frame per `write` or (`coalesced`) a coalesced
    /// block per `write`, then moves the last records over; returns the plaintext bytes
    /// the server received.
    fn carry(&mut self, coalesced: bool) -> usize {
        let block = if coalesced {
            &self.coalesced
        } else {
            &self.payload
        };
        let total = self.frames * self.payload.len();
        let mut got = 0;
        for _ in 0..total / block.len() {
            got += rustls_write(
                &mut self.client,
                &mut self.server,
                &mut self.wire,
                &mut self.scratch,
                black_box(block),
            );
        }
        got += rustls_transfer(
            &mut self.client,
            &mut self.server,
            &mut self.wire,
            &mut self.scratch,
        )
        .1;
        assert_eq!(got, total);
        got
    }
}

/// Links per bulk routine, used in turn: each link's long-lived buffers (rustls's
/// receive buffer, the baseline's scratch buffers) sit at addresses that favour or
/// hinder `memcpy` a little, and several links average that out.
const LINKS_PER_ROUTINE: usize = 4;

/// A routine running `run` on each of `links` in turn.
fn rotating<'a, T: 'a>(mut links: Vec<T>, run: fn(&mut T) -> usize) -> Routine<'a> {
    let mut next = 0;
    timed(move || {
        let n = links.len();
        black_box(run(&mut links[next % n]));
        next += 1;
    })
}

fn bulk_figures<'a>(certs: &Certs) -> Vec<Figure<'a>> {
    SIZES
        .into_iter()
        .map(|size| {
            let ours: Vec<PalisadeBulk> = (0..LINKS_PER_ROUTINE)
                .map(|_| PalisadeBulk::new(certs, size))
                .collect();
            let per_frame: Vec<RustlsBulk> = (0..LINKS_PER_ROUTINE)
                .map(|_| RustlsBulk::new(certs, size))
                .collect();
            let coalesced: Vec<RustlsBulk> = (0..LINKS_PER_ROUTINE)
                .map(|_| RustlsBulk::new(certs, size))
                .collect();
            Figure {
                name: format!("bulk TLS {}", size_name(size)),
                group: "inmem_bulk",
                size: Some(size),
                unit: Unit::Bytes((BULK_BATCH / size).max(1) * size),
                benches: vec![
                    Bench {
                        label: "palisade",
                        function: "palisade",
                        routine: rotating(ours, PalisadeBulk::run),
                    },
                    Bench {
                        label: "rustls, write per frame",
                        function: "rustls_per_frame",
                        routine: rotating(per_frame, RustlsBulk::run_per_frame),
                    },
                    Bench {
                        label: "rustls, coalesced",
                        function: "rustls_coalesced",
                        routine: rotating(coalesced, RustlsBulk::run_coalesced),
                    },
                ],
            }
        })
        .collect()
}

/// Plaintext links with the secret (every frame tagged) against plaintext links without
/// it, same frames, same run.
fn bulk_plain_figures<'a>(certs: &Certs) -> Vec<Figure<'a>> {
    let keyed = certs.palisade(false);
    let mut unkeyed = keyed.clone();
    unkeyed.0.keyring = None;
    unkeyed.1.keyring = None;
    [64, 1024, 16 * 1024]
        .into_iter()
        .map(|size| {
            let links = |configs: &(Config, Config)| -> Vec<PalisadeBulk> {
                (0..LINKS_PER_ROUTINE)
                    .map(|_| PalisadeBulk::with_configs(configs.clone(), size))
                    .collect()
            };
            Figure {
                name: format!("bulk plaintext {}", size_name(size)),
                group: "inmem_bulk_plain",
                size: Some(size),
                unit: Unit::Bytes((BULK_BATCH / size).max(1) * size),
                benches: vec![
                    Bench {
                        label: "palisade",
                        function: "authenticated",
                        routine: rotating(links(&keyed), PalisadeBulk::run),
                    },
                    Bench {
                        label: "palisade, no secret (no tag)",
                        function: "unauthenticated",
                        routine: rotating(links(&unkeyed), PalisadeBulk::run),
                    },
                ],
            }
        })
        .collect()
}

/// Registers every benchmark of `figures` with criterion.
fn run_criterion(c: &mut Criterion, figures: &mut [Figure<'_>]) {
    for figure in figures {
        let mut group = c.benchmark_group(figure.group);
        group.throughput(match figure.unit {
            Unit::Bytes(n) => Throughput::Bytes(n as u64),
            Unit::Handshake => Throughput::Elements(1),
        });
        let size = figure.size;
        for bench in &mut figure.benches {
            let id = match size {
                Some(size) => format!("{}/{}/{size}", figure.group, bench.function),
                None => format!("{}/{}", figure.group, bench.function),
            };
            let routine = &mut bench.routine;
            let f = |b: &mut criterion::Bencher<'_>| {
                ran(id.clone());
                b.iter_custom(&mut *routine);
            };
            match size {
                Some(size) => group.bench_function(BenchmarkId::new(bench.function, size), f),
                None => group.bench_function(bench.function, f),
            };
        }
        group.finish();
    }
}

/// palisade and its baselines in alternating rounds (the order rotates every round),
/// each round running every routine for `slice` in short timed blocks. Returns per
/// routine the 20th percentile of its per-iteration block times, in nanoseconds: on a
/// machine shared with other work, the blocks no other process interrupted. Both sides
/// are measured alike over the same period, so the ratio is fair even when criterion's
/// separate runs were hit by different load.
fn interleaved(figure: &mut Figure<'_>, rounds: usize, slice: Duration) -> Vec<f64> {
    const BLOCK: Duration = Duration::from_micros(50);
    let n = figure.benches.len();
    // Iterations per block (about BLOCK long), from a timing after one warm-up call.
    let per_block: Vec<u64> = figure
        .benches
        .iter_mut()
        .map(|b| {
            (b.routine)(1);
            let once = (b.routine)(1).max(Duration::from_nanos(1));
            (BLOCK.as_secs_f64() / once.as_secs_f64()).clamp(1.0, 1e6) as u64
        })
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let start = Instant::now();
            while start.elapsed() < slice {
                let t = (figure.benches[i].routine)(per_block[i]);
                times[i].push(t.as_secs_f64() * 1e9 / per_block[i] as f64);
            }
        }
    }
    times.iter_mut().map(|v| percentile(v, 0.2)).collect()
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let at = ((v.len() - 1) as f64 * p).round() as usize;
    v[at]
}

// ---------------------------------------------------------------------------------------
// Round trips on a simulated link

/// Round trips (2 × latency) until each side of a bare rustls mutual-TLS handshake
/// completes, on a link with a fixed one-way latency (the `Pair`'s model).
fn rustls_round_trips(certs: &Certs) -> (f64, f64) {
    let latency = Duration::from_millis(10);
    let (client, server) = certs.rustls();
    let (c, s) = rustls_pair(&client, &server);
    let mut conns = [c, s];
    let mut in_flight: [VecDeque<(Duration, Vec<u8>)>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut done: [Option<Duration>; 2] = [None, None];
    let mut now = Duration::ZERO;
    let mut scratch = vec![0; 64 * 1024];
    for _ in 0..100 {
        for i in 0..2 {
            let mut out = Vec::new();
            while conns[i].wants_write() {
                conns[i].write_tls(&mut out).expect("write_tls");
            }
            if !out.is_empty() {
                in_flight[1 - i].push_back((now + latency, out));
            }
        }
        let Some(next) = in_flight
            .iter()
            .filter_map(|q| q.front().map(|f| f.0))
            .min()
        else {
            break;
        };
        now = next;
        for i in 0..2 {
            while in_flight[i].front().is_some_and(|f| f.0 <= now) {
                let (_, bytes) = in_flight[i].pop_front().expect("a flight");
                let mut rest = &bytes[..];
                while !rest.is_empty() {
                    conns[i].read_tls(&mut rest).expect("read_tls");
                    conns[i].process_new_packets().expect("TLS error");
                    while conns[i].reader().read(&mut scratch).is_ok_and(|n| n > 0) {}
                }
            }
            if done[i].is_none() && !conns[i].is_handshaking() {
                done[i] = Some(now);
            }
        }
    }
    let rtt = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() / 0.020);
    (rtt(done[0]), rtt(done[1]))
}

/// Round trips to joined for (initiator, acceptor) on the testkit's `Pair`.
fn palisade_round_trips(certs: &Certs, tls: bool) -> (f64, f64) {
    let (a, b) = certs.palisade(tls);
    let mut pair = PairBuilder::new(a, b)
        .latency(Duration::from_millis(10))
        .server_name(ACCEPTOR)
        .build();
    pair.run();
    let rtt = |side| pair.round_trips_to_joined(side).unwrap_or(f64::NAN);
    (rtt(Side::Initiator), rtt(Side::Acceptor))
}

// ---------------------------------------------------------------------------------------
// Summary

/// Criterion's estimate of one iteration, in nanoseconds, from this run's
/// `new/estimates.json` (the slope when criterion sampled linearly, else the mean).
fn estimate_ns(id: &str) -> Option<f64> {
    let path = criterion_dir().join(id).join("new").join("estimates.json");
    common::estimate_ns(&std::fs::read_to_string(path).ok()?)
}

fn value(unit: Unit, ns: f64) -> f64 {
    match unit {
        Unit::Bytes(n) => n as f64 / ns,
        Unit::Handshake => 1e9 / ns,
    }
}

fn show(unit: Unit, v: Option<f64>) -> String {
    let unit_name = match unit {
        Unit::Bytes(_) => "GB/s",
        Unit::Handshake => "/s",
    };
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0} {unit_name}"),
        Some(v) => format!("{v:.2} {unit_name}"),
        None => "-".into(),
    }
}

/// Interleaved results of one figure: median ns per bench, median ratio per bench.
type Interleaved = Vec<f64>;

fn print_summary(figures: &[Figure<'_>], interleaved: &[Option<Interleaved>], certs: &Certs) {
    let was_run = |id: &str| {
        RAN.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|r| r == id)
    };
    let estimate = |id: &str| if was_run(id) { estimate_ns(id) } else { None };
    let tls_handshake = figures
        .iter()
        .find(|f| f.group == "inmem_handshake_tls")
        .and_then(|f| estimate(&f.id("rustls")));
    let ratio = |o: Option<f64>, b: Option<f64>| match (o, b) {
        (Some(o), Some(b)) => format!("{:.2}", o / b),
        _ => "-".into(),
    };
    println!();
    println!(
        "palisade in memory vs baseline; ratio = palisade / baseline (throughput or handshakes/s,"
    );
    println!("higher is better for palisade). Columns 3-5: criterion's estimates of this run.");
    println!("Columns 6-8 (p20): the same routines run again in alternating rounds, each the 20th");
    println!("percentile of short timed blocks (robust to other load on a shared machine).");
    println!();
    println!(
        "| {:<30} | {:<28} | {:>12} | {:>12} | {:>6} | {:>12} | {:>12} | {:>6} |",
        "figure",
        "baseline",
        "palisade",
        "baseline",
        "ratio",
        "palisade p20",
        "baseline p20",
        "ratio"
    );
    println!(
        "|{:-<32}|{:-<30}|{:->14}|{:->14}|{:->8}|{:->14}|{:->14}|{:->8}|",
        "", "", "", "", "", "", "", ""
    );
    for (figure, inter) in figures.iter().zip(interleaved) {
        let ours_id = figure.id(figure.benches[0].function);
        if !was_run(&ours_id) {
            continue;
        }
        let unit = figure.unit;
        let ours = estimate(&ours_id).map(|ns| value(unit, ns));
        let ours_p20 = inter.as_ref().map(|ns| value(unit, ns[0]));
        let mut rows: Vec<(&str, Option<f64>, Option<f64>)> = figure
            .benches
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, b)| {
                let base = estimate(&figure.id(b.function)).map(|ns| value(unit, ns));
                (b.label, base, inter.as_ref().map(|ns| value(unit, ns[i])))
            })
            .collect();
        if rows.is_empty() {
            // The join alone has no baseline of its own: the TLS handshake gives its scale.
            rows.push((
                "rustls mTLS handshake (scale)",
                tls_handshake.map(|ns| value(unit, ns)),
                None,
            ));
        }
        for (label, base, base_p20) in rows {
            println!(
                "| {:<30} | {:<28} | {:>12} | {:>12} | {:>6} | {:>12} | {:>12} | {:>6} |",
                figure.name,
                label,
                show(unit, ours),
                show(unit, base),
                ratio(ours, base),
                show(unit, ours_p20),
                show(unit, base_p20),
                ratio(ours_p20, base_p20),
            );
        }
    }
    let (ci, si) = rustls_round_trips(certs);
    let (pi, pa) = palisade_round_trips(certs, true);
    let (qi, qa) = palisade_round_trips(certs, false);
    println!();
    println!(
        "round trips to joined on the simulated link (Pair, fixed latency; initiator / acceptor):"
    );
    println!("| link                      | initiator | acceptor |");
    println!("|---------------------------|-----------|----------|");
    println!("| palisade, TLS 1.3 + join  | {pi:>9.1} | {pa:>8.1} |");
    println!("| palisade, TLS off         | {qi:>9.1} | {qa:>8.1} |");
    println!("| bare rustls TLS 1.3 mTLS  | {ci:>9.1} | {si:>8.1} |");
}

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn main() {
    let quick = quick_env() || has_arg("--quick");
    let mut criterion = Criterion::default().output_directory(&criterion_dir());
    if quick_env() {
        criterion = criterion
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
            .nresamples(10_000);
    }
    let mut criterion = criterion.configure_from_args();
    let certs = Certs::new("bench cluster CA");
    let mut figures = codec_figures();
    figures.extend(handshake_figures(&certs));
    figures.extend(bulk_figures(&certs));
    figures.extend(bulk_plain_figures(&certs));
    run_criterion(&mut criterion, &mut figures);
    criterion.final_summary();
    if !benchmarking() {
        // Smoke mode (`cargo test --benches`): check the figure that needs no timing.
        let (i, a) = palisade_round_trips(&certs, true);
        assert_eq!((i, a), (2.0, 1.5), "round trips to joined with TLS");
        return;
    }
    let (rounds, slice) = if quick {
        (10, Duration::from_millis(20))
    } else {
        (30, Duration::from_millis(40))
    };
    let results: Vec<Option<Interleaved>> = figures
        .iter_mut()
        .map(|figure| {
            let id = figure.id(figure.benches[0].function);
            let was_run = RAN.lock().unwrap_or_else(|p| p.into_inner()).contains(&id);
            (was_run && figure.benches.len() > 1).then(|| interleaved(figure, rounds, slice))
        })
        .collect();
    print_summary(&figures, &results, &certs);
}
