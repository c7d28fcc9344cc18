//! Unit tests of admission control (time passed in, no sockets).

use super::*;

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn limits() -> AdmissionLimits {
    AdmissionLimits {
        max_unjoined: 4,
        max_unjoined_per_source: 2,
        new_connection_rate_per_source: 1.0,
        new_connection_burst_per_source: 3,
        failed_join_rate_per_source: 1.0,
        failed_join_burst_per_source: 2,
        source_backoff: Duration::from_secs(10),
        max_tracked_sources: 5,
        min_evict_age: Duration::ZERO,
    }
}

#[test]
fn per_source_cap_refuses_the_source_not_others() {
    let a = Admission::new(limits()).unwrap();
    let now = Instant::now();
    let p1 = a.admit(peer("10.0.0.1:1"), now).unwrap();
    let p2 = a.admit(peer("10.0.0.1:2"), now).unwrap();
    assert!(p1.mark_heard(now));
    assert!(p2.mark_heard(now));
    let err = a.admit(peer("10.0.0.1:3"), now).unwrap_err();
    assert!(matches!(err, AdmissionError::PerSourceCap { limit: 2, .. }));
    assert!(err.to_string().contains("max_unjoined_per_source"));
    assert!(a.admit(peer("10.0.0.2:1"), now).is_ok());
}

#[test]
fn a_source_at_its_cap_gives_up_its_oldest_silent_connection() {
    let l = AdmissionLimits {
        new_connection_burst_per_source: 10,
        ..limits()
    };
    let a = Admission::new(l).unwrap();
    let now = Instant::now();
    let talking = a.admit(peer("10.0.0.1:1"), now).unwrap();
    assert!(talking.mark_heard(now));
    let silent = a.admit(peer("10.0.0.1:2"), now).unwrap();
    let newest = a.admit(peer("10.0.0.1:3"), now).unwrap();
    assert!(silent.was_evicted() && !talking.was_evicted());
    // Silence is not failure: neither the eviction nor its closing counts.
    assert_eq!(silent.failed(now), None);
    assert_eq!(newest.failed(now), None);
    let s = a.stats();
    assert_eq!((s.failed, s.evicted, s.silent), (0, 1, 1), "{s:?}");
    assert!(newest.mark_heard(now));
    assert!(matches!(
        a.admit(peer("10.0.0.1:4"), now),
        Err(AdmissionError::PerSourceCap { .. })
    ));
}

#[test]
fn a_bigger_holders_silent_connection_goes_at_any_age_a_handshake_only_when_old() {
    let l = AdmissionLimits {
        max_unjoined: 5,
        max_unjoined_per_source: 3,
        min_evict_age: Duration::from_secs(1),
        new_connection_burst_per_source: 10,
        max_tracked_sources: 16,
        ..limits()
    };
    let a = Admission::new(l).unwrap();
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(2);
    let lone = a.admit(peer("10.0.0.1:1"), t0).unwrap();
    let big: Vec<_> = (0..3)
        .map(|i| a.admit(peer(&format!("10.0.0.2:{i}")), t0).unwrap())
        .collect();
    let other = a.admit(peer("10.0.0.3:1"), t0).unwrap();
    // Full. A newcomer holding nothing takes the biggest holder's oldest silent
    // connection, young as it is, not the older lone one.
    let n1 = a.admit(peer("10.0.0.4:1"), t0).unwrap();
    assert!(big[0].was_evicted());
    assert!(!lone.was_evicted() && !big[1].was_evicted() && !other.was_evicted());
    assert_eq!(a.stats().failed, 0, "a silent eviction is no failure");
    // A silent connection of a holder no bigger than the newcomer (10.0.0.4 holds one
    // too) is safe while young, and while it is held no handshake is evicted either.
    for p in [&lone, &big[1], &big[2], &n1] {
        assert!(p.mark_heard(t0));
    }
    assert!(matches!(
        a.admit(peer("10.0.0.4:2"), t0),
        Err(AdmissionError::Full { limit: 5, .. })
    ));
    // Only handshakes in progress, all young: refused, even for a newcomer from afar.
    assert!(other.mark_heard(t0));
    assert!(a.admit(peer("10.0.0.5:1"), t0).is_err());
    // Old enough: the biggest holder's oldest handshake goes, and counts against it.
    let _n2 = a.admit(peer("10.0.0.5:1"), t1).unwrap();
    assert!(big[1].was_evicted() && !lone.was_evicted() && !big[2].was_evicted());
    let s = a.stats();
    assert_eq!((s.failed, s.evicted_mid_handshake), (1, 1), "{s:?}");
    assert_eq!(big[1].failed(t1), None, "counted once, at the eviction");
    assert_eq!(a.stats().failed, 1);
}

