use super::*;

const MIN: Spec = Spec::Rate(Rate {
    requests: 3,
    window_seconds: 60,
});

fn day(requests: u64) -> Spec {
    Spec::Quota(Quota {
        requests,
        period: Period::Day,
    })
}

/// Unix milliseconds of a UTC date-time.
fn at(y: i64, m: i64, d: i64, secs: i64) -> i64 {
    days_from_civil(y, m, d) * 86_400_000 + secs * 1000
}

fn charge(limits: &[(&Spec, &Counter)], now_ms: i64) -> (bool, Vec<Standing>) {
    let mut out = vec![Standing::default(); limits.len()];
    let ok = reserve_all(limits, now_ms, &mut out);
    (ok, out)
}

#[test]
fn a_rate_admits_its_requests_then_refuses_without_counting_refusals() {
    let c = Counter::new();
    let t0 = 60_000 * 1000; // the start of a window
    for i in 0..3 {
        let (ok, s) = charge(&[(&MIN, &c)], t0 + i);
        assert!(ok, "request {i}");
        assert_eq!(s[0].remaining, 2 - i as u64);
        assert_eq!(s[0].reset_seconds, 60);
    }
    for _ in 0..100 {
        let (ok, s) = charge(&[(&MIN, &c)], t0 + 10);
        assert!(!ok);
        assert!(s[0].exceeded);
        assert_eq!(s[0].remaining, 0);
    }
    // The 100 refusals were not counted: the window holds exactly 3.
    assert_eq!(c.peek(&MIN, t0 + 10).remaining, 0);
    assert_eq!(unpack(c.current.load(Ordering::Relaxed)).1, 3);
}

#[test]
fn the_previous_window_is_weighted_by_its_overlap() {
    let c = Counter::new();
    let t0 = 600 * 60_000;
    for _ in 0..3 {
        assert!(charge(&[(&MIN, &c)], t0).0);
    }
    // At the start of the next window the previous 3 weigh fully: nothing fits.
    assert!(!charge(&[(&MIN, &c)], t0 + 60_000).0);
    // A third into it they weigh 2: one fits, then none.
    assert!(charge(&[(&MIN, &c)], t0 + 80_000).0);
    assert!(!charge(&[(&MIN, &c)], t0 + 80_001).0);
    // Two windows later everything has decayed.
    let (ok, s) = charge(&[(&MIN, &c)], t0 + 180_000);
    assert!(ok);
    assert_eq!(s[0].remaining, 2);
}

#[test]
fn retry_after_is_when_a_request_fits_and_never_before_the_reset() {
    for requests in [1u64, 2, 3, 10, 100] {
        for offset in [0i64, 1, 30_000, 59_999] {
            let spec = Spec::Rate(Rate {
                requests,
                window_seconds: 60,
            });
            let c = Counter::new();
            let t0 = 900 * 60_000 + offset;
            while charge(&[(&spec, &c)], t0).0 {}
            let (ok, s) = charge(&[(&spec, &c)], t0);
            assert!(!ok);
            let retry = s[0].retry_seconds;
            assert_eq!(retry, s[0].reset_seconds, "{requests} {offset}: {s:?}");
            // At the advertised time a request fits.
            assert!(
                charge(&[(&spec, &c)], t0 + retry as i64 * 1000).0,
                "{requests} {offset}: retry {retry} too early"
            );
        }
    }
}

#[test]
fn a_refusal_by_one_limit_charges_none_of_the_others() {
    let rate = Counter::new();
    let quota = Counter::new();
    let q = day(2);
    let now = at(2026, 11, 30, 3600);
    assert!(charge(&[(&MIN, &rate), (&q, &quota)], now).0);
    assert!(charge(&[(&MIN, &rate), (&q, &quota)], now).0);
    let (ok, s) = charge(&[(&MIN, &rate), (&q, &quota)], now);
    assert!(!ok);
    assert!(!s[0].exceeded && s[1].exceeded);
    // The rate limit still has its third request: the refusal was taken back.
    assert_eq!(rate.peek(&MIN, now).remaining, 1);
    assert_eq!(s[0].remaining, 1);
    assert_eq!(s[1].retry_seconds, 86_400 - 3600);
}

#[test]
fn quotas_reset_at_utc_calendar_boundaries() {
    let secs = |ms: i64| (ms / 1000) as u64;
    // February of a leap year, December into January, a 30-day month.
    for (y, m, next) in [
        (2028, 2, (2028, 3)),
        (2027, 2, (2027, 3)),
        (2026, 12, (2027, 1)),
        (2026, 11, (2026, 12)),
    ] {
        let mid = at(y, m, 15, 12 * 3600);
        let (start, end) = period_bounds(Period::Month, secs(mid));
        assert_eq!(start, secs(at(y, m, 1, 0)), "{y}-{m}");
        assert_eq!(end, secs(at(next.0, next.1, 1, 0)), "{y}-{m}");
    }
    assert_eq!(
        period_bounds(Period::Day, secs(at(2026, 11, 30, 86_399))),
        (secs(at(2026, 11, 30, 0)), secs(at(2026, 12, 1, 0)))
    );
    // A month quota used up on the 30th of November is back on the 1st of December.
    let q = Spec::Quota(Quota {
        requests: 1,
        period: Period::Month,
    });
    let c = Counter::new();
    assert!(charge(&[(&q, &c)], at(2026, 11, 30, 86_000)).0);
    let (ok, s) = charge(&[(&q, &c)], at(2026, 11, 30, 86_000));
    assert!(!ok);
    assert_eq!(s[0].reset_seconds, 400);
    assert!(charge(&[(&q, &c)], at(2026, 12, 1, 0)).0);
    // A day quota ignores the previous day entirely (no sliding).
    let d = day(1);
    let c = Counter::new();
    assert!(charge(&[(&d, &c)], at(2026, 11, 30, 86_399)).0);
    assert!(charge(&[(&d, &c)], at(2026, 12, 1, 0)).0);
}

