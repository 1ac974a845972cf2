//! Unit tests for `balance`.

use super::*;

const NO_EJECTION: Ejection = Ejection {
    after_failures: 0,
    duration_ms: 0,
};
const EJECT_3_FOR_10S: Ejection = Ejection {
    after_failures: 3,
    duration_ms: 10_000,
};

fn balancer(weights: &[u32], policy: Policy, checked: bool, eject: Ejection) -> Balancer {
    let servers = weights
        .iter()
        .map(|&w| (Arc::new(ServerHealth::default()), w))
        .collect();
    Balancer::new(servers, policy, checked, eject)
}

/// Picks `n` times at `now`, dropping each lease at once; counts picks per server.
fn counts(b: &Balancer, n: usize, now: u64) -> Vec<usize> {
    let mut c = vec![0; b.len()];
    for _ in 0..n {
        let p = b.pick_at(None, || now).expect("a server");
        c[p.server] += 1;
    }
    c
}

#[test]
fn weights_are_respected_exactly_over_whole_cycles() {
    let b = balancer(&[3, 1, 6], Policy::RoundRobin, false, NO_EJECTION);
    assert_eq!(counts(&b, 10 * 1000, 1), [3000, 1000, 6000]);
    // Equal weights alternate.
    let b = balancer(&[1, 1], Policy::RoundRobin, false, NO_EJECTION);
    let order: Vec<usize> = (0..4)
        .map(|_| b.pick_at(None, || 1).unwrap().server)
        .collect();
    assert_eq!(order, [0, 1, 0, 1]);
}

/// The longest run of one server in the schedule, going round the cycle.
fn longest_run(s: &[u16]) -> usize {
    let twice: Vec<u16> = s.iter().chain(s.iter()).copied().collect();
    let mut best = 1;
    let mut run = 1;
    for w in twice.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 1 };
        best = best.max(run);
    }
    best.min(s.len())
}

#[test]
fn the_schedule_interleaves_and_reduces_weights() {
    assert_eq!(&*schedule(&[1, 1]), [0, 1]);
    assert_eq!(&*schedule(&[3, 3]), [0, 1], "reduced by the gcd");
    assert_eq!(schedule(&[200, 100]).len(), 3, "reduced by the gcd");
    assert_eq!(&*schedule(&[1]), [0]);
    for (weights, longest) in [
        (&[5, 1, 1][..], 3),
        (&[2, 1], 2),
        (&[1, 1, 1, 1], 1),
        (&[4, 3, 2, 1], 2),
        (&[10, 1], 10),
    ] {
        let s = schedule(weights);
        for (i, &w) in weights.iter().enumerate() {
            let times = s.iter().filter(|&&x| usize::from(x) == i).count();
            assert_eq!(times, w as usize, "{weights:?}: {s:?}");
        }
        assert!(longest_run(&s) <= longest, "{weights:?}: {s:?}");
    }
}

#[test]
fn unhealthy_servers_are_skipped_and_the_rest_keep_their_ratio() {
    let b = balancer(&[1, 1, 2], Policy::RoundRobin, true, NO_EJECTION);
    for i in 0..3 {
        b.health(i).unwrap().observe(true, 2, 3);
    }
    b.health(1).unwrap().observe(false, 2, 1);
    assert_eq!(b.availability(1, 1), Availability::Down);
    let c = counts(&b, 3000, 1);
    assert_eq!(c[1], 0, "{c:?}");
    // Server 2 has twice server 0's weight: about 1000 and 2000.
    assert!((900..=1100).contains(&c[0]), "{c:?}");
    assert!((1900..=2100).contains(&c[2]), "{c:?}");
}

