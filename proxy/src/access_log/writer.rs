//! The access log's writer: lines go through a bounded queue to a dedicated OS thread that
//! writes them to stdout, so a slow or stuck reader of stdout (a full pipe, a paused log
//! shipper) never stalls the runtime thread that carries traffic. When the queue is full the
//! line is dropped and counted in `trustmesh_access_log_dropped_total`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// Lines the queue holds before new ones are dropped (a line is ~300-500 bytes, so a full
/// queue holds well under a MiB).
pub const QUEUE_LINES: usize = 1024;

/// How much the writer thread gathers into one `write` to stdout.
const BATCH_BYTES: usize = 32 * 1024;

/// The writer thread needs little stack: it only moves bytes.
const THREAD_STACK: usize = 64 * 1024;

struct Writer {
    tx: SyncSender<String>,
    /// Lines queued or being written (for [`flush`]).
    pending: Arc<AtomicUsize>,
    dropped: IntCounter,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Starts the writer thread; lines written before this (or if it could not start) are
/// counted as dropped. `dropped` is the `trustmesh_access_log_dropped_total` counter.
pub fn start(dropped: IntCounter) -> std::io::Result<()> {
    let (tx, rx) = sync_channel::<String>(QUEUE_LINES);
    let pending = Arc::new(AtomicUsize::new(0));
    let drain = pending.clone();
    std::thread::Builder::new()
        .name("access-log".into())
        .stack_size(THREAD_STACK)
        .spawn(move || write_lines(&rx, &drain, &mut std::io::stdout()))?;
    let _ = WRITER.set(Writer {
        tx,
        pending,
        dropped,
    });
    Ok(())
}

/// Queues one line (ending in `\n`) without blocking; a full queue drops it and counts it.
pub fn send(line: String) {
    let Some(w) = WRITER.get() else {
        return;
    };
    w.pending.fetch_add(1, Ordering::AcqRel);
    match w.tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            w.pending.fetch_sub(1, Ordering::AcqRel);
            w.dropped.inc();
        }
    }
}

/// Waits (polling, at most `timeout`) until every queued line is written, so that a stopping
/// sidecar does not lose the lines of its last requests. Returns whether it did.
pub async fn flush(timeout: Duration) -> bool {
    let Some(w) = WRITER.get() else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    while w.pending.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// The writer thread: takes a line, gathers whatever else is queued (up to [`BATCH_BYTES`]),
/// writes it in one go. Lines are whole in every write, so they never interleave. Ends when
/// every sender is gone.
fn write_lines(rx: &Receiver<String>, pending: &AtomicUsize, out: &mut dyn std::io::Write) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        batch.clear();
        batch.extend_from_slice(first.as_bytes());
        let mut lines = 1;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(line.as_bytes());
                    lines += 1;
                }
                Err(_) => break,
            }
        }
        // A failed write (stdout closed) loses the batch; nothing else can be done with it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        pending.fetch_sub(lines, Ordering::AcqRel);
        if batch.capacity() > 4 * BATCH_BYTES {
            batch = Vec::with_capacity(BATCH_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_writes_every_line_whole_and_in_order() {
        let (tx, rx) = sync_channel::<String>(QUEUE_LINES);
        let pending = AtomicUsize::new(0);
        for i in 0..500 {
            pending.fetch_add(1, Ordering::AcqRel);
            tx.send(format!("{{\"n\":{i}}}\n")).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        write_lines(&rx, &pending, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("{{\"n\":{i}}}"));
        }
        assert_eq!(pending.load(Ordering::Acquire), 0);
    }
}
