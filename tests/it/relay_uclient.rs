//! coturn's load tool, turnutils_uclient, against our supernode's relay:
//! it computes REST credentials from the shared secret itself (`-W`),
//! allocates, binds channels and echoes through turnutils_peer; every
//! message must come back. Skipped when coturn is not installed.

use crate::common::relay::*;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnutils_uclient_through_our_relay() {
    let _turn = scenario!();
    let (Some(uclient), Some(peer_bin)) = (
        coturn_tool("turnutils_uclient"),
        coturn_tool("turnutils_peer"),
    ) else {
        return;
    };
    let sn = supernode(relay_config()).await;
    let peer_port = free_port();
    let mut peer = Command::new(peer_bin)
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for transport in [&[][..], &["-t"][..]] {
        let out = tokio::task::spawn_blocking({
            let uclient = uclient.clone();
            let addr = sn.addr;
            let transport = transport.to_vec();
            move || {
                Command::new("timeout")
                    .arg("60")
                    .arg(uclient)
                    .args(transport)
                    .args(["-W", SECRET, "-u", "alice", "-e", "127.0.0.1"])
                    .args([
                        "-r",
                        &peer_port.to_string(),
                        "-n",
                        "40",
                        "-m",
                        "4",
                        "-c",
                        "-z",
                        "5",
                    ])
                    .args(["-l", "120", "-p", &addr.port().to_string(), "127.0.0.1"])
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        let sent = text.contains("tot_send_msgs=160, tot_recv_msgs=160");
        assert!(
            sent && text.contains("Total lost packets 0"),
            "uclient {transport:?} failed:\n{text}"
        );
    }
    let _ = peer.kill();
    let _ = peer.wait();
    let st = sn.node.turn.as_ref().unwrap().stats().await.unwrap();
    assert!(st.allocations >= 8, "{st:?}");
    assert!(
        st.to_peer_packets >= 320 && st.to_client_packets >= 320,
        "{st:?}"
    );
}