#[test]
fn the_oldest_unjoined_is_evicted_and_closed() {
    let a = Admission::new(limits()).unwrap();
    let now = Instant::now();
    let closed = Arc::new(AtomicU64::new(0));
    let mut permits = Vec::new();
    for i in 0..4 {
        let p = a.admit(peer(&format!("10.0.{i}.1:1")), now).unwrap();
        let c = Arc::clone(&closed);
        p.on_evict(move || {
            c.fetch_add(1 << (8 * i), Ordering::Relaxed);
        });
        permits.push(p);
    }
    let newest = a.admit(peer("10.0.9.1:1"), now).unwrap();
    assert_eq!(closed.load(Ordering::Relaxed), 1, "the first one, only");
    assert!(permits[0].was_evicted() && !newest.was_evicted());
    assert_eq!(a.unjoined(), 4);
    // An eviction is ours, not the peer's failure.
    assert_eq!(permits[0].failed(now), None);
    assert_eq!(a.stats().failed, 0);
    assert_eq!(a.stats().evicted, 1);
    assert!(permits[0]
        .eviction_error()
        .to_string()
        .contains("max_unjoined"));
}

#[test]
fn joined_or_dropped_permits_free_their_slot() {
    let a = Admission::new(limits()).unwrap();
    let now = Instant::now();
    let p = a.admit(peer("10.0.0.1:1"), now).unwrap();
    let q = p.clone();
    drop(p);
    assert_eq!(a.unjoined(), 1, "a clone still holds it");
    drop(q);
    assert_eq!(a.unjoined(), 0);
    let p = a.admit(peer("10.0.0.1:1"), now).unwrap();
    p.joined();
    assert_eq!(a.unjoined(), 0);
    drop(p);
    assert_eq!(a.stats().joined, 1);
}

#[test]
fn handshakes_are_rate_limited_per_source_when_they_start() {
    let a = Admission::new(limits()).unwrap();
    let t0 = Instant::now();
    for i in 0..3 {
        let p = a.admit(peer(&format!("10.0.0.1:{i}")), t0).unwrap();
        assert!(p.mark_heard(t0));
    }
    // Admitted (a silent socket costs nothing), but its first bytes are refused.
    let over = a.admit(peer("10.0.0.1:9"), t0).unwrap();
    assert!(!over.mark_heard(t0) && !over.mark_heard(t0));
    assert!(over.was_evicted() && !over.heard());
    let err = over.eviction_error();
    assert!(matches!(
        err,
        AdmissionError::ConnectionRate { burst: 3, .. }
    ));
    assert!(err.to_string().contains("new_connection_rate_per_source"));
    // Closed by us: not a failed join of the source.
    assert_eq!(over.failed(t0), None);
    let s = a.stats();
    assert_eq!((s.refused_rate, s.failed), (1, 0), "{s:?}");
    // Another source is not affected; this one gets a token back after a second.
    assert!(a.admit(peer("10.0.0.2:1"), t0).unwrap().mark_heard(t0));
    drop(over);
    let t1 = t0 + Duration::from_secs(1);
    assert!(a.admit(peer("10.0.0.1:10"), t1).unwrap().mark_heard(t1));
}

#[test]
fn silent_connections_take_no_token_of_the_rate() {
    let l = AdmissionLimits {
        max_unjoined: 8,
        max_unjoined_per_source: 4,
        max_tracked_sources: 16,
        ..limits()
    };
    let a = Admission::new(l).unwrap();
    let t0 = Instant::now();
    // Far more silent connections than the burst of 3, each giving way to the next.
    let silent: Vec<_> = (0..50)
        .map(|i| a.admit(peer(&format!("10.0.0.1:{i}")), t0).unwrap())
        .collect();
    assert_eq!(silent.iter().filter(|p| !p.was_evicted()).count(), 4);
    // A peer behind the same address still starts its handshake.
    let peer_behind_the_nat = a.admit(peer("10.0.0.1:999"), t0).unwrap();
    assert!(peer_behind_the_nat.mark_heard(t0));
    assert_eq!(a.stats().refused_rate, 0);
}

#[test]
fn failures_past_the_burst_back_the_source_off() {
    let a = Admission::new(limits()).unwrap();
    let t0 = Instant::now();
    let p = a.admit(peer("10.0.0.1:1"), t0).unwrap();
    assert!(p.mark_heard(t0));
    assert_eq!(p.failed(t0), None);
    assert_eq!(p.failed(t0), None);
    assert_eq!(p.failed(t0), Some(Duration::from_secs(10)));
    drop(p);
    let err = a
        .admit(peer("10.0.0.1:2"), t0 + Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(err, AdmissionError::Backoff { remaining, .. } if remaining == Duration::from_secs(5))
    );
    assert!(err.to_string().contains("source_backoff"));
    assert!(a.admit(peer("10.0.0.2:1"), t0).is_ok());
    assert!(a
        .admit(peer("10.0.0.1:3"), t0 + Duration::from_secs(10))
        .is_ok());
    assert_eq!(a.stats().backoffs, 1);
}

