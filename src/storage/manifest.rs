//! The manifest: the list of a shard's live SSTables, in `<dir>/MANIFEST`.
//!
//! Owns which table files make up the shard's data, the next table id, and which
//! commit-log segments the tables already cover. Never reads a table file: tables are
//! described by [`TableMeta`], plain metadata the flush or compaction that wrote the
//! table hands in. The whole file is replaced atomically (temporary file, fsync,
//! rename, fsync of the directory) after every flush and every compaction, so after a
//! crash it is either the old list or the new one, never a mix.
//!
//! A table becomes live the moment a manifest that lists it is durable; until then it
//! is an orphan ([`orphan_tables`]) and start-up deletes it. A table leaves when a
//! manifest without it is durable; its file is deleted only after that.
//!
//! Loading refuses to guess: a manifest that is short, has another magic or version,
//! a bad CRC, or lists a table whose file is gone stops the shard from starting, with
//! the path and what is wrong. The engine stores an empty manifest when it creates a
//! shard directory, so "no MANIFEST but `.sst` files" means the manifest was lost, and
//! is refused too.
//!
//! Layout (little-endian; drawn in docs/storage.md, "Manifest"):
//!
//! | offset | size | field                                     |
//! |--------|------|-------------------------------------------|
//! | 0      | 8    | magic `RKVMANI\0`                          |
//! | 8      | 4    | format version (2)                        |
//! | 12     | 8    | generation                                |
//! | 20     | 8    | next table id                             |
//! | 28     | 8    | log segment floor                         |
//! | 36     | 8    | clock floor (where the shard clock restarts) |
//! | 44     | 4    | table count                               |
//! | 48     | …    | tables, each 36 bytes + its two keys      |
//! | end-4  | 4    | CRC32C of every byte before it            |
//!
//! Format version 1 (written before last-write-wins existed) has no clock floor: its
//! table count is at 36. It still loads, with floor 0; every store writes version 2.
//!
//! Table: id u64, size_bytes u64, entries u64, created_seq u64, smallest_key_len u16,
//! smallest_key, largest_key_len u16, largest_key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub const MANIFEST_FILE: &str = "MANIFEST";
const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";

const MAGIC: &[u8; 8] = b"RKVMANI\0";
const FORMAT_VERSION: u32 = 2;
/// The format before the clock floor; still read.
const FORMAT_VERSION_V1: u32 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const GENERATION_OFFSET: usize = VERSION_OFFSET + size_of::<u32>();
const NEXT_TABLE_ID_OFFSET: usize = GENERATION_OFFSET + size_of::<u64>();
const LOG_FLOOR_OFFSET: usize = NEXT_TABLE_ID_OFFSET + size_of::<u64>();
const CLOCK_FLOOR_OFFSET: usize = LOG_FLOOR_OFFSET + size_of::<u64>();
const TABLE_COUNT_OFFSET: usize = CLOCK_FLOOR_OFFSET + size_of::<u64>();
/// The fixed header; tables start here.
const HEADER_BYTES: usize = TABLE_COUNT_OFFSET + size_of::<u32>();
/// Version 1's header: no clock floor.
const HEADER_BYTES_V1: usize = HEADER_BYTES - size_of::<u64>();
const CRC_BYTES: usize = size_of::<u32>();

const TABLE_ID_OFFSET: usize = 0;
const TABLE_SIZE_OFFSET: usize = TABLE_ID_OFFSET + size_of::<u64>();
const TABLE_ENTRIES_OFFSET: usize = TABLE_SIZE_OFFSET + size_of::<u64>();
const TABLE_SEQ_OFFSET: usize = TABLE_ENTRIES_OFFSET + size_of::<u64>();
const TABLE_KEYS_OFFSET: usize = TABLE_SEQ_OFFSET + size_of::<u64>();
const KEY_LEN_BYTES: usize = size_of::<u16>();
/// A table with two empty keys: the fewest bytes a table record can take.
const TABLE_MIN_BYTES: usize = TABLE_KEYS_OFFSET + 2 * KEY_LEN_BYTES;

/// Longest key a table record can hold (u16 length, as in commit-log records).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// Most tables one manifest may list: a bound on the decoder, far above what
/// size-tiered compaction leaves behind (thousands of tables would already mean
/// compaction has stopped).
pub const TABLES_MAX: usize = 1 << 20;

