//! The access log's writer: lines go into a bounded buffer that a dedicated OS thread writes
//! to stdout, so a slow or stuck reader of stdout (a full pipe, a paused log shipper) never
//! stalls the runtime thread that carries traffic. When the buffer is full the line is
//! dropped and counted in `trustmesh_access_log_dropped_total`.
//!
//! Cheap on the request path: queueing a line is an uncontended lock and a copy. The thread
//! is woken only when the buffer goes from empty to non-empty, and then lingers a moment so
//! that a busy sidecar writes many lines per wake-up and per `write` (one system call and one
//! thread switch per batch, not per request).

use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

/// Bytes the buffer holds before new lines are dropped (a line is ~300-500 bytes).
pub const BUFFER_BYTES: usize = 256 * 1024;

/// How long the thread lets lines gather after a wake-up before it writes them.
const LINGER: Duration = Duration::from_millis(20);

/// The writer thread needs little stack: it only moves bytes.
const THREAD_STACK: usize = 64 * 1024;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// The thread is asleep and must be woken for new lines.
    asleep: bool,
    /// The thread is writing a batch it took out (for [`flush`]).
    writing: bool,
}

#[derive(Default)]
struct Queue {
    buffer: Mutex<Buffer>,
    wake: Condvar,
}

struct Writer {
    queue: Arc<Queue>,
    dropped: IntCounter,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Starts the writer thread; lines written before this (or if it could not start) are lost.
/// `dropped` is the `trustmesh_access_log_dropped_total` counter.
pub fn start(dropped: IntCounter) -> std::io::Result<()> {
    let queue = Arc::new(Queue::default());
    let drain = queue.clone();
    std::thread::Builder::new()
        .name("access-log".into())
        .stack_size(THREAD_STACK)
        .spawn(move || write_lines(&drain, &mut std::io::stdout()))?;
    let _ = WRITER.set(Writer { queue, dropped });
    Ok(())
}

/// Queues one line without blocking: `encode` appends it (without the newline) to the
/// buffer; a full buffer drops it and counts it.
pub fn send(encode: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) {
    let Some(w) = WRITER.get() else {
        return;
    };
    if !w.queue.push(encode) {
        w.dropped.inc();
    }
}

/// Waits (polling, at most `timeout`) until every queued line is written, so that a stopping
/// sidecar does not lose the lines of its last requests. Returns whether it did.
pub async fn flush(timeout: Duration) -> bool {
    let Some(w) = WRITER.get() else {
        return true;
    };
    let deadline = Instant::now() + timeout;
    while !w.queue.is_empty() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding the lock leaves only bytes behind; they are still whole lines.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends what `encode` writes and a newline unless the buffer would pass
    /// [`BUFFER_BYTES`]; wakes the thread if it sleeps. Returns whether the line was taken.
    fn push(&self, encode: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) -> bool {
        let mut b = self.lock();
        let start = b.bytes.len();
        // Encoded in place: no String per line. What does not fit (or fails) is cut off.
        let ok = encode(&mut b.bytes).is_ok();
        if !ok || b.bytes.len() + 1 > BUFFER_BYTES {
            b.bytes.truncate(start);
            return false;
        }
        b.bytes.push(b'\n');
        let wake = std::mem::take(&mut b.asleep);
        drop(b);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    fn is_empty(&self) -> bool {
        let b = self.lock();
        b.bytes.is_empty() && !b.writing
    }
}

/// The writer thread: sleeps until there are lines, lingers [`LINGER`], takes the whole
/// buffer and writes it in one go. Lines are whole in every write, so they never interleave.
fn write_lines(queue: &Queue, out: &mut dyn std::io::Write) {
    let mut batch = Vec::new();
    loop {
        let mut b = queue.lock();
        while b.bytes.is_empty() {
            b.asleep = true;
            b = queue.wake.wait(b).unwrap_or_else(PoisonError::into_inner);
        }
        drop(b);
        std::thread::sleep(LINGER);
        let mut b = queue.lock();
        std::mem::swap(&mut b.bytes, &mut batch);
        b.writing = true;
        drop(b);
        // A failed write (stdout closed) loses the batch; nothing else can be done with it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        batch.shrink_to(64 * 1024);
        queue.lock().writing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the thread writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_thread_writes_every_line_whole_and_in_order_and_a_full_buffer_refuses() {
        let queue = Arc::new(Queue::default());
        let sink = Sink::default();
        let (q, mut s) = (queue.clone(), sink.clone());
        std::thread::spawn(move || write_lines(&q, &mut s));
        for i in 0..500 {
            assert!(queue.push(|out| serde_json::to_writer(out, &serde_json::json!({ "n": i }))));
        }
        for _ in 0..500 {
            if queue.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(queue.is_empty());
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("{{\"n\":{i}}}"));
        }

        let full = Queue::default();
        // 998 characters and two quotes, then the newline: 1001 bytes a line.
        let line = "x".repeat(998);
        let taken = (0..1000)
            .filter(|_| full.push(|out| serde_json::to_writer(out, &line)))
            .count();
        assert_eq!(taken, BUFFER_BYTES / 1001);
    }
}
