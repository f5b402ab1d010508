//! The local store sink: rows inserted into the `spans` table in one transaction per batch,
//! retried while other processes hold the file (as store/database.py does), with nothing open
//! while the thread is paused for a fork.

use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pipeline::{lock, Control, Sink};
use crate::row::Row;
use crate::sqlite::{Connection, Error, Param};

// store/rows.py SPAN_COLUMNS, and the Python store's conflict rule.
const INSERT: &str = "INSERT INTO spans (trace_id,span_id,parent_span_id,name,kind,start_ns,\
end_ns,status,status_message,service_name,attributes,events,links,resource) \
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (trace_id, span_id) DO NOTHING";
// SQLite's own busy wait per try; the thread retries with nothing held in between, so a fork
// waits for one short try (store/fork_safety.py _BUSY_MS).
const BUSY_MS: i32 = 50;

/// A registered resource: its service name and its JSON (the pid of the writing process in it).
pub type Resource = Arc<(Option<String>, String)>;

pub struct Store {
    pub path: CString,
    /// How long a batch waits for other processes' writers before it is dropped.
    pub wait: Duration,
    pub resources: Mutex<Vec<Resource>>,
}

pub struct Writer {
    conn: Option<Connection>,
    seed: u64, // for the jittered pause between tries
}

struct Encoded {
    row: Row,
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    attributes: String,
    events: String,
    links: String,
}

impl Encoded {
    fn params<'a>(&'a self, resource: Option<&'a Resource>) -> [Param<'a>; 14] {
        let text = |s: &'a Option<String>| s.as_deref().map_or(Param::Null, Param::Text);
        let r = &self.row;
        [
            Param::Text(&self.trace_id),
            Param::Text(&self.span_id),
            text(&self.parent),
            Param::Text(&r.name),
            Param::Text(r.kind),
            Param::Int(r.start),
            Param::Int(r.end),
            Param::Text(r.status),
            text(&r.status_message),
            resource.map_or(Param::Null, |r| text(&r.0)),
            Param::Text(&self.attributes),
            Param::Text(&self.events),
            Param::Text(&self.links),
            Param::Text(resource.map_or("{}", |r| r.1.as_str())),
        ]
    }
}

enum Outcome {
    /// Committed; the number of rows the database refused.
    Done(u64),
    Busy,
    /// No transaction could start: the batch is lost, the connection is not trusted again.
    Broken,
}

impl Store {
    fn try_write(
        &self,
        conn: &mut Connection,
        rows: &[Encoded],
        res: &[Resource],
        ctl: &dyn Control,
    ) -> Outcome {
        match conn.exec("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(Error::Busy) => return Outcome::Busy,
            Err(Error::Failed) => return Outcome::Broken,
        }
        let mut refused = 0;
        for row in rows {
            match conn.insert(&row.params(res.get(row.row.resource as usize))) {
                Ok(()) => {}
                Err(Error::Busy) => {
                    let _ = conn.exec("ROLLBACK");
                    return Outcome::Busy;
                }
                // One row the database refuses costs only itself, unless SQLite rolled the
                // whole transaction back.
                Err(Error::Failed) if conn.autocommit() => return Outcome::Done(rows.len() as u64),
                Err(Error::Failed) => refused += 1,
            }
        }
        // Shutdown may have given up meanwhile (SQLite's busy wait, the inserts) and counted
        // the batch dropped: committing it now would store spans stats() calls lost.
        if ctl.abandoned() {
            let _ = conn.exec("ROLLBACK");
            return Outcome::Done(rows.len() as u64);
        }
        match conn.exec("COMMIT") {
            Ok(()) => Outcome::Done(refused),
            Err(e) => {
                let _ = conn.exec("ROLLBACK");
                match e {
                    Error::Busy => Outcome::Busy,
                    Error::Failed => Outcome::Done(rows.len() as u64),
                }
            }
        }
    }

    fn pause_between_tries(writer: &mut Writer) {
        // xorshift: 2-20 ms, as the Python store sleeps between its tries.
        let mut x = writer.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        writer.seed = x;
        std::thread::sleep(Duration::from_micros(2000 + x % 18000));
    }
}

impl Sink for Store {
    type Item = Row;
    type Writer = Writer;

    fn writer(&self) -> Writer {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = now.map_or(0, |d| d.subsec_nanos() as u64) ^ u64::from(std::process::id());
        Writer { conn: None, seed: seed | 1 }
    }

    fn write(&self, writer: &mut Writer, rows: Vec<Row>, ctl: &dyn Control) -> u64 {
        let n = rows.len() as u64;
        let resources = lock(&self.resources).clone();
        let rows: Vec<Encoded> = rows
            .into_iter()
            .map(|row| Encoded {
                trace_id: row.trace_id(),
                span_id: row.span_id(),
                parent: row.parent(),
                attributes: row.attributes(),
                events: row.events(),
                links: row.links(),
                row,
            })
            .collect();
        let deadline = Instant::now() + self.wait;
        loop {
            if ctl.pause_wanted() {
                writer.conn = None;
                ctl.hold();
            }
            if ctl.abandoned() {
                return n;
            }
            if writer.conn.is_none() {
                match Connection::open(&self.path, BUSY_MS, INSERT) {
                    Ok(conn) => writer.conn = Some(conn),
                    Err(Error::Busy) => {} // opening read the schema while a writer held it
                    Err(Error::Failed) => return n,
                }
            }
            if let Some(conn) = writer.conn.as_mut() {
                match self.try_write(conn, &rows, &resources, ctl) {
                    Outcome::Done(refused) => return refused,
                    Outcome::Busy => {}
                    Outcome::Broken => {
                        writer.conn = None; // the next batch opens a fresh one
                        return n;
                    }
                }
            }
            if Instant::now() >= deadline {
                return n; // busy past the deadline
            }
            Self::pause_between_tries(writer);
        }
    }

    fn release(&self, writer: &mut Writer) {
        writer.conn = None;
    }
}