/// One live SSTable, as the flush or compaction that wrote it describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// Names the file ([`table_file_name`]); unique in the shard, never reused.
    pub id: u64,
    /// File size: what size-tiered compaction buckets by.
    pub size_bytes: u64,
    /// Keys in the table (each key once, with its whole version set).
    pub entries: u64,
    /// First key of the table: lets a read skip tables whose range misses the key.
    pub smallest_key: Bytes,
    /// Last key of the table, `>= smallest_key`.
    pub largest_key: Bytes,
    /// Flush/compaction order, newer = larger. Version sets merge commutatively, so no
    /// read needs it for correctness; it tells operators and compaction which is newer.
    pub created_seq: u64,
}

/// The shard's list of live tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Bumped by the caller on every store: tells two copies apart in logs and tests.
    pub generation: u64,
    /// Id for the next table written; every listed id is below it, so a crashed flush's
    /// orphan never shares an id with a later table.
    pub next_table_id: u64,
    /// Live tables, in no particular order; ids unique.
    pub tables: Vec<TableMeta>,
    /// Commit-log segments with ids below this are covered by the tables: recovery
    /// replays from this segment on, and the log may remove the ones below.
    pub log_segment_floor: u64,
    /// Every clock the shard gave out for the live tables is at most this: the
    /// last-write-wins clocks of a `lww` shard, this node's counters in a `dvv` one.
    /// The shard's clock restarts above it, so a write made after a restart always
    /// beats what the tables hold (`lww`) and never reuses a counter whose entry was
    /// pruned (`dvv`), even if the wall clock stepped back.
    pub clock_floor: u64,
}

/// Why a manifest could not be loaded, stored or scanned.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}; refusing to start (restore the manifest from a backup)")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{dir} holds {tables} table file(s) but no {MANIFEST_FILE}: the list of live tables \
         is lost; refusing to start rather than guess which tables are live"
    )]
    MissingManifest { dir: PathBuf, tables: usize },
    #[error("{path}: table {id} is listed in {MANIFEST_FILE} but its file is missing")]
    MissingTable { path: PathBuf, id: u64 },
}

/// The file name of table `id`: 20 decimal digits, so names sort like ids.
pub fn table_file_name(id: u64) -> String {
    format!("{id:020}.sst")
}

