//! File transfer in the softphone, in a real terminal: alice's TUI under
//! tmux and bob, headless, as her contact. bob offers a file; alice sees
//! the offer in the title bar and the footer, opens the transfers window
//! (`F`), accepts it into her downloads folder (Enter, Enter) and the
//! window says where it was saved. Then alice sends bob a file: `f` on
//! his name, the path typed in part and completed with Tab, Enter; bob
//! accepts, and both files arrive byte for byte.

use crate::tui_first_hour::{befriend, start};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn send_and_receive_files_from_the_tui() {
    let _turn = scenario!();
    let Some((net, _sn, t, mut others)) = start("files", &["bob"]) else {
        return;
    };
    let bob = &mut others[0];
    befriend(&t, bob, "bob");

    // bob -> alice: offered, accepted into the downloads folder.
    let src = tempfile::tempdir().unwrap();
    let minutes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let from_bob = src.path().join("minutes.txt");
    std::fs::write(&from_bob, &minutes).unwrap();
    bob.say(&format!("send-file alice {}", from_bob.display()));
    t.wait("the offer", T, |s| {
        s.contains("⇅ 1 file offered") && s.contains("bob offers you minutes.txt (300 kB)")
    });
    t.text("F");
    t.wait("the transfers window", T, |s| {
        s.contains("File transfers") && s.contains("offered to you: accept or decline")
    });
    t.keys(&["Enter"]);
    t.wait("where to save it", T, |s| {
        s.contains("Save minutes.txt from bob") && s.contains("empty: your downloads folder")
    });
    t.keys(&["Enter"]);
    bob.wait_json(T, |v| v["event"] == "file_done" && v["direction"] == "out");
    let saved = net.data("alice").join("downloads").join("minutes.txt");
    t.wait("saved, with its place", T, |s| {
        s.contains("saved to") && s.contains("minutes.txt")
    });
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        minutes,
        "{}",
        saved.display()
    );
    t.keys(&["Escape"]);
    t.wait("the window closed", T, |s| !s.contains("File transfers"));

    // alice -> bob: the path completed with Tab.
    let photo: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 253) as u8).collect();
    std::fs::write(src.path().join("photo-of-the-cat.jpg"), &photo).unwrap();
    t.keys(&["Home"]);
    t.text("f");
    t.wait("the path prompt", T, |s| s.contains("Send a file to bob"));
    t.text(&format!("{}/photo-of", src.path().display()));
    t.keys(&["Tab"]);
    t.wait("the completed path", T, |s| {
        s.contains("photo-of-the-cat.jpg")
    });
    t.keys(&["Enter"]);
    let offer = bob.wait_json(T, |v| v["event"] == "file_offered");
    assert_eq!(offer["name"], "photo-of-the-cat.jpg", "{offer}");
    assert_eq!(offer["size"], 200_000, "{offer}");
    let id = offer["id"].as_str().unwrap().to_owned();
    let into = src.path().join("from-alice.jpg");
    bob.say(&format!("file accept {id} {}", into.display()));
    bob.wait_json(T, |v| v["event"] == "file_done" && v["direction"] == "in");
    assert_eq!(std::fs::read(&into).unwrap(), photo);
    t.text("F");
    t.wait("the upload done", T, |s| {
        s.contains("photo-of-the-cat.jpg") && s.contains("    sent")
    });
}
