//! The events on a shared SQLite file: discovery in [`crate::discover`],
//! the batched deletes in [`crate::job`].

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::backend::{Backend, Step};
use crate::discover::{self, TableInfo};
use crate::job::SqliteJob;
use crate::report::TableReport;
use crate::settings::Settings;
use crate::{Error, Result};

/// An open shared SQLite database.
pub(crate) struct Sqlite {
    path: PathBuf,
    conn: Connection,
}

impl Sqlite {
    /// Opens the shared database; never creates it.
    pub fn open(database: &Path, settings: &Settings) -> Result<Self> {
        if !database.is_file() {
            return Err(Error::Missing {
                path: database.to_owned(),
            });
        }
        let conn = elsinore_store::Store::open(database)?.into_connection();
        conn.busy_timeout(settings.busy_timeout)
            .map_err(|source| Error::Sqlite {
                path: database.to_owned(),
                context: "cannot set the busy timeout",
                source,
            })?;
        Ok(Self {
            path: database.to_owned(),
            conn,
        })
    }
}

impl Backend for Sqlite {
    type Work = SqliteJob;
    type Table = TableInfo;

    fn tables(&mut self) -> Result<Vec<TableInfo>> {
        discover::tables(&self.conn).map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            context: "cannot list the tables",
            source,
        })
    }

    fn step(
        &mut self,
        work: &mut SqliteJob,
        report: &mut TableReport,
        batch: u32,
    ) -> Result<Step, String> {
        work.step(&mut self.conn, report, batch)
            .map_err(|err| err.to_string())
    }

    fn count_unreadable(&mut self, work: &SqliteJob) -> Result<u64, String> {
        work.count_unreadable(&self.conn)
            .map_err(|err| err.to_string())
    }
}