/// The id in a table file name, if `name` is one ([`table_file_name`]'s inverse).
fn parse_table_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".sst")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Manifest {
    /// A shard with no tables yet: what a new shard directory starts with.
    pub fn empty() -> Manifest {
        Manifest {
            generation: 0,
            next_table_id: 1,
            tables: Vec::new(),
            log_segment_floor: 0,
            clock_floor: 0,
        }
    }

    /// Reads `dir/MANIFEST`. A missing file is an empty manifest only if `dir` holds no
    /// `.sst` file; every listed table must have its file in `dir`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let tables = scan(dir)?.iter().filter(|f| f.id.is_some()).count();
                if tables > 0 {
                    return Err(ManifestError::MissingManifest {
                        dir: dir.to_path_buf(),
                        tables,
                    });
                }
                return Ok(Manifest::empty());
            }
            Err(source) => {
                return Err(ManifestError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
        };
        let manifest =
            Manifest::decode(&bytes).map_err(|reason| ManifestError::Corrupt { path, reason })?;
        for table in &manifest.tables {
            let path = dir.join(table_file_name(table.id));
            match fs::symlink_metadata(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ManifestError::MissingTable { path, id: table.id })
                }
                Err(source) => {
                    return Err(ManifestError::Io {
                        op: "stat",
                        path,
                        source,
                    })
                }
            }
        }
        Ok(manifest)
    }

    /// Replaces `dir/MANIFEST` atomically: after a crash it is the old or the new one.
    /// An error is final for the shard (an fsync is never retried).
    pub fn store(&self, dir: &Path) -> Result<(), ManifestError> {
        write_atomically(dir, &self.encode())
    }

    /// The file's bytes (module doc). Panics on a manifest that breaks its invariants
    /// (a bug of the caller, checked again on decode).
    pub fn encode(&self) -> Vec<u8> {
        self.assert_invariants();
        let mut b = Vec::with_capacity(HEADER_BYTES + self.tables.len() * 64 + CRC_BYTES);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&self.next_table_id.to_le_bytes());
        b.extend_from_slice(&self.log_segment_floor.to_le_bytes());
        b.extend_from_slice(&self.clock_floor.to_le_bytes());
        b.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        debug_assert_eq!(b.len(), HEADER_BYTES);
        for t in &self.tables {
            b.extend_from_slice(&t.id.to_le_bytes());
            b.extend_from_slice(&t.size_bytes.to_le_bytes());
            b.extend_from_slice(&t.entries.to_le_bytes());
            b.extend_from_slice(&t.created_seq.to_le_bytes());
            for key in [&t.smallest_key, &t.largest_key] {
                b.extend_from_slice(&(key.len() as u16).to_le_bytes());
                b.extend_from_slice(key);
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a whole file. Never panics: every count and length is checked against
    /// the bytes left before anything is allocated. The error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        if b.len() < HEADER_BYTES_V1 + CRC_BYTES {
            return Err(format!(
                "is {} bytes, shorter than the {} of an empty manifest",
                b.len(),
                HEADER_BYTES_V1 + CRC_BYTES
            ));
        }
        if &b[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            return Err("bad magic (not a ringkv manifest)".into());
        }
        let (body, crc) = b.split_at(b.len() - CRC_BYTES);
        let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
        if crc != crc32c::crc32c(body) {
            return Err("CRC32C mismatch (the file is damaged)".into());
        }
        let mut r = Reader { b: body, pos: 0 };
        r.pos = VERSION_OFFSET;
        let version = r.u32()?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_V1 {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION_V1} and \
                 {FORMAT_VERSION}"
            ));
        }
        let generation = r.u64()?;
        let next_table_id = r.u64()?;
        let log_segment_floor = r.u64()?;
        let clock_floor = if version == FORMAT_VERSION_V1 {
            0
        } else {
            r.u64()?
        };
        let count = r.u32()? as usize;
        if count > TABLES_MAX || count > r.remaining() / TABLE_MIN_BYTES {
            return Err(format!(
                "table count {count} does not fit in the {} bytes left",
                r.remaining()
            ));
        }
        let mut tables = Vec::with_capacity(count);
        for index in 0..count {
            tables.push(r.table().map_err(|e| format!("table {index}: {e}"))?);
        }
        if r.remaining() != 0 {
            return Err(format!("{} bytes follow the last table", r.remaining()));
        }
        let manifest = Manifest {
            generation,
            next_table_id,
            tables,
            log_segment_floor,
            clock_floor,
        };
        manifest.check_invariants()?;
        Ok(manifest)
    }

    /// Ids are unique, non-zero and below `next_table_id`; key ranges are ordered.
    fn check_invariants(&self) -> Result<(), String> {
        if self.tables.len() > TABLES_MAX {
            return Err(format!("{} tables, over {TABLES_MAX}", self.tables.len()));
        }
        let mut ids: Vec<u64> = self.tables.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
            return Err(format!("table {} is listed twice", pair[0]));
        }
        for t in &self.tables {
            if t.id == 0 || t.id >= self.next_table_id {
                return Err(format!(
                    "table id {} outside 1..{} (next table id)",
                    t.id, self.next_table_id
                ));
            }
            if t.smallest_key > t.largest_key {
                return Err(format!("table {}: smallest key > largest key", t.id));
            }
            if t.smallest_key.len() > KEY_BYTES_MAX || t.largest_key.len() > KEY_BYTES_MAX {
                return Err(format!("table {}: key over {KEY_BYTES_MAX} bytes", t.id));
            }
        }
        Ok(())
    }

    fn assert_invariants(&self) {
        if let Err(reason) = self.check_invariants() {
            panic!("manifest invariant broken: {reason}");
        }
    }
}

