//! A supernode's metrics: attached clients, records held, lookups and
//! their latency, envelopes and mailboxes, relay allocations and bytes,
//! link handshakes and sessions, STUN, and every refusal and drop by
//! component and reason.

use super::Exposition;
use crate::link::LinkStats;
use crate::nat::StunStats;
use crate::overlay::SupernodeStats;
use crate::overlay::membership::MembershipStats;
use crate::overlay::supernode::EnvelopeStats;
use crate::relay::TurnStats;

/// A snapshot of a supernode's cores, taken by its driver on request.
#[derive(Debug, Clone, Default)]
pub struct SupernodeCounters {
    pub overlay: SupernodeStats,
    pub envelopes: EnvelopeStats,
    pub membership: MembershipStats,
    pub link: LinkStats,
    pub stun: Option<StunStats>,
    /// Clients attached now.
    pub clients: usize,
    /// Directory records held now (as owner or replica).
    pub records: usize,
    /// Supernodes this one believes alive, itself included.
    pub members: usize,
    /// Offline envelopes held for users: how many, and their bytes.
    pub mailbox: (usize, usize),
    pub link_sessions: usize,
    /// Datagrams of no protocol the node speaks.
    pub dropped_datagrams: u64,
    /// STUN messages no core took.
    pub stun_unhandled: u64,
}

/// The relay's side of a scrape (its service runs as its own task).
#[derive(Debug, Clone, Default)]
pub struct RelayCounters {
    pub turn: TurnStats,
    /// Datagrams dropped before the relay core: its queue was full.
    pub queue_drops: u64,
    /// The TCP listener's streams (TURN and link over TCP).
    pub tcp: crate::tcp_limits::TcpAdmissionStats,
}

/// What a supernode scrape shows.
pub fn exposition(c: &SupernodeCounters, relay: Option<&RelayCounters>) -> Exposition {
    let mut e = Exposition::new();
    overlay(&mut e, c);
    link(&mut e, &c.link, c.link_sessions);
    if let Some(s) = &c.stun {
        e.counter(
            "natter_stun_requests_total",
            "STUN Binding requests answered.",
            &[],
            s.requests,
        );
        e.counter(
            "natter_stun_behaviour_tests_total",
            "Answers from another address or port (RFC 5780 NAT behaviour tests).",
            &[],
            s.changed,
        );
    }
    if let Some(r) = relay {
        relay_counters(&mut e, r);
    }
    drops(&mut e, c, relay);
    e
}

fn overlay(e: &mut Exposition, c: &SupernodeCounters) {
    let o = &c.overlay;
    e.gauge(
        "natter_supernode_clients",
        "Clients attached.",
        &[],
        c.clients as f64,
    );
    e.gauge(
        "natter_supernode_clients_peak",
        "Most clients attached at once since start.",
        &[],
        o.peak_clients as f64,
    );
    e.gauge(
        "natter_supernode_records",
        "Directory records held (as owner or replica).",
        &[],
        c.records as f64,
    );
    e.gauge(
        "natter_supernode_members",
        "Supernodes believed alive, this one included.",
        &[],
        c.members as f64,
    );
    let l = "Lookups asked by attached clients, by result.";
    e.counter(
        "natter_supernode_lookups_total",
        l,
        &[("result", "all")],
        o.lookups,
    );
    e.counter(
        "natter_supernode_lookups_total",
        l,
        &[("result", "found")],
        o.lookups_found,
    );
    e.counter(
        "natter_supernode_lookups_total",
        l,
        &[("result", "cached")],
        o.lookups_cached,
    );
    e.histogram(
        "natter_supernode_lookup_duration_seconds",
        "Time from a client's lookup to its answer.",
        &o.lookup_latency,
    );
    e.counter(
        "natter_supernode_queries_sent_total",
        "Queries sent to record owners (overlay hops of lookups).",
        &[],
        o.queries_sent,
    );
    e.counter(
        "natter_supernode_records_stored_total",
        "Records accepted for storage.",
        &[],
        o.records_stored,
    );
    let d = "Directory digests sent to owners, and digest buckets found different: \
             repaired, or explained by claims in flight.";
    for (what, v) in [
        ("digest_sent", o.digests_sent),
        ("bucket_repaired", o.digest_repairs),
        ("bucket_in_flight", o.digest_in_flight),
    ] {
        e.counter("natter_supernode_digests_total", d, &[("event", what)], v);
    }
    let r = "Clients' record refreshes: held (the owners' copy was still fresh), \
             sent to owners as deltas, and deltas an owner could not apply.";
    for (what, v) in [
        ("held", o.refreshes_held),
        ("sent", o.refreshes_sent),
        ("unapplied", o.refreshes_unapplied),
    ] {
        e.counter(
            "natter_supernode_record_refreshes_total",
            r,
            &[("outcome", what)],
            v,
        );
    }
    let b = "Bytes sent, by traffic kind.";
    e.counter(
        "natter_supernode_sent_bytes_total",
        b,
        &[("kind", "all")],
        o.bytes_sent,
    );
    e.counter(
        "natter_supernode_sent_bytes_total",
        b,
        &[("kind", "directory")],
        o.directory_bytes_sent,
    );
    e.counter(
        "natter_supernode_sent_bytes_total",
        b,
        &[("kind", "membership")],
        c.membership.bytes_sent,
    );
    let en = &c.envelopes;
    let h = "Envelopes (chat, call and contact messages), by what became of them.";
    for (what, v) in [
        ("received", en.received),
        ("forwarded", en.forwarded),
        ("delivered", en.delivered),
        ("stored", en.stored),
        ("delivered_from_mailbox", en.mailbox_delivered),
        ("expired", en.expired),
    ] {
        e.counter(
            "natter_supernode_envelopes_total",
            h,
            &[("outcome", what)],
            v,
        );
    }
    e.gauge(
        "natter_supernode_mailbox_envelopes",
        "Offline envelopes held for users.",
        &[],
        c.mailbox.0 as f64,
    );
    e.gauge(
        "natter_supernode_mailbox_bytes",
        "Bytes of offline envelopes held for users.",
        &[],
        c.mailbox.1 as f64,
    );
    e.counter(
        "natter_supernode_relay_credentials_total",
        "TURN credentials issued to attached clients.",
        &[],
        o.relay_credentials_issued,
    );
}

