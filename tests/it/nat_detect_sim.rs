//! The NAT detector against the STUN server through every simulated NAT
//! behaviour: 3 mappings x 3 filterings, each with the port allocations a
//! real NAT uses, plus no NAT and blocked UDP, over a network with delay,
//! jitter and a little loss, in virtual time. Every classification must be
//! exact; and it must not depend on the seed.

use natter::nat::{DetectorConfig, Filtering, Mapping};
use natter::sim::detect::DetectLab;
use natter::sim::nat::{FilteringBehavior, MappingBehavior, NatConfig, PortAllocation};
use natter::sim::net::{LinkModel, Network};
use natter::time::Millis;
use std::net::{IpAddr, SocketAddr};

const T0: u64 = 1_800_000_000_000;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn public_ip() -> IpAddr {
    "198.18.0.1".parse().unwrap()
}

fn lab(seed: u64, client: &str, nat: Option<NatConfig>, loss: f64) -> DetectLab {
    let net = Network::new(seed, Millis(T0), LinkModel::new(20, 10, loss));
    let mut l = DetectLab::new(seed, net, a(client), nat, DetectorConfig::default());
    l.add_server(a("198.51.100.1:7710"), Some(a("198.51.100.2:7711")));
    l.detector.set_servers(vec![a("198.51.100.1:7710")]);
    l.detector.set_local(Millis(T0), Some(a(client)));
    l
}

fn expected_mapping(m: MappingBehavior) -> Mapping {
    match m {
        MappingBehavior::EndpointIndependent => Mapping::EndpointIndependent,
        MappingBehavior::AddressDependent => Mapping::AddressDependent,
        MappingBehavior::AddressPortDependent => Mapping::AddressPortDependent,
    }
}

fn expected_filtering(f: FilteringBehavior) -> Filtering {
    match f {
        FilteringBehavior::EndpointIndependent => Filtering::EndpointIndependent,
        FilteringBehavior::AddressDependent => Filtering::AddressDependent,
        FilteringBehavior::AddressPortDependent => Filtering::AddressPortDependent,
    }
}

#[test]
fn every_mapping_and_filtering_is_classified() {
    let _turn = scenario!();
    use FilteringBehavior as F;
    use MappingBehavior as M;
    let mut rows = Vec::new();
    let mut worst = 0;
    for m in [
        M::EndpointIndependent,
        M::AddressDependent,
        M::AddressPortDependent,
    ] {
        for f in [
            F::EndpointIndependent,
            F::AddressDependent,
            F::AddressPortDependent,
        ] {
            for ports in [
                PortAllocation::Preserve,
                PortAllocation::Sequential {
                    start: 30_000,
                    step: 1,
                },
                PortAllocation::Random,
            ] {
                for seed in 1..=5 {
                    let mut cfg = NatConfig::new(public_ip(), m, f);
                    cfg.ports = ports;
                    let mut l = lab(seed, "10.0.0.2:5000", Some(cfg), 0.02);
                    let r = l.detect("login", 20_000).expect("a report");
                    let got = (r.mapping, r.filtering);
                    let want = (expected_mapping(m), expected_filtering(f));
                    assert_eq!(got, want, "{m:?}/{f:?} {ports:?} seed {seed}: {r:#?}");
                    assert!(!r.udp_blocked);
                    assert_eq!(r.public.map(|p| p.ip()), Some(public_ip()));
                    assert!(r.duration_ms <= 6_000, "{}", r.duration_ms);
                    worst = worst.max(r.duration_ms);
                }
            }
            rows.push(format!("{m:?}/{f:?}"));
        }
    }
    assert_eq!(rows.len(), 9);
    println!("9 NAT behaviours x 3 port allocations x 5 seeds classified; slowest run {worst} ms");
}