/// Table files left in `dir` by a flush or compaction that crashed before (or after)
/// the manifest changed: `.sst` files the manifest does not list, and every
/// `.sst.tmp`. Start-up deletes them. Other names are ignored. Sorted by path.
pub fn orphan_tables(dir: &Path, manifest: &Manifest) -> Result<Vec<PathBuf>, ManifestError> {
    let listed: ahash::AHashSet<u64> = manifest.tables.iter().map(|t| t.id).collect();
    let mut orphans: Vec<PathBuf> = scan(dir)?
        .into_iter()
        .filter(|f| !matches!(f.id, Some(id) if listed.contains(&id)))
        .map(|f| f.path)
        .collect();
    orphans.sort();
    Ok(orphans)
}

/// A table file or a table temporary file found in the directory.
struct FoundFile {
    path: PathBuf,
    /// `Some` for a finished table (`NNN.sst`), `None` for a `.sst.tmp`.
    id: Option<u64>,
}

fn scan(dir: &Path) -> Result<Vec<FoundFile>, ManifestError> {
    let io = |op: &'static str| {
        move |source| ManifestError::Io {
            op,
            path: dir.to_path_buf(),
            source,
        }
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("read dir"))? {
        let entry = entry.map_err(io("read dir"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let id = parse_table_file_name(name);
        if id.is_some() || name.ends_with(".sst.tmp") {
            found.push(FoundFile {
                path: entry.path(),
                id,
            });
        }
    }
    Ok(found)
}

/// Writes `dir/MANIFEST` through `MANIFEST.tmp`: write, fsync, rename, fsync the dir.
/// (`node_meta::write_atomically` does the same but returns start-up errors.)
fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    let tmp = dir.join(MANIFEST_TMP_FILE);
    let path = dir.join(MANIFEST_FILE);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { op, path, source }
    };
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync dir", dir))
}