fn link(e: &mut Exposition, l: &LinkStats, sessions: usize) {
    e.gauge(
        "natter_link_sessions",
        "Secure link sessions open.",
        &[],
        sessions as f64,
    );
    let h = "Link handshakes, by outcome.";
    for (what, v) in [
        ("initiated", l.handshakes_initiated),
        ("completed", l.handshakes_completed),
        ("timed_out", l.handshake_timeouts),
        ("failed", l.handshake_failed),
        ("half_open_expired", l.half_open_expired),
        ("simultaneous_open", l.simultaneous_open),
        ("cookie_sent", l.cookies_sent),
        ("cookie_received", l.cookies_received),
    ] {
        e.counter("natter_link_handshakes_total", h, &[("outcome", what)], v);
    }
    let d = "Link datagrams, by direction.";
    e.counter(
        "natter_link_datagrams_total",
        d,
        &[("direction", "in")],
        l.datagrams_in,
    );
    e.counter(
        "natter_link_datagrams_total",
        d,
        &[("direction", "out")],
        l.datagrams_out,
    );
    let b = "Link bytes, by direction.";
    e.counter(
        "natter_link_bytes_total",
        b,
        &[("direction", "in")],
        l.bytes_in,
    );
    e.counter(
        "natter_link_bytes_total",
        b,
        &[("direction", "out")],
        l.bytes_out,
    );
}

fn relay_counters(e: &mut Exposition, r: &RelayCounters) {
    let t = &r.turn;
    let active = t
        .allocations
        .saturating_sub(t.allocations_expired + t.allocations_deleted);
    e.gauge(
        "natter_relay_allocations",
        "TURN allocations live.",
        &[],
        active as f64,
    );
    e.gauge(
        "natter_tcp_streams",
        "TCP streams open on the supernode's listener (TURN and link over TCP).",
        &[],
        r.tcp.open as f64,
    );
    let a = "TURN allocations, by event.";
    e.counter(
        "natter_relay_allocations_total",
        a,
        &[("event", "created")],
        t.allocations,
    );
    e.counter(
        "natter_relay_allocations_total",
        a,
        &[("event", "expired")],
        t.allocations_expired,
    );
    e.counter(
        "natter_relay_allocations_total",
        a,
        &[("event", "deleted")],
        t.allocations_deleted,
    );
    let p = "Relayed packets, by direction.";
    e.counter(
        "natter_relay_packets_total",
        p,
        &[("direction", "to_peer")],
        t.to_peer_packets,
    );
    e.counter(
        "natter_relay_packets_total",
        p,
        &[("direction", "to_client")],
        t.to_client_packets,
    );
    let b = "Relayed bytes, by direction.";
    e.counter(
        "natter_relay_bytes_total",
        b,
        &[("direction", "to_peer")],
        t.to_peer_bytes,
    );
    e.counter(
        "natter_relay_bytes_total",
        b,
        &[("direction", "to_client")],
        t.to_client_bytes,
    );
}