#[test]
fn classic_nat_types() {
    let _turn = scenario!();
    let cases = [
        (
            NatConfig::full_cone(public_ip()),
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
        ),
        (
            NatConfig::restricted_cone(public_ip()),
            Mapping::EndpointIndependent,
            Filtering::AddressDependent,
        ),
        (
            NatConfig::port_restricted_cone(public_ip()),
            Mapping::EndpointIndependent,
            Filtering::AddressPortDependent,
        ),
        (
            NatConfig::symmetric(public_ip()),
            Mapping::AddressPortDependent,
            Filtering::AddressPortDependent,
        ),
    ];
    for (cfg, m, f) in cases {
        let mut l = lab(11, "10.0.0.2:5000", Some(cfg), 0.0);
        let r = l.detect("login", 20_000).unwrap();
        assert_eq!((r.mapping, r.filtering), (m, f), "{r:#?}");
        // Cones keep the port; the symmetric NAT's first mapping is the
        // public address reported.
        assert_eq!(r.public.unwrap().ip(), public_ip());
        println!(
            "{:<10} {:<5} {:<5} {:>5} ms {:>2} requests",
            format!("{:?}", cfg.mapping)
                .chars()
                .take(10)
                .collect::<String>(),
            r.mapping.short(),
            r.filtering.short(),
            r.duration_ms,
            r.requests
        );
    }
}

#[test]
fn no_nat_and_blocked_udp() {
    let _turn = scenario!();
    let mut l = lab(3, "192.0.2.10:5000", None, 0.0);
    let r = l.detect("login", 20_000).unwrap();
    assert_eq!(
        (r.mapping, r.filtering),
        (Mapping::NoNat, Filtering::EndpointIndependent)
    );
    assert_eq!(r.public, Some(a("192.0.2.10:5000")));
    assert!(!r.udp_blocked);

    let mut l = lab(
        4,
        "10.0.0.2:5000",
        Some(NatConfig::udp_blocked(public_ip())),
        0.0,
    );
    let r = l.detect("login", 20_000).unwrap();
    assert!(r.udp_blocked, "{r:#?}");
    assert_eq!(
        (r.mapping, r.filtering),
        (Mapping::Unknown, Filtering::Unknown)
    );
    assert_eq!(r.public, None);
    assert!(r.duration_ms <= 2_000);

    // UDP unblocked: the next run sees the port-restricted cone behind it.
    let nat = l.nat.unwrap();
    l.net.nat_mut(nat).set_udp_blocked(false);
    let r = l.detect("UDP works again", 20_000).unwrap();
    assert!(!r.udp_blocked);
    assert_eq!(
        (r.mapping, r.filtering),
        (
            Mapping::EndpointIndependent,
            Filtering::AddressPortDependent
        )
    );
}

#[test]
fn a_new_nat_is_detected_again() {
    let _turn = scenario!();
    // The client moves from a full cone to a symmetric NAT (a new public
    // address): the attach answer of its supernode shows another address,
    // and the detector re-checks by itself.
    let mut l = lab(
        5,
        "10.0.0.2:5000",
        Some(NatConfig::full_cone(public_ip())),
        0.0,
    );
    let r = l.detect("login", 20_000).unwrap();
    assert_eq!(r.filtering, Filtering::EndpointIndependent);
    let mut l2 = lab(
        6,
        "10.0.0.2:5000",
        Some(NatConfig::symmetric("198.18.0.99".parse().unwrap())),
        0.0,
    );
    // Carry the detector (with its last report) over to the new network.
    std::mem::swap(&mut l2.detector, &mut l.detector);
    l2.net.advance_to(Millis(T0 + 60_000));
    l2.detector.observe_mapped(
        Millis(T0 + 60_000),
        a("198.51.100.1:7710"),
        a("198.18.0.99:41000"),
    );
    let r2 = l2
        .run_until_report(Millis(T0 + 90_000))
        .expect("a re-check");
    assert_eq!(r2.reason, "public address changed");
    assert_eq!(
        (r2.mapping, r2.filtering),
        (
            Mapping::AddressPortDependent,
            Filtering::AddressPortDependent
        )
    );
    assert_eq!(
        r2.public.unwrap().ip(),
        "198.18.0.99".parse::<IpAddr>().unwrap()
    );
}
