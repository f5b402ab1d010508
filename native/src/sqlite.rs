//! The few SQLite calls the store writer makes, against the system's libsqlite3, linked
//! dynamically: Python's `_sqlite3` links the same shared library, so the process holds one
//! copy of SQLite. Two copies on one file would corrupt it (each keeps its own table of the
//! POSIX locks the process holds; one closing its descriptor drops the other's locks).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

#[repr(C)]
struct Db {
    _private: [u8; 0],
}

#[repr(C)]
struct Stmt {
    _private: [u8; 0],
}

#[link(name = "sqlite3")]
extern "C" {
    fn sqlite3_libversion() -> *const c_char;
    fn sqlite3_open_v2(
        path: *const c_char,
        db: *mut *mut Db,
        flags: c_int,
        vfs: *const c_char,
    ) -> c_int;
    fn sqlite3_close_v2(db: *mut Db) -> c_int;
    fn sqlite3_busy_timeout(db: *mut Db, ms: c_int) -> c_int;
    fn sqlite3_exec(
        db: *mut Db,
        sql: *const c_char,
        callback: *const c_void,
        arg: *mut c_void,
        errmsg: *mut *mut c_char,
    ) -> c_int;
    fn sqlite3_prepare_v2(
        db: *mut Db,
        sql: *const c_char,
        n: c_int,
        stmt: *mut *mut Stmt,
        tail: *mut *const c_char,
    ) -> c_int;
    fn sqlite3_bind_text(
        stmt: *mut Stmt,
        i: c_int,
        text: *const c_char,
        n: c_int,
        d: isize,
    ) -> c_int;
    fn sqlite3_bind_int64(stmt: *mut Stmt, i: c_int, value: i64) -> c_int;
    fn sqlite3_bind_null(stmt: *mut Stmt, i: c_int) -> c_int;
    fn sqlite3_step(stmt: *mut Stmt) -> c_int;
    fn sqlite3_reset(stmt: *mut Stmt) -> c_int;
    fn sqlite3_clear_bindings(stmt: *mut Stmt) -> c_int;
    fn sqlite3_finalize(stmt: *mut Stmt) -> c_int;
    fn sqlite3_get_autocommit(db: *mut Db) -> c_int;
}

const OK: c_int = 0;
const BUSY: c_int = 5;
const LOCKED: c_int = 6;
const DONE: c_int = 101;
const OPEN_READWRITE: c_int = 0x2;
const OPEN_NOMUTEX: c_int = 0x8000; // one thread uses the connection
const TRANSIENT: isize = -1; // SQLite copies the text

/// The address of `sqlite3_libversion` as this extension resolved it: equal to the one
/// Python's `_sqlite3` resolves when both use the same loaded copy of the library.
pub fn library_address() -> usize {
    sqlite3_libversion as *const () as usize
}

pub fn library_version() -> String {
    // SAFETY: SQLite returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sqlite3_libversion()) }.to_string_lossy().into_owned()
}

/// Why a call failed: another connection holds the file (retry), or anything else.
#[derive(Debug)]
pub enum Error {
    Busy,
    Failed,
}

fn check(rc: c_int) -> Result<(), Error> {
    match rc & 0xff {
        OK | DONE => Ok(()),
        BUSY | LOCKED => Err(Error::Busy),
        _ => Err(Error::Failed),
    }
}

/// One connection and its prepared insert; closed (rolling back what is open) on drop.
pub struct Connection {
    db: *mut Db,
    insert: *mut Stmt,
}

/// One value bound to a statement parameter.
pub enum Param<'a> {
    Text(&'a str),
    Int(i64),
    Null,
}

impl Connection {
    pub fn open(path: &CString, busy_ms: i32, insert_sql: &str) -> Result<Connection, Error> {
        let mut db = ptr::null_mut();
        // SAFETY: valid NUL-terminated path, out-pointer to a local.
        let rc = unsafe {
            sqlite3_open_v2(path.as_ptr(), &mut db, OPEN_READWRITE | OPEN_NOMUTEX, ptr::null())
        };
        let mut conn = Connection { db, insert: ptr::null_mut() };
        if db.is_null() {
            return Err(Error::Failed);
        }
        check(rc)?;
        // SAFETY: db is an open connection.
        unsafe { sqlite3_busy_timeout(db, busy_ms) };
        // Like the Python store: in WAL mode NORMAL syncs at checkpoints, not at each commit.
        conn.exec("PRAGMA synchronous = NORMAL")?;
        let sql = CString::new(insert_sql).map_err(|_| Error::Failed)?;
        let mut stmt = ptr::null_mut();
        // SAFETY: db is open, sql NUL-terminated, out-pointers to locals.
        check(unsafe { sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, ptr::null_mut()) })?;
        conn.insert = stmt;
        Ok(conn)
    }

    pub fn exec(&mut self, sql: &str) -> Result<(), Error> {
        let sql = CString::new(sql).map_err(|_| Error::Failed)?;
        let none = ptr::null_mut();
        // SAFETY: db is open; no callback, no error message requested.
        check(unsafe { sqlite3_exec(self.db, sql.as_ptr(), ptr::null(), none, ptr::null_mut()) })
    }

    /// Runs the prepared insert with `params`.
    pub fn insert(&mut self, params: &[Param<'_>]) -> Result<(), Error> {
        let stmt = self.insert;
        let mut rc = OK;
        for (i, p) in params.iter().enumerate() {
            let i = i as c_int + 1;
            // SAFETY: stmt is prepared; TRANSIENT makes SQLite copy the text.
            rc = unsafe {
                match p {
                    Param::Text(s) => match c_int::try_from(s.len()) {
                        Ok(n) => sqlite3_bind_text(stmt, i, s.as_ptr().cast(), n, TRANSIENT),
                        Err(_) => 18, // SQLITE_TOOBIG
                    },
                    Param::Int(v) => sqlite3_bind_int64(stmt, i, *v),
                    Param::Null => sqlite3_bind_null(stmt, i),
                }
            };
            if rc != OK {
                break;
            }
        }
        if rc == OK {
            // SAFETY: stmt is prepared and bound.
            rc = unsafe { sqlite3_step(stmt) };
        }
        // SAFETY: stmt is prepared; reset reports the step's error again, which is known.
        unsafe {
            sqlite3_reset(stmt);
            sqlite3_clear_bindings(stmt);
        }
        check(rc)
    }

    /// True outside a transaction (SQLite rolls one back by itself after some errors).
    pub fn autocommit(&self) -> bool {
        // SAFETY: db is open.
        unsafe { sqlite3_get_autocommit(self.db) != 0 }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: finalize accepts null; close_v2 rolls back an open transaction.
        unsafe {
            sqlite3_finalize(self.insert);
            sqlite3_close_v2(self.db);
        }
    }
}

// SAFETY: a connection is opened with NOMUTEX and used by one thread at a time (the writer's).
unsafe impl Send for Connection {}