#[test]
fn every_server_failing_its_health_checks_means_no_server() {
    let b = balancer(&[1, 1], Policy::RoundRobin, true, NO_EJECTION);
    for i in 0..2 {
        b.health(i).unwrap().observe(false, 2, 3);
    }
    assert!(b.pick_at(None, || 1).is_none());
    assert!(!b.has_alternative(0));
    // Without health checks the same probe results mean nothing.
    let b = balancer(&[1], Policy::RoundRobin, false, NO_EJECTION);
    b.health(0).unwrap().observe(false, 2, 3);
    assert!(b.pick_at(None, || 1).is_some());
}

#[test]
fn new_servers_take_requests_only_while_no_server_is_known_healthy() {
    let b = balancer(&[1, 3], Policy::RoundRobin, true, NO_EJECTION);
    // Nothing probed yet (start-up): both, by weight, as a last resort.
    let p = b.pick_at(None, || 1).unwrap();
    assert!(p.last_resort);
    let c = counts(&b, 4000, 1);
    assert!((900..=1100).contains(&c[0]), "{c:?}");
    // Once one is known healthy, the unproven one waits for its first probe.
    assert!(b.health(0).unwrap().observe(true, 2, 3).is_some());
    assert_eq!(counts(&b, 100, 1), [100, 0]);
    assert!(!b.pick_at(None, || 1).unwrap().last_resort);
}

#[test]
fn the_first_probe_settles_then_thresholds_apply() {
    let h = ServerHealth::default();
    assert_eq!(
        h.observe(false, 2, 3),
        Some(Transition {
            from: Probed::Unknown,
            to: Probed::Unhealthy,
            after: 1
        })
    );
    assert_eq!(h.observe(true, 2, 3), None);
    assert_eq!(h.probed(), Probed::Unhealthy);
    assert_eq!(
        h.observe(true, 2, 3),
        Some(Transition {
            from: Probed::Unhealthy,
            to: Probed::Healthy,
            after: 2
        })
    );
    // Failures must be consecutive: a pass in between starts the count again.
    assert_eq!(h.observe(false, 2, 3), None);
    assert_eq!(h.observe(false, 2, 3), None);
    assert_eq!(h.observe(true, 2, 3), None);
    assert_eq!(h.observe(false, 2, 3), None);
    assert_eq!(h.observe(false, 2, 3), None);
    assert_eq!(h.probed(), Probed::Healthy);
    assert_eq!(
        h.observe(false, 2, 3).map(|t| t.to),
        Some(Probed::Unhealthy)
    );
}

#[test]
fn connect_failures_eject_for_a_while_and_one_more_failure_ejects_again() {
    let b = balancer(&[1, 1], Policy::RoundRobin, false, EJECT_3_FOR_10S);
    let t0 = 1_000;
    let h = b.health(1).unwrap();
    assert!(!h.connect_failed(EJECT_3_FOR_10S, t0));
    assert!(!h.connect_failed(EJECT_3_FOR_10S, t0));
    assert!(
        h.connect_failed(EJECT_3_FOR_10S, t0),
        "third failure ejects"
    );
    assert!(
        !h.connect_failed(EJECT_3_FOR_10S, t0),
        "already ejected: not counted twice"
    );
    assert_eq!(b.availability(1, t0 + 9_999), Availability::InDoubt);
    assert_eq!(counts(&b, 100, t0 + 9_999), [100, 0]);
    // The ejection ends: the server is back.
    assert_eq!(b.availability(1, t0 + 10_000), Availability::Up);
    assert_eq!(counts(&b, 100, t0 + 10_000), [50, 50]);
    // On probation: one more failure ejects it again; a success clears the count.
    assert!(h.connect_failed(EJECT_3_FOR_10S, t0 + 10_000));
    let later = t0 + 20_001;
    h.connected();
    assert!(!h.connect_failed(EJECT_3_FOR_10S, later));
    assert!(!h.connect_failed(EJECT_3_FOR_10S, later));
    assert!(h.connect_failed(EJECT_3_FOR_10S, later));
}

