//! The login authority's metrics: logins, registrations and renewals by
//! outcome, refusals by reason, and its connection slots in use.

use super::Exposition;
use crate::authority::AuthorityStats;

/// What an authority scrape shows, from its core's counters.
pub fn exposition(
    s: &AuthorityStats,
    connections_open: usize,
    connection_slots: usize,
) -> Exposition {
    let mut e = Exposition::new();
    let logins = "Password logins, by outcome.";
    for (outcome, v) in [
        ("ok", s.logins),
        ("wrong_password", s.wrong_password),
        ("unknown_user", s.unknown_user),
        ("disabled_account", s.disabled_account),
        ("throttled", s.throttled),
    ] {
        e.counter(
            "natter_authority_logins_total",
            logins,
            &[("outcome", outcome)],
            v,
        );
    }
    let reg = "Account registrations, by outcome.";
    for (outcome, v) in [
        ("ok", s.registrations),
        ("username_taken", s.username_taken),
        ("refused", s.bad_registrations),
    ] {
        e.counter(
            "natter_authority_registrations_total",
            reg,
            &[("outcome", outcome)],
            v,
        );
    }
    let ren = "Certificate renewals with a device key, by outcome.";
    for (outcome, v) in [
        ("ok", s.renewals),
        ("cert_expired", s.cert_expired),
        ("cert_unknown_issuer", s.cert_unknown_issuer),
        ("cert_bad_signature", s.cert_bad_signature),
        ("cert_key_mismatch", s.cert_key_mismatch),
        ("revoked_device", s.revoked_device),
    ] {
        e.counter(
            "natter_authority_renewals_total",
            ren,
            &[("outcome", outcome)],
            v,
        );
    }
    let acc = "Account requests from logged-in devices and supernodes, by kind.";
    for (kind, v) in [
        ("devices_revoked", s.devices_revoked),
        ("password_changes", s.password_changes),
        ("device_lists", s.device_lists),
        ("revocation_lists", s.revocation_lists),
        ("not_a_supernode", s.not_a_supernode),
    ] {
        e.counter(
            "natter_authority_account_requests_total",
            acc,
            &[("kind", kind)],
            v,
        );
    }
    e.counter(
        "natter_authority_handshakes_total",
        "Noise handshakes completed with clients.",
        &[],
        s.handshakes,
    );
    e.reasons(
        "natter_authority_refused_total",
        "Requests refused or dropped before any account was looked at, by reason.",
        &[
            ("replayed_handshake", s.replayed_handshakes),
            ("clock_skew", s.clock_skew),
            ("bad_handshake", s.bad_handshakes),
            ("malformed", s.malformed),
            ("bad_proof", s.bad_proof),
            ("internal_error", s.internal_errors),
            ("hash_queue_full", s.hash_queue_full),
        ],
    );
    let a = &s.admission;
    e.counter(
        "natter_authority_connections_accepted_total",
        "Client connections given a slot.",
        &[],
        a.accepted,
    );
    e.reasons(
        "natter_authority_connections_closed_early_total",
        "Client connections refused or closed by the slot policy, by reason.",
        &[
            ("address_cap", a.refused_address_cap),
            ("full", a.refused_full),
            ("evicted_slowest", a.evicted),
            ("frame_deadline", a.frame_deadline),
            ("idle", a.idle),
        ],
    );
    e.gauge(
        "natter_authority_connections",
        "Client connections open.",
        &[],
        connections_open as f64,
    );
    e.gauge(
        "natter_authority_connection_slots",
        "Client connections the authority accepts at once.",
        &[],
        connection_slots as f64,
    );
    e
}
