//! The signals that stop a binary: SIGTERM (what Kubernetes and `docker stop` send) or Ctrl-C.

/// Resolves on SIGTERM or Ctrl-C (SIGINT). When SIGTERM cannot be listened for, on Ctrl-C
/// alone.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn resolves_on_sigterm() {
        // A process of its own, so the SIGTERM reaches no other test: the test binary runs
        // itself with the child variable set and checks that the child exits on its own.
        if std::env::var_os("TRUSTMESH_RUNTIME_SIGNAL_CHILD").is_some() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let wait = tokio::spawn(shutdown_signal());
                // Let the handler be installed before the signal is sent.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let me = std::process::id().to_string();
                let sent = std::process::Command::new("kill")
                    .args(["-TERM", &me])
                    .status()
                    .unwrap();
                assert!(sent.success());
                tokio::time::timeout(Duration::from_secs(10), wait)
                    .await
                    .unwrap()
                    .unwrap();
            });
            println!("shutdown_signal resolved");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "signal::tests::resolves_on_sigterm",
                "--nocapture",
            ])
            .env("TRUSTMESH_RUNTIME_SIGNAL_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        assert!(stdout.contains("shutdown_signal resolved"), "{stdout}");
    }
}
