//! One database file as the store uses it ([`Database`]): every write goes to one writer thread
//! that commits whatever is pending as one transaction (group commit), each caller's work in its
//! own savepoint, replying only once the commit is on disk; reads run on their own connection; a
//! checkpointer thread copies the WAL back into the file outside the commits requests wait on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::schema::{connect, restrict_to_owner};
use crate::ports::StoreError;

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

/// How often the checkpointer copies committed WAL pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL size (pages of 4 KiB: 16 MiB) past which the writer checkpoints the last few pages itself.
/// SQLite restarts the WAL from its beginning only when every page was copied, which a
/// checkpointer running beside a writer that never pauses cannot achieve on its own.
const WAL_RESTART_PAGES: i64 = 4_096;

/// One SQLite file: a writer thread committing in groups, a reader connection and a checkpointer.
pub(super) struct Database {
    jobs: Mutex<mpsc::Sender<Box<dyn WriteJob>>>,
    reader: Arc<Mutex<Connection>>,
    /// Dropped with the database: tells the checkpointer thread to finish.
    _stop_checkpointer: mpsc::Sender<()>,
}

impl Database {
    /// Opens `path`, creates `schema`, runs `prepare` on the writer connection before any other
    /// connection exists, then starts the writer and checkpointer threads.
    pub(super) fn open(
        path: &Path,
        schema: &str,
        prepare: impl FnOnce(&Connection) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        restrict_to_owner(path)?;
        let writer = connect(path)?;
        writer
            .execute_batch(schema)
            .map_err(|e| StoreError::unavailable("create schema", e))?;
        prepare(&writer)?;
        let reader = connect(path)?;
        let checkpointer = connect(path)?;
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let restart_request = Arc::clone(&restart_wanted);
        let (jobs, pending) = mpsc::channel::<Box<dyn WriteJob>>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, pending, restart_wanted))
            .map_err(|e| StoreError::unavailable("start writer thread", e))?;
        let (stop_checkpointer, stop) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stop, restart_request))
            .map_err(|e| StoreError::unavailable("start checkpoint thread", e))?;
        Ok(Database {
            jobs: Mutex::new(jobs),
            reader: Arc::new(Mutex::new(reader)),
            _stop_checkpointer: stop_checkpointer,
        })
    }

    /// Runs `work` in the next group commit; resolves once it is durable.
    pub(super) async fn write<R, F>(
        &self,
        operation: &'static str,
        work: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let job = Box::new(PendingWrite {
            operation,
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .lock()
            .map_err(|_| StoreError::unavailable(operation, "writer lock poisoned"))?
            .send(job)
            .map_err(|_| StoreError::unavailable(operation, "writer thread stopped"))?;
        outcome
            .await
            .map_err(|_| StoreError::unavailable(operation, "writer thread stopped"))?
    }

    pub(super) async fn read<R, F>(&self, operation: &'static str, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::unavailable(operation, "reader lock poisoned"))?;
            work(&conn).map_err(|e| StoreError::unavailable(operation, e))
        })
        .await
        .map_err(|e| StoreError::unavailable(operation, e))?
    }
}

/// A unit of work for the writer thread: run inside the transaction, then told how the commit went.
trait WriteJob: Send {
    fn run(&mut self, conn: &Connection);
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct PendingWrite<R, F> {
    operation: &'static str,
    work: Option<F>,
    result: Option<rusqlite::Result<R>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> WriteJob for PendingWrite<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(work) = self.work.take() {
            self.result = Some(in_savepoint(conn, work));
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let operation = self.operation;
        let outcome = match (committed, self.result) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Ok(()), Some(Err(error))) => Err(StoreError::unavailable(operation, error)),
            (Ok(()), None) => Err(StoreError::unavailable(operation, "not run")),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(outcome);
    }
}

/// Runs `work` so that its failure undoes only its own changes, not the whole group.
fn in_savepoint<R>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    // Cached statements: parsing these two for every job cost more than running them.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(error)
        }
    }
}

fn write_loop(
    conn: Connection,
    pending: mpsc::Receiver<Box<dyn WriteJob>>,
    restart_wanted: Arc<AtomicBool>,
) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_group(&conn, &mut group);
        for job in group {
            job.finish(committed.clone());
        }
        // After the replies: only the next group waits, for the pages written since the
        // checkpointer's last pass.
        if restart_wanted.swap(false, Ordering::Relaxed) {
            checkpoint(&conn, "PASSIVE");
        }
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is dropped. A passive checkpoint
/// never blocks the writer; a failed one is retried on the next tick (the WAL only grows).
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>, restart_wanted: Arc<AtomicBool>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let wal_pages = checkpoint(&conn, "PASSIVE");
        if wal_pages.is_some_and(|pages| pages > WAL_RESTART_PAGES) {
            restart_wanted.store(true, Ordering::Relaxed);
        }
    }
    // The last connection to close checkpoints and removes the WAL itself.
}

/// Runs `PRAGMA wal_checkpoint(mode)`; the WAL's size in pages, if the pragma ran.
fn checkpoint(conn: &Connection, mode: &str) -> Option<i64> {
    let outcome = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get::<_, i64>(1)
    });
    match outcome {
        Ok(pages) => Some(pages),
        Err(error) => {
            tracing::warn!(mode, %error, "WAL checkpoint failed; retried on the next tick");
            None
        }
    }
}

fn commit_group(conn: &Connection, group: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| StoreError::unavailable("begin transaction", e))?;
    for job in group.iter_mut() {
        job.run(conn);
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::unavailable("commit", e)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::EmbeddedStore;
    use crate::ports::{Queue, QueuedEvent};

    /// Commits only append to the WAL (no automatic checkpoint inside a commit); the checkpointer
    /// thread must still move them into the database file, or the WAL would grow forever and a
    /// restart would replay all of it.
    #[tokio::test]
    async fn committed_writes_reach_the_database_file_without_a_checkpoint_in_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = EmbeddedStore::open(&path).unwrap();
        let empty = std::fs::metadata(&path).unwrap().len();
        for n in 0..200 {
            let event = QueuedEvent::archived(format!("k{n}"), 1, "x".repeat(1_000));
            store.send(&event).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < empty + 200_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes",
                std::fs::metadata(&path).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