#[test]
fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
    assert_eq!(
        source_of("2001:db8:1:2:aaaa::1".parse().unwrap()),
        "2001:db8:1:2::".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        source_of("::ffff:10.1.2.3".parse().unwrap()),
        "10.1.2.3".parse::<IpAddr>().unwrap()
    );
    let a = Admission::new(limits()).unwrap();
    let now = Instant::now();
    let p1 = a.admit(peer("[2001:db8::1]:1"), now).unwrap();
    let p2 = a.admit(peer("[2001:db8::2]:1"), now).unwrap();
    assert!(p1.mark_heard(now));
    assert!(p2.mark_heard(now));
    assert!(a.admit(peer("[2001:db8::3]:1"), now).is_err());
    assert!(a.admit(peer("[2001:db8:0:1::3]:1"), now).is_ok());
}

#[test]
fn the_source_table_stays_bounded() {
    let a = Admission::new(limits()).unwrap();
    let now = Instant::now();
    for i in 0..100 {
        let p = a.admit(peer(&format!("10.1.{}.{}:1", i / 256, i % 256)), now);
        drop(p);
    }
    assert!(a.stats().tracked_sources <= 5);
}

#[test]
fn bad_limits_are_named() {
    let mut l = limits();
    l.max_unjoined_per_source = 0;
    assert_eq!(
        l.validate(),
        Err(AdmissionError::BadSetting {
            setting: "max_unjoined_per_source"
        })
    );
    let mut l = limits();
    l.max_tracked_sources = 4;
    assert!(l
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_unjoined"));
    assert_eq!(AdmissionLimits::default().validate(), Ok(()));
}

#[test]
fn slow_joins_seen_raise_the_eviction_age() {
    let mut slow = JoinTimes::default();
    for _ in 0..19 {
        slow.record(Duration::from_millis(700));
    }
    assert_eq!(slow.p99(), None, "too few joins to go by");
    slow.record(Duration::from_millis(700));
    assert_eq!(slow.p99(), Some(Duration::from_millis(1024)));
    let a = Admission::new(AdmissionLimits {
        min_evict_age: Duration::from_secs(1),
        ..limits()
    })
    .unwrap();
    let mut st = a.lock();
    assert_eq!(a.min_age(&st), Duration::from_secs(1));
    st.joins = slow;
    assert_eq!(a.min_age(&st), Duration::from_millis(3 * 1024));
    // Fast joins never lower it below the setting; very slow ones raise it to 10 s at most.
    let mut fast = JoinTimes::default();
    let mut glacial = JoinTimes::default();
    for _ in 0..2000 {
        fast.record(Duration::from_millis(3));
        glacial.record(Duration::from_secs(60));
    }
    st.joins = fast;
    assert_eq!(a.min_age(&st), Duration::from_secs(1));
    st.joins = glacial;
    assert_eq!(a.min_age(&st), Duration::from_secs(10));
}

#[test]
fn a_source_holding_the_most_gives_up_its_own_silent_connection_at_any_age() {
    let l = AdmissionLimits {
        max_unjoined: 3,
        max_unjoined_per_source: 3,
        min_evict_age: Duration::from_secs(60),
        new_connection_burst_per_source: 10,
        ..limits()
    };
    let a = Admission::new(l).unwrap();
    let now = Instant::now();
    let other = a.admit(peer("10.0.0.1:1"), now).unwrap();
    let own: Vec<_> = (0..2)
        .map(|i| a.admit(peer(&format!("10.0.0.2:{i}")), now).unwrap())
        .collect();
    // The biggest source replaces its own oldest silent connection, however young.
    let _newest = a.admit(peer("10.0.0.2:9"), now).unwrap();
    assert!(own[0].was_evicted() && !own[1].was_evicted() && !other.was_evicted());
    assert_eq!(a.stats().failed, 0);
}

#[test]
fn a_crowd_of_addresses_from_one_network_is_evicted_before_a_lone_peer() {
    let l = AdmissionLimits {
        max_unjoined: 6,
        min_evict_age: Duration::from_secs(1),
        max_tracked_sources: 16,
        ..limits()
    };
    let a = Admission::new(l).unwrap();
    let t0 = Instant::now();
    // The lone peer is the oldest, and its address holds as many slots as any other.
    let lone = a.admit(peer("192.0.2.7:1"), t0).unwrap();
    let crowd: Vec<_> = (1..=5)
        .map(|i| a.admit(peer(&format!("198.51.100.{i}:1")), t0).unwrap())
        .collect();
    let t1 = t0 + Duration::from_secs(2);
    let _newcomer = a.admit(peer("203.0.113.1:1"), t1).unwrap();
    assert!(
        !lone.was_evicted(),
        "the lone peer gave way to a crowd of one /24"
    );
    assert_eq!(crowd.iter().filter(|p| p.was_evicted()).count(), 1);
    assert!(crowd[0].was_evicted(), "within the crowd, the oldest goes");
}

#[test]
fn networks_are_ipv4_24s_and_ipv6_48s() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(group_of(ip("198.51.100.77")), ip("198.51.100.0"));
    assert_eq!(group_of(ip("::ffff:198.51.100.77")), ip("198.51.100.0"));
    assert_eq!(group_of(ip("2001:db8:1:2:3::9")), ip("2001:db8:1::"));
    assert_ne!(group_of(ip("2001:db8:1::1")), group_of(ip("2001:db8:2::1")));
}
