//! Inspectors for operators: `ringkv commitlog dump FILE` and `ringkv sstable dump FILE`
//! print what a file holds, record by record, and stop with a clear line at the first
//! damage instead of guessing past it. They only read.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use bytes::{Buf, Bytes};

use crate::storage::commitlog::{record, segment};
use crate::storage::engine::RECORD_PUT;
use crate::version::VersionSet;

/// Longest value shown in full; longer ones are cut and their length given.
const VALUE_SHOWN_BYTES_MAX: usize = 64;

/// Bytes as text where printable, `\xNN` otherwise; cut past `max` bytes.
pub fn escape(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b' '..=b'~' if b != b'\\' => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    if bytes.len() > max {
        let _ = write!(out, "… ({} bytes)", bytes.len());
    }
    out
}

/// Writes one line; a reader that went away (`| head`) ends the dump quietly.
fn line(out: &mut dyn Write, args: std::fmt::Arguments) -> Result<(), String> {
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(format!("writing the dump: {e}")),
    }
}

/// One line describing a key's version set: its clock and every sibling.
pub fn describe_versions(versions: &VersionSet) -> String {
    let clock: Vec<String> = versions
        .context()
        .pairs()
        .iter()
        .map(|(node, counter)| format!("{node:016x}:{counter}"))
        .collect();
    let values: Vec<String> = versions
        .values()
        .map(|v| match &v.value {
            Some(value) => format!(
                "[{} µs] \"{}\"",
                v.timestamp_us,
                escape(value, VALUE_SHOWN_BYTES_MAX)
            ),
            None => format!("[{} µs] tombstone", v.timestamp_us),
        })
        .collect();
    format!(
        "clock {{{}}} values {}",
        clock.join(", "),
        values.join(" | ")
    )
}

/// Decodes a PUT payload (`key_len u16 | key | version set`) into a line.
fn describe_put(payload: &[u8]) -> String {
    let mut buf = Bytes::copy_from_slice(payload);
    if buf.len() < 2 {
        return "undecodable PUT: shorter than its key length".into();
    }
    let key_len = buf.get_u16_le() as usize;
    if buf.len() < key_len {
        return format!("undecodable PUT: key length {key_len} overruns the record");
    }
    let key = buf.split_to(key_len);
    match VersionSet::decode(&buf) {
        Ok((versions, _)) => format!(
            "key \"{}\" {}",
            escape(&key, 256),
            describe_versions(&versions)
        ),
        Err(e) => format!("key \"{}\" undecodable versions: {e}", escape(&key, 256)),
    }
}

/// Prints a commit-log segment: its header, then one line per record, then how it
/// ends (end of data, or the first defect and its offset).
pub fn dump_commitlog(path: &Path, out: &mut dyn Write) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let id = segment::parse_file_name(name)
        .ok_or_else(|| format!("{name} is not a segment file name (20 digits + .log)"))?;
    let header_end = (segment::DATA_OFFSET as usize).min(bytes.len());
    segment::check_header(&bytes[..header_end], id)
        .map_err(|e| format!("{}: bad segment header: {e}", path.display()))?;
    line(
        out,
        format_args!("segment {id} ({} bytes): header ok", bytes.len()),
    )?;
    let seed = segment::record_seed(id);
    let mut offset = segment::DATA_OFFSET as usize;
    let mut records = 0u64;
    while offset < bytes.len() {
        match record::decode(&bytes[offset..], seed, u32::MAX) {
            Ok(record::Decoded::Record {
                kind,
                payload,
                bytes: used,
            }) => {
                let what = if kind == RECORD_PUT {
                    describe_put(payload)
                } else {
                    format!("unknown kind, {} payload bytes", payload.len())
                };
                line(out, format_args!("@{offset} kind {kind}: {what}"))?;
                offset += used;
                records += 1;
            }
            Ok(record::Decoded::End) => break,
            Err(defect) => {
                let _ = writeln!(
                    out,
                    "@{offset} DAMAGED: {defect} (nothing after this is read)"
                );
                break;
            }
        }
    }
    line(
        out,
        format_args!("{records} records, data ends at byte {offset}"),
    )?;
    Ok(())
}