/// Bounds-checked little-endian reads over the manifest body.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "truncated at byte {}: needs {n} bytes, {} left",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn key(&mut self) -> Result<Bytes, String> {
        let len = usize::from(self.u16()?);
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }

    fn table(&mut self) -> Result<TableMeta, String> {
        let start = self.pos;
        let t = TableMeta {
            id: self.u64()?,
            size_bytes: self.u64()?,
            entries: self.u64()?,
            created_seq: self.u64()?,
            smallest_key: self.key()?,
            largest_key: self.key()?,
        };
        debug_assert!(self.pos - start >= TABLE_MIN_BYTES);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::test_support::temp_dir as test_dir;

    fn table(id: u64, smallest: &'static [u8], largest: &'static [u8]) -> TableMeta {
        TableMeta {
            id,
            size_bytes: 4096,
            entries: 2,
            smallest_key: Bytes::from_static(smallest),
            largest_key: Bytes::from_static(largest),
            created_seq: id - 1,
        }
    }

    /// The example drawn in docs/storage.md ("Manifest").
    fn example() -> Manifest {
        Manifest {
            generation: 3,
            next_table_id: 8,
            tables: vec![table(7, b"a", b"b")],
            log_segment_floor: 5,
            clock_floor: 9,
        }
    }

    #[rustfmt::skip]
    const EXAMPLE_BYTES: [u8; 90] = [
        0x52, 0x4b, 0x56, 0x4d, 0x41, 0x4e, 0x49, 0x00, // magic "RKVMANI\0"
        0x02, 0x00, 0x00, 0x00,                         // format version 2
        0x03, 0, 0, 0, 0, 0, 0, 0,                      // generation 3
        0x08, 0, 0, 0, 0, 0, 0, 0,                      // next table id 8
        0x05, 0, 0, 0, 0, 0, 0, 0,                      // log segment floor 5
        0x09, 0, 0, 0, 0, 0, 0, 0,                      // lww clock floor 9
        0x01, 0x00, 0x00, 0x00,                         // 1 table
        0x07, 0, 0, 0, 0, 0, 0, 0,                      //   id 7
        0x00, 0x10, 0, 0, 0, 0, 0, 0,                   //   size_bytes 4096
        0x02, 0, 0, 0, 0, 0, 0, 0,                      //   entries 2
        0x06, 0, 0, 0, 0, 0, 0, 0,                      //   created_seq 6
        0x01, 0x00, b'a',                               //   smallest key "a"
        0x01, 0x00, b'b',                               //   largest key "b"
        0xc6, 0x96, 0xd7, 0xf0,                         // CRC32C 0xF0D796C6
    ];

    /// CRC32C of an empty version-2 manifest.
    const EMPTY_CRC: [u8; 4] = [0x15, 0x03, 0xc4, 0xd4];

    /// The example as format version 1 wrote it (no clock floor): it still loads.
    #[rustfmt::skip]
    const EXAMPLE_V1_BYTES: [u8; 82] = [
        0x52, 0x4b, 0x56, 0x4d, 0x41, 0x4e, 0x49, 0x00, // magic "RKVMANI\0"
        0x01, 0x00, 0x00, 0x00,                         // format version 1
        0x03, 0, 0, 0, 0, 0, 0, 0,                      // generation 3
        0x08, 0, 0, 0, 0, 0, 0, 0,                      // next table id 8
        0x05, 0, 0, 0, 0, 0, 0, 0,                      // log segment floor 5
        0x01, 0x00, 0x00, 0x00,                         // 1 table
        0x07, 0, 0, 0, 0, 0, 0, 0,                      //   id 7
        0x00, 0x10, 0, 0, 0, 0, 0, 0,                   //   size_bytes 4096
        0x02, 0, 0, 0, 0, 0, 0, 0,                      //   entries 2
        0x06, 0, 0, 0, 0, 0, 0, 0,                      //   created_seq 6
        0x01, 0x00, b'a',                               //   smallest key "a"
        0x01, 0x00, b'b',                               //   largest key "b"
        0xbe, 0x14, 0xfc, 0x06,                         // CRC32C 0x06FC14BE
    ];

    #[test]
    fn golden_bytes() {
        assert_eq!(example().encode(), EXAMPLE_BYTES);
        assert_eq!(Manifest::decode(&EXAMPLE_BYTES).unwrap(), example());
        let empty = Manifest::empty().encode();
        assert_eq!(empty.len(), HEADER_BYTES + CRC_BYTES);
        assert_eq!(&empty[HEADER_BYTES..], &EMPTY_CRC);
    }

    #[test]
    fn a_version_1_manifest_loads_with_clock_floor_zero() {
        let v1 = Manifest::decode(&EXAMPLE_V1_BYTES).unwrap();
        assert_eq!(
            v1,
            Manifest {
                clock_floor: 0,
                ..example()
            }
        );
        assert_eq!(v1.encode()[VERSION_OFFSET], 2, "stored again as version 2");
    }

    #[test]
    fn every_bit_flip_is_refused() {
        for i in 0..EXAMPLE_BYTES.len() {
            for bit in 0..8 {
                let mut bad = EXAMPLE_BYTES;
                bad[i] ^= 1 << bit;
                assert!(Manifest::decode(&bad).is_err(), "flip of bit {bit} at {i}");
            }
        }
    }

    /// Re-seals `body` with a correct CRC, to reach the checks behind the CRC.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    #[test]
    fn checks_behind_the_crc_say_what_is_wrong() {
        let body = EXAMPLE_BYTES[..EXAMPLE_BYTES.len() - CRC_BYTES].to_vec();
        let cases: [(usize, u8, &str); 4] = [
            (VERSION_OFFSET, 3, "format version 3"),
            (NEXT_TABLE_ID_OFFSET, 7, "outside 1..7"),
            (TABLE_COUNT_OFFSET, 200, "table count 200"),
            (TABLE_COUNT_OFFSET, 0, "bytes follow the last table"),
        ];
        for (offset, value, expected) in cases {
            let mut b = body.clone();
            b[offset] = value;
            let err = Manifest::decode(&sealed(b)).unwrap_err();
            assert!(err.contains(expected), "{offset}: {err}");
        }
        let mut b = body.clone();
        b[TABLE_COUNT_OFFSET] = 2;
        b.extend_from_slice(&body[HEADER_BYTES..]);
        let err = Manifest::decode(&sealed(b)).unwrap_err();
        assert!(err.contains("listed twice"), "{err}");
        let mut reversed = body;
        let n = reversed.len();
        reversed.swap(n - 1, n - 4);
        let err = Manifest::decode(&sealed(reversed)).unwrap_err();
        assert!(err.contains("smallest key > largest key"), "{err}");
    }

    #[test]
    #[should_panic(expected = "listed twice")]
    fn encoding_a_broken_manifest_panics() {
        let mut m = example();
        m.tables.push(table(7, b"x", b"y"));
        m.encode();
    }

    #[test]
    fn missing_manifest_is_empty_only_without_tables() {
        let dir = test_dir();
        fs::write(dir.path().join("00000000000000000001.sst.tmp"), b"x").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::empty());
        fs::write(dir.path().join(table_file_name(1)), b"x").unwrap();
        let err = Manifest::load(dir.path()).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::MissingManifest { tables: 1, .. }
        ));
        assert!(err.to_string().contains("no MANIFEST"), "{err}");
    }

    #[test]
    fn store_then_load_and_replace() {
        let dir = test_dir();
        let mut m = example();
        fs::write(dir.path().join(table_file_name(7)), b"t").unwrap();
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert!(!dir.path().join(MANIFEST_TMP_FILE).exists());
        m.generation += 1;
        m.tables.clear();
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
    }

    #[test]
    fn corrupt_or_incomplete_manifest_refuses_to_load() {
        let dir = test_dir();
        fs::write(dir.path().join(MANIFEST_FILE), &EXAMPLE_BYTES[..50]).unwrap();
        let err = Manifest::load(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestError::Corrupt { .. }));
        assert!(err.to_string().contains("MANIFEST"), "{err}");
        fs::write(dir.path().join(MANIFEST_FILE), EXAMPLE_BYTES).unwrap();
        let err = Manifest::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, ManifestError::MissingTable { id: 7, .. }),
            "{err}"
        );
    }

    #[test]
    fn orphans_are_unlisted_tables_and_temporaries() {
        let dir = test_dir();
        for name in [
            table_file_name(3),
            table_file_name(7),
            table_file_name(9),
            "00000000000000000010.sst.tmp".to_string(),
            "7.sst".to_string(),
            "MANIFEST".to_string(),
            "00000000000000000001.log".to_string(),
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        let mut m = example();
        m.next_table_id = 10;
        m.tables.push(table(3, b"c", b"c"));
        let orphans = orphan_tables(dir.path(), &m).unwrap();
        let expected: Vec<PathBuf> = ["00000000000000000009.sst", "00000000000000000010.sst.tmp"]
            .iter()
            .map(|n| dir.path().join(n))
            .collect();
        assert_eq!(orphans, expected);
    }

    #[test]
    fn table_file_names_sort_like_ids() {
        assert_eq!(table_file_name(42), "00000000000000000042.sst");
        assert_eq!(
            parse_table_file_name(&table_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_table_file_name("0000000000000000042.sst"), None);
        assert_eq!(parse_table_file_name("+0000000000000000042.sst"), None);
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        let key = proptest::collection::vec(any::<u8>(), 0..12);
        let t = (any::<u64>(), any::<u64>(), any::<u64>(), key.clone(), key);
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(t, 0..8),
        )
            .prop_map(|(generation, log_segment_floor, clock_floor, raw)| {
                let tables: Vec<TableMeta> = raw
                    .into_iter()
                    .enumerate()
                    .map(|(i, (size_bytes, entries, created_seq, a, b))| {
                        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                        TableMeta {
                            id: i as u64 * 3 + 1,
                            size_bytes,
                            entries,
                            smallest_key: lo.into(),
                            largest_key: hi.into(),
                            created_seq,
                        }
                    })
                    .collect();
                Manifest {
                    generation,
                    next_table_id: tables.len() as u64 * 3 + 1,
                    tables,
                    log_segment_floor,
                    clock_floor,
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip_and_every_truncation_is_refused(m in arb_manifest()) {
            let bytes = m.encode();
            prop_assert_eq!(Manifest::decode(&bytes).unwrap(), m);
            for len in 0..bytes.len() {
                prop_assert!(Manifest::decode(&bytes[..len]).is_err());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(Manifest::decode(&longer).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Manifest::decode(&bytes);
            let mut magic = MAGIC.to_vec();
            magic.extend_from_slice(&bytes);
            // Without a matching CRC nothing loads (a 2^-32 chance of a collision).
            prop_assert!(Manifest::decode(&magic).is_err());
            // Past the CRC: random bodies with a valid seal must still never panic.
            let _ = Manifest::decode(&sealed(magic));
        }
    }
}