/// Every refusal and drop, as one family labelled by component and reason.
fn drops(e: &mut Exposition, c: &SupernodeCounters, relay: Option<&RelayCounters>) {
    let name = "natter_dropped_total";
    let help = "Inputs refused or dropped, by component and reason.";
    let mut add = |component: &str, pairs: &[(&str, u64)]| {
        for (reason, v) in pairs {
            e.counter(
                name,
                help,
                &[("component", component), ("reason", reason)],
                *v,
            );
        }
    };
    let o = &c.overlay;
    add(
        "node",
        &[
            ("unknown_protocol", c.dropped_datagrams),
            ("stun_unhandled", c.stun_unhandled),
        ],
    );
    add(
        "overlay",
        &[
            ("malformed", o.malformed),
            ("not_supernode", o.not_supernode),
            ("not_attached", o.not_attached),
            ("record_forged", o.records_rejected_forged),
            ("record_expired", o.records_rejected_expired),
            ("record_stale", o.records_rejected_stale),
            ("record_wrong_user", o.records_rejected_wrong_user),
            ("record_ahead", o.records_rejected_ahead),
            ("client_refused_full", o.clients_refused),
            ("query_timeout", o.query_timeouts),
            ("store_timeout", o.store_timeouts),
            ("lookup_rate_limited", o.lookups_rate_limited),
            ("watch_refused", o.watches_refused),
            ("revoked", o.revoked_refused),
            ("revoked_detached", o.revoked_detached),
            ("record_revoked", o.records_rejected_revoked),
            ("revocation_list_rejected", o.revocation_lists_rejected),
        ],
    );
    let en = &c.envelopes;
    add(
        "envelopes",
        &[
            ("invalid", en.invalid),
            ("mailbox_full", en.mailbox_full),
            ("mailbox_sender_share", en.mailbox_sender_share),
            ("mailbox_unknown_recipient", en.mailbox_unknown_recipient),
            ("busy", en.busy),
        ],
    );
    let l = &c.link;
    add(
        "link",
        &[
            ("malformed", l.malformed),
            ("unknown_session", l.unknown_session),
            ("decrypt_failed", l.decrypt_failed),
            ("replayed", l.replayed),
            ("duplicate_handshake", l.duplicate_handshakes),
            ("cert_expired", l.cert_rejected_expired),
            ("cert_unknown_issuer", l.cert_rejected_unknown_issuer),
            ("cert_bad_signature", l.cert_rejected_bad_signature),
            ("cert_key_mismatch", l.cert_rejected_key_mismatch),
            ("cert_malformed", l.cert_rejected_malformed),
            ("queue_full", l.queue_full),
            ("queue_dropped", l.queue_dropped),
            ("too_many_sessions", l.too_many_sessions),
            ("too_many_handshakes", l.too_many_handshakes),
            ("sessions_per_address", l.sessions_per_address),
            ("sessions_per_account", l.sessions_per_account),
            ("half_open_per_address", l.half_open_per_address),
            ("cookie_invalid", l.cookies_invalid),
            ("transmits_dropped", l.transmits_dropped),
            ("events_dropped", l.events_dropped),
        ],
    );
    if let Some(s) = &c.stun {
        add(
            "stun",
            &[
                ("malformed", s.malformed),
                ("ignored", s.ignored),
                ("error_answered", s.errors),
                ("rate_limited", s.rate_limited),
            ],
        );
    }
    if let Some(r) = relay {
        let t = &r.turn;
        add(
            "relay",
            &[
                ("queue_full", r.queue_drops),
                ("malformed", t.malformed),
                ("unexpected", t.unexpected),
                ("unauthenticated", t.unauthenticated),
                ("bad_credentials", t.bad_credentials),
                ("expired_credentials", t.expired_credentials),
                ("stale_nonce", t.stale_nonce),
                ("wrong_user", t.wrong_user),
                ("mismatch", t.mismatch),
                ("bad_request", t.bad_requests),
                ("forbidden_peer", t.forbidden_peers),
                ("quota", t.quota_refused),
                ("capacity", t.capacity_refused),
                ("relay_failure", t.relay_failures),
                ("no_allocation", t.no_allocation),
                ("no_permission", t.no_permission),
                ("unknown_channel", t.unknown_channel),
                ("bandwidth", t.bandwidth_dropped),
            ],
        );
        let tcp = &r.tcp;
        add(
            "tcp",
            &[
                ("full", tcp.refused_full),
                ("per_address", tcp.refused_per_address),
                ("idle", tcp.idle_closed),
                ("slow_frame", tcp.slow_closed),
            ],
        );
    }
}