/// Prints an SSTable: its properties, then one line per entry in key order; a damaged
/// block is reported with its offset and the scan goes on with the next block.
pub async fn dump_sstable(path: &Path, out: &mut dyn Write) -> Result<(), String> {
    use crate::storage::sstable::Table;
    let table = Table::open(path, 0).await.map_err(|e| e.to_string())?;
    let p = table.properties();
    let _ = writeln!(
        out,
        "table {} ({} bytes): {} entries in {} blocks, keys \"{}\" .. \"{}\"",
        path.display(),
        table.file_bytes(),
        p.entry_count,
        p.data_block_count,
        escape(&p.smallest_key, 64),
        escape(&p.largest_key, 64)
    );
    let mut blocks = table.iter();
    loop {
        match blocks.next_block().await {
            Ok(Some(entries)) => {
                for (key, value) in entries {
                    let what = match VersionSet::decode(&value) {
                        Ok((versions, _)) => describe_versions(&versions),
                        Err(e) => format!("undecodable versions: {e}"),
                    };
                    line(out, format_args!("key \"{}\" {what}", escape(&key, 256)))?;
                }
            }
            Ok(None) => break,
            Err(e) => {
                line(out, format_args!("DAMAGED: {e}"))?;
            }
        }
    }
    let _ = table.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{run, temp_dir as test_dir};
    use crate::version::{Context, Versioned};

    fn versions(value: &[u8]) -> VersionSet {
        let v = Versioned {
            timestamp_us: 5,
            value: Some(Bytes::copy_from_slice(value)),
        };
        VersionSet::coordinate(&VersionSet::empty(), &Context::empty(), v, 0xAB, 0)
    }

    fn put_payload(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut payload = (key.len() as u16).to_le_bytes().to_vec();
        payload.extend_from_slice(key);
        versions(value).encode_into(&mut payload);
        payload
    }

    #[test]
    fn a_commitlog_dump_shows_every_record_and_stops_at_damage() {
        let dir = test_dir();
        let path = segment::path(dir.path(), 3);
        let mut bytes = segment::encode_header(3).to_vec();
        bytes.resize(segment::DATA_OFFSET as usize, 0);
        for (key, value) in [(&b"alpha"[..], &b"one"[..]), (b"beta", b"two\x00")] {
            record::encode(
                &mut bytes,
                segment::record_seed(3),
                RECORD_PUT,
                &put_payload(key, value),
            );
        }
        let damaged_at = bytes.len();
        record::encode(
            &mut bytes,
            segment::record_seed(3),
            RECORD_PUT,
            &put_payload(b"gamma", b"x"),
        );
        bytes[damaged_at + 9] ^= 0xFF;
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(&path, &bytes).unwrap();

        let mut out = Vec::new();
        dump_commitlog(&path, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("segment 3"), "{out}");
        assert!(
            out.contains("key \"alpha\" clock {00000000000000ab:1} values [5 µs] \"one\""),
            "{out}"
        );
        assert!(out.contains("\"two\\x00\""), "{out}");
        assert!(out.contains(&format!("@{damaged_at} DAMAGED")), "{out}");
        assert!(!out.contains("gamma"), "{out}");
        assert!(out.contains("2 records"), "{out}");
    }

    #[test]
    fn a_bad_header_is_refused_by_name() {
        let dir = test_dir();
        let path = segment::path(dir.path(), 4);
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let err = dump_commitlog(&path, &mut Vec::new()).unwrap_err();
        assert!(err.contains("bad segment header"), "{err}");
    }

    #[test]
    fn an_sstable_dump_shows_every_entry() {
        use crate::storage::sstable::{prime_iopoll_probe, TableBuilder, TableOptions};
        let dir = test_dir();
        let path = dir.path().join("00000000000000000001.sst");
        let mut builder = TableBuilder::new(TableOptions::default());
        for i in 0..50u32 {
            let mut value = Vec::new();
            versions(format!("v{i}").as_bytes()).encode_into(&mut value);
            builder.add(format!("k{i:03}").as_bytes(), &value);
        }
        let (image, _) = builder.finish();
        std::fs::write(&path, image).unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, [0u8; 4096]).unwrap();
        let out = run(move || async move {
            prime_iopoll_probe(&probe).await.unwrap();
            let mut out = Vec::new();
            dump_sstable(&path, &mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        });
        assert!(out.contains("50 entries"), "{out}");
        assert!(
            out.contains("key \"k000\" clock {00000000000000ab:1} values [5 µs] \"v0\""),
            "{out}"
        );
        assert!(out.contains("key \"k049\""), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("key ")).count(), 50);
    }
}
