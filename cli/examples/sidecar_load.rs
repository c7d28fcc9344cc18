//! The echo server and load generator of `benches/sidecar.sh`: the same loopback workload
//! through palisade forwards, stunnel and spiped (python is too slow for connection rates).
//!
//! ```text
//! sidecar_load echo    ADDR                 echo every byte back, until killed
//! sidecar_load connect ADDR SECS CONC       connect, 64 B request/response, close; CONC at once
//! sidecar_load bulk    ADDR SECS            one stream, 64 KiB writes, the echo read back and
//!                                           checked byte by byte
//! sidecar_load latency ADDR[,ADDR...] COUNT one connection per ADDR, COUNT 64 B request/responses
//!                                           on each, the addresses taken in turn
//! sidecar_load idle    ADDR COUNT           COUNT connections, one 64 B round trip each, then held
//! ```
//!
//! Each load mode prints one line `key=value ...` for the script. `idle` prints `ready`
//! once every connection made its round trip and holds them until stdin closes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i}: expected {what} (see the module docs)"))
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    // `latency` takes several addresses, comma-separated; the other modes one.
    let addrs: Vec<SocketAddr> = args
        .get(2)
        .map(|a| a.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let addr = *addrs
        .first()
        .expect("argument 2: expected ADDR (see the module docs)");
    // Two workers: the machine the script runs on is small, and every tunnel gets the
    // same client.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match mode.as_str() {
            "echo" => echo(addr).await,
            "connect" => connect(addr, arg(&args, 3, "SECS"), arg(&args, 4, "CONC")).await,
            "bulk" => bulk(addr, arg(&args, 3, "SECS")).await,
            "latency" => latency(&addrs, arg(&args, 3, "COUNT")).await,
            "idle" => idle(addr, arg(&args, 3, "COUNT")).await,
            _ => Err("usage: sidecar_load echo|connect|bulk|latency|idle ADDR ...".into()),
        }
    })
}

async fn echo(addr: SocketAddr) -> Res<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// One 64 B request and its whole echo.
async fn round_trip(s: &mut TcpStream, req: &[u8; 64]) -> Res<()> {
    s.write_all(req).await?;
    let mut resp = [0u8; 64];
    s.read_exact(&mut resp).await?;
    if &resp != req {
        return Err("the echo differs from the request".into());
    }
    Ok(())
}

async fn connect(addr: SocketAddr, secs: f64, conc: usize) -> Res<()> {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (done, errors) = (done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let req = [7u8; 64];
            while Instant::now() < end {
                let one = async {
                    let mut s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    round_trip(&mut s, &req).await?;
                    s.shutdown().await?;
                    Res::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(5), one).await {
                    Ok(Ok(())) => done.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "conn_per_s={:.0} connections={n} errors={} secs={elapsed:.2}",
        n as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Byte `i` of a bulk stream: a pattern with a prime period, so a lost, repeated or
/// reordered chunk of any size shows.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

async fn bulk(addr: SocketAddr, secs: f64) -> Res<()> {
    let s = TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        // 64 KiB writes cut from one precomputed run of the pattern.
        let run: Vec<u8> = (0..64 * 1024 + 251).map(pattern).collect();
        let mut off = 0u64;
        loop {
            let start = (off % 251) as usize;
            if w.write_all(&run[start..start + 64 * 1024]).await.is_err() {
                return;
            }
            off += 64 * 1024;
        }
    });
    let mut buf = vec![0u8; 256 * 1024];
    // What the echo must be, compared a read at a time (memcmp: the check must not slow
    // the client down).
    let expect: Vec<u8> = (0..256 * 1024 + 251).map(pattern).collect();
    let mut got = 0u64; // bytes read back so far, all checked
    let mut read = async |r: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut [u8]| -> Res<usize> {
        let n = match tokio::time::timeout(Duration::from_secs(5), r.read(buf)).await {
            Ok(Ok(0)) => return Err("the tunnel closed the stream".into()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err("no echo for 5 s".into()),
        };
        let start = (got % 251) as usize;
        if buf[..n] != expect[start..start + n] {
            return Err(format!("the echo differs within bytes {got}..{}", got + n as u64).into());
        }
        got += n as u64;
        Ok(n)
    };
    // The first half second fills the pipes; the window after it is measured.
    let warm = Instant::now() + Duration::from_millis(500);
    while Instant::now() < warm {
        read(&mut r, &mut buf).await?;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut bytes = 0u64;
    while Instant::now() < end {
        bytes += read(&mut r, &mut buf).await? as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    writer.abort();
    println!(
        "mib_per_s={:.1} bytes={bytes} secs={elapsed:.2} checked={got}",
        bytes as f64 / elapsed / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Round trips on one connection per address, taken in turn (address 1, 2, ..., 1, 2,
/// ...): every path sees the same moments of the machine's load, which on a shared
/// machine moves far more than the paths differ.
async fn latency(addrs: &[SocketAddr], count: usize) -> Res<()> {
    let mut conns = Vec::new();
    for a in addrs {
        let s = TcpStream::connect(a).await?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let req = [3u8; 64];
    for _ in 0..100 {
        for s in &mut conns {
            round_trip(s, &req).await?; // warm-up
        }
    }
    let mut us = vec![Vec::with_capacity(count); conns.len()];
    for _ in 0..count {
        for (s, v) in conns.iter_mut().zip(&mut us) {
            let t = Instant::now();
            round_trip(s, &req).await?;
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    for (a, mut v) in addrs.iter().zip(us) {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
        println!(
            "addr={a} p50_us={:.1} p99_us={:.1} count={count}",
            q(0.50),
            q(0.99)
        );
    }
    Ok(())
}

async fn idle(addr: SocketAddr, count: usize) -> Res<()> {
    let mut conns = Vec::with_capacity(count);
    let req = [9u8; 64];
    for _ in 0..count {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        round_trip(&mut s, &req).await?;
        conns.push(s);
    }
    println!("ready {count}");
    // Held until stdin closes (std's stdin on a blocking thread: tokio's `io-std` is off here).
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
    })
    .await;
    drop(conns);
    Ok(())
}
