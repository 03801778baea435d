//! Builds the small C shim that routes ALSA's messages to natter's log
//! (only with the `audio-cpal` feature on Linux).

fn main() {
    println!("cargo:rerun-if-changed=src/media/audio/alsa_quiet.c");
    let cpal = std::env::var_os("CARGO_FEATURE_AUDIO_CPAL").is_some();
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if cpal && linux {
        cc::Build::new()
            .file("src/media/audio/alsa_quiet.c")
            .compile("natter_alsa_quiet");
        println!("cargo:rustc-link-lib=asound");
    }
}