#[test]
fn concurrent_requests_never_exceed_the_limit() {
    let spec = Spec::Rate(Rate {
        requests: 1000,
        window_seconds: 3600,
    });
    let c = std::sync::Arc::new(Counter::new());
    let now = 7200 * 1000;
    let admitted: u64 = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut out = [Standing::default()];
                (0..2000)
                    .filter(|_| reserve_all(&[(&spec, &c)], now, &mut out))
                    .count() as u64
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert!(admitted <= 1000, "{admitted}");
    // Whatever contention refused, the counter holds exactly what was admitted.
    assert_eq!(1000 - c.peek(&spec, now).remaining, admitted);
}

#[test]
fn fields_name_every_policy_in_draft_syntax() {
    let mut ch = Charge::default();
    assert_eq!(fields(&ch, "api", 0), None);
    ch.push(Applied {
        owner: Owner::Consumer,
        spec: Spec::Rate(Rate {
            requests: 100,
            window_seconds: 60,
        }),
        standing: Standing {
            remaining: 57,
            reset_seconds: 12,
            ..Standing::default()
        },
    });
    ch.push(Applied {
        owner: Owner::Route,
        spec: day(5000),
        standing: Standing {
            remaining: 0,
            reset_seconds: 400,
            exceeded: true,
            retry_seconds: 400,
            pending: false,
        },
    });
    let (policy, state) = fields(&ch, "api", at(2026, 11, 30, 0)).unwrap();
    assert_eq!(
        policy,
        r#""consumer-60s";q=100;w=60, "route.api-day";q=5000;w=86400"#
    );
    assert_eq!(
        state,
        r#""consumer-60s";r=57;t=12, "route.api-day";r=0;t=400"#
    );
    assert_eq!(ch.retry_after(), Some(400));
    assert_eq!(ch.violated().map(|a| a.owner), Some(Owner::Route));
}

#[test]
fn a_charge_records_every_limit_and_its_owner() {
    let (a, b) = (Counter::new(), Counter::new());
    let now = at(2026, 11, 30, 0);
    let one = Spec::Rate(Rate {
        requests: 1,
        window_seconds: 10,
    });
    let c = super::charge(&[(Owner::Consumer, MIN, &a), (Owner::Key, one, &b)], now);
    assert!(c.admitted());
    assert_eq!(c.iter().count(), 2);
    let c = super::charge(&[(Owner::Consumer, MIN, &a), (Owner::Key, one, &b)], now);
    assert!(!c.admitted());
    assert_eq!(c.violated().map(|v| v.owner), Some(Owner::Key));
    assert_eq!(c.retry_after(), Some(20));
    // The consumer's counter was not charged for the refusal.
    assert_eq!(a.peek(&MIN, now).remaining, 2);
    assert!(super::charge(&[], now).is_empty());
}

#[test]
fn retry_after_is_the_earliest_whole_second_a_request_fits() {
    // 2 per 10 s: two requests at the end of one window weigh on the next one, whose own
    // count leaves room: a request fits as soon as their weight drops to 1 (at 5 s).
    let spec = Spec::Rate(Rate {
        requests: 2,
        window_seconds: 10,
    });
    let c = Counter::new();
    let t0 = 1_000 * 10_000;
    assert!(charge(&[(&spec, &c)], t0 + 9_000).0);
    assert!(charge(&[(&spec, &c)], t0 + 9_000).0);
    let at = t0 + 10_000 + 1_000;
    let (ok, s) = charge(&[(&spec, &c)], at);
    assert!(!ok);
    assert_eq!(s[0].retry_seconds, 4, "{s:?}");
    assert!(!charge(&[(&spec, &c)], at + 3_000).0);
    assert!(charge(&[(&spec, &c)], at + 4_000).0);
}

#[test]
fn usage_counts_a_window_the_counter_has_not_moved_into() {
    let spec = Spec::Rate(Rate {
        requests: 10,
        window_seconds: 10,
    });
    let c = Counter::new();
    let t0 = 500 * 10_000;
    for _ in 0..4 {
        assert!(charge(&[(&spec, &c)], t0).0);
    }
    assert_eq!(c.used(&spec, t0), 4);
    // Half-way through the next window, the 4 weigh 2; two windows on, nothing.
    assert_eq!(c.used(&spec, t0 + 15_000), 2);
    assert_eq!(c.peek(&spec, t0 + 15_000).remaining, 8);
    assert_eq!(c.used(&spec, t0 + 20_000), 0);
}
