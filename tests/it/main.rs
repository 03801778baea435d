//! natter's integration tests, one module per scenario, in one test
//! binary: each `tests/*.rs` file used to be a crate of its own that linked
//! all of natter, and linking them dominated the build. Run one scenario
//! with `cargo test --test it <module>` (e.g. `call_tone`).
//!
//! The tests share this process: none may set environment variables,
//! change the current directory or install process-wide handlers. Each
//! test starts with `let _turn = scenario!();`, so that scenarios do not
//! overlap (see `common::scenario`).

/// Waits for the calling module's turn; hold the guard to the test's end.
macro_rules! scenario {
    () => {
        crate::common::scenario::enter(module_path!())
    };
}

mod common;

mod authority_durability;
mod authority_ha;
mod call_blocked;
mod call_busy;
mod call_decline;
mod call_dualstack;
mod call_echo;
mod call_hold;
mod call_no_answer;
mod call_no_sound_card;
mod call_processing;
mod call_relay;
mod call_ringback;
mod call_tone;
mod chat_contacts;
mod chat_kill_sender;
mod chat_offline;
mod cli;
mod clock_step;
mod conference_tones;
mod devices_call;
mod devices_chat;
mod devices_groups;
mod devices_headless;
mod dos_authority_slots;
mod dos_link_handshakes;
mod dos_login_throttle;
mod dos_mailbox;
mod dos_tcp_slots;
mod envelope_loopback;
mod file_transfer;
mod first_hour;
mod fuzz_decoders;
mod group_chat;
mod headless_stream;
mod ice_fallback;
mod ice_loopback;
mod ice_matrix;
mod ice_relayed;
mod ice_roam;
mod ice_upgrade;
mod link_udp;
mod login_flow;
mod login_rejections;
mod media_long_call_sim;
mod media_loss_fec;
mod media_playout_tone;
mod media_tamper;
mod media_tone_call;
mod metrics;
mod nat_detect_sim;
mod nat_headless;
mod overlay_loopback;
mod overlay_rejections;
mod overlay_volunteer;
mod relay_auth;
mod relay_coturn;
mod relay_credentials;
mod relay_loopback;
mod relay_quotas;
mod relay_tcp;
mod relay_uclient;
mod revocation;
mod shutdown;
mod sim_blackout;
mod sim_dead_owners;
mod sim_envelopes;
mod sim_leave;
mod sim_small;
mod soak;
mod tcp_fallback_recovers;
mod tui_call_live;
mod tui_chat_live;
mod tui_conference;
mod tui_files;
mod tui_first_hour;
mod tui_groups;
mod tui_tmux;