#[test]
fn ejection_off_never_ejects() {
    let h = ServerHealth::default();
    for _ in 0..100 {
        assert!(!h.connect_failed(NO_EJECTION, 1));
    }
    assert!(!h.ejected(1));
}

#[test]
fn a_passing_probe_ends_an_ejection() {
    let h = ServerHealth::default();
    h.observe(true, 2, 3);
    for _ in 0..3 {
        h.connect_failed(EJECT_3_FOR_10S, 5);
    }
    assert!(h.ejected(6));
    h.observe(true, 2, 3);
    assert!(!h.ejected(6));
    assert_eq!(h.availability(true, || 6), Availability::Up);
}

#[test]
fn when_every_server_is_ejected_one_is_tried_as_a_last_resort() {
    let b = balancer(&[1, 1], Policy::RoundRobin, false, EJECT_3_FOR_10S);
    for i in 0..2 {
        for _ in 0..3 {
            b.health(i).unwrap().connect_failed(EJECT_3_FOR_10S, 1);
        }
    }
    let p = b.pick_at(None, || 2).unwrap();
    assert!(p.last_resort);
    // Not the one the connection just failed to.
    assert_eq!(b.pick_at(Some(0), || 2).unwrap().server, 1);
    assert!(b.pick_at(Some(0), || 2).unwrap().last_resort);
}

#[test]
fn the_failed_server_is_excluded_from_the_retry() {
    let b = balancer(&[1, 1, 1], Policy::RoundRobin, false, NO_EJECTION);
    for _ in 0..100 {
        assert_ne!(b.pick_at(Some(1), || 1).unwrap().server, 1);
    }
    let one = balancer(&[1], Policy::RoundRobin, false, NO_EJECTION);
    assert!(one.pick_at(Some(0), || 1).is_none());
    assert!(!one.has_alternative(0));
    assert!(b.has_alternative(0));
}

#[test]
fn least_connections_prefers_the_least_loaded_per_unit_of_weight() {
    let b = balancer(&[1, 2], Policy::LeastConnections, false, NO_EJECTION);
    // Held leases: the weight-2 server ends up with twice the requests in flight.
    let held: Vec<Pick> = (0..30).map(|_| b.pick_at(None, || 1).unwrap()).collect();
    let on = |i: usize| held.iter().filter(|p| p.server == i).count();
    assert!((9..=11).contains(&on(0)), "{} {}", on(0), on(1));
    assert_eq!(on(0) + on(1), 30);
    assert_eq!(b.health(0).unwrap().in_flight() as usize, on(0));
    drop(held);
    assert_eq!(b.health(0).unwrap().in_flight(), 0);
    assert_eq!(b.health(1).unwrap().in_flight(), 0);
    // A busy server is avoided while it is busy.
    let busy: Vec<Pick> = (0..5).map(|_| b.pick_at(Some(1), || 1).unwrap()).collect();
    assert!(busy.iter().all(|p| p.server == 0));
    for _ in 0..5 {
        let p = b.pick_at(None, || 1).unwrap();
        assert_eq!(p.server, 1);
        drop(p);
    }
}

#[test]
fn least_connections_ties_take_turns() {
    let b = balancer(&[1, 1, 1], Policy::LeastConnections, false, NO_EJECTION);
    let c = counts(&b, 300, 1);
    assert_eq!(c, [100, 100, 100]);
}

#[test]
fn a_probe_is_claimed_once_and_scheduled() {
    let h = ServerHealth::default();
    assert!(h.start_probe(5, 95), "a new server is due at once");
    assert_eq!(h.next_probe(), 100);
    assert!(!h.start_probe(100, 95), "still running");
    h.finish_probe();
    assert!(!h.start_probe(99, 95));
    assert!(h.start_probe(100, 95));
    h.finish_probe();
    // A reload shortened the interval from 95 to 10 ms: the next probe comes sooner.
    assert!(!h.start_probe(190, 95));
    assert!(h.start_probe(150, 10));
}
