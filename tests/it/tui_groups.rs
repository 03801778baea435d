//! Groups from the softphone in a real terminal: `natter demo` under
//! tmux; space marks carol and echo123, `g` asks for the new group's name
//! and founds it with them; on its row `R` renames it, `r` removes
//! echo123 (after a yes), `i` invites bot, and `L` leaves it (after a
//! yes). Each step's result shows in the status line and the row.

use crate::common::tmux::demo;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The contact list's row of the group `name`, if shown.
fn group_row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    let mark = format!("# {name} · ");
    screen.lines().find(|l| l.contains(&mark))
}

#[test]
fn a_group_made_and_managed_with_the_demo_contacts() {
    let _turn = scenario!();
    let dir = tempfile::tempdir().unwrap();
    let Some(t) = demo("groups", 100, 30, dir.path()) else {
        return;
    };
    // bot, carol, echo123: mark the last two.
    t.mark_carol_and_echo();
    t.text("g");
    t.wait("the new group dialog", T, |s| {
        s.contains("New group") && s.contains("Invites carol, echo123 (marked).")
    });
    t.text("lunch crew");
    t.keys(&["Enter"]);
    let s = t.wait("the group with three members", T, |s| {
        group_row(s, "lunch crew").is_some_and(|r| r.contains("3 members"))
    });
    assert!(!s.contains("New group"), "{s}");
    // Its row is the last one.
    t.keys(&["End"]);
    t.wait("the group's keys", T, |s| {
        s.contains("i invite · r remove · R rename · L leave")
    });
    t.text("R");
    t.wait("the rename dialog", T, |s| s.contains("Rename lunch crew"));
    t.keys(&["C-u"]);
    t.text("dinner");
    t.keys(&["Enter"]);
    t.wait("renamed", T, |s| {
        s.contains("you renamed the group to dinner") && group_row(s, "dinner").is_some()
    });
    // r: carol, echo123 (we are the creator); the second, after a yes.
    t.text("r");
    t.wait("the members to remove", T, |s| {
        s.contains("Remove from dinner")
    });
    t.keys(&["Down", "Enter"]);
    t.wait("the question", T, |s| {
        s.contains("Remove echo123 from the group")
    });
    t.text("y");
    t.wait("echo123 removed", T, |s| {
        s.contains("you removed echo123 from dinner")
            && group_row(s, "dinner").is_some_and(|r| r.contains("2 members"))
    });
    // i: bot and echo123 may be invited; bot is first.
    t.text("i");
    t.wait("the contacts to invite", T, |s| {
        s.contains("Invite into dinner")
    });
    t.keys(&["Enter"]);
    t.wait("bot invited", T, |s| {
        s.contains("bot is in dinner now (you invited them)")
            && group_row(s, "dinner").is_some_and(|r| r.contains("3 members"))
    });
    // L: leave after a yes; the row goes.
    t.text("L");
    t.wait("the question", T, |s| s.contains("Leave the group dinner?"));
    t.text("y");
    let s = t.wait("left", T, |s| s.contains("you left dinner"));
    assert!(group_row(&s, "dinner").is_none(), "{s}");
    t.quit_demo();
}
