//! The on-disk container of every onerec artefact (tokenizer, snapshot), and the only place that
//! knows the serialisation library, so that it can be swapped.
//!
//! Layout, little-endian: 8-byte magic, `u32` format version, `u64` payload length,
//! `u32` CRC-32 of the payload, then the payload (bincode 2, serde, standard config).
//! A reader refuses a file whose magic, version, length or checksum is wrong, with the reason.
//! [`load`] checks the file's kind, size and header before it reads the payload, so that a wrong
//! path (`/dev/zero`, a directory, a huge unrelated file) costs nothing.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// The largest file [`load`] reads (8 GiB): far above any artefact this project writes, and low
/// enough that a wrong path is refused before it can fill memory.
pub const MAX_FILE_BYTES: u64 = 8 << 30;

/// What identifies one kind of artefact: a magic string and the format version this build writes.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub magic: &'static [u8; 8],
    pub version: u32,
    /// Name used in error messages, such as "tokenizer".
    pub kind: &'static str,
}

/// Serialises `value` into a framed byte vector.
pub fn encode<T: Serialize>(format: Format, value: &T) -> Result<Vec<u8>> {
    let payload = bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| Error::External(format!("cannot encode {}: {e}", format.kind)))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(format.magic);
    out.extend_from_slice(&format.version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks the frame and deserialises the payload. `origin` names the source in errors.
pub fn decode<T: DeserializeOwned>(format: Format, bytes: &[u8], origin: &Path) -> Result<T> {
    if bytes.len() < HEADER_LEN {
        return Err(too_short(format, bytes.len() as u64, origin));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    let checksum = check_header(format, header.try_into().expect("header length"), payload.len() as u64, origin)?;
    decode_payload(format, checksum, payload, origin)
}

fn too_short(format: Format, len: u64, origin: &Path) -> Error {
    Error::corrupt(origin, format!("too short to be a {} file ({len} bytes)", format.kind))
}

/// Checks magic, version and that the header declares `payload_len` bytes; returns the payload's
/// checksum.
fn check_header(format: Format, header: &[u8; HEADER_LEN], payload_len: u64, origin: &Path) -> Result<u32> {
    let refuse = |reason: String| Error::corrupt(origin, reason);
    if &header[..8] != format.magic {
        return Err(refuse(format!("not a {} file (wrong magic bytes)", format.kind)));
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != format.version {
        return Err(refuse(format!(
            "{} format version {version}, but this build reads version {}; rebuild the file with this version of onerec",
            format.kind, format.version
        )));
    }
    let declared = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    if payload_len != declared {
        return Err(refuse(format!("truncated or padded: payload is {payload_len} bytes, header says {declared}")));
    }
    Ok(u32::from_le_bytes(header[20..24].try_into().expect("4 bytes")))
}

fn decode_payload<T: DeserializeOwned>(format: Format, checksum: u32, payload: &[u8], origin: &Path) -> Result<T> {
    let refuse = |reason: String| Error::corrupt(origin, reason);
    if crc32fast::hash(payload) != checksum {
        return Err(refuse("checksum mismatch: the file is corrupt".to_string()));
    }
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| refuse(format!("cannot decode {}: {e}", format.kind)))?;
    if used != payload.len() {
        return Err(refuse(format!("{} trailing bytes after the {}", payload.len() - used, format.kind)));
    }
    Ok(value)
}

/// Writes `value` to `path` framed, by atomic rename: readers see the old file or the new one, never half.
pub fn save<T: Serialize>(format: Format, value: &T, path: &Path) -> Result<()> {
    write_atomic(path, &encode(format, value)?)
}

/// Reads and checks a framed file written by [`save`]. Only a regular file of at most
/// [`MAX_FILE_BYTES`] whose header matches its size has its payload read.
pub fn load<T: DeserializeOwned>(format: Format, path: &Path) -> Result<T> {
    let io = |e| Error::io(path, e);
    // Checked before the open too: opening a FIFO would wait for a writer.
    refuse_unless_regular(format, &fs::metadata(path).map_err(io)?, path)?;
    let mut file = File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    refuse_unless_regular(format, &metadata, path)?;
    let size = metadata.len();
    if size > MAX_FILE_BYTES {
        return Err(Error::corrupt(
            path,
            format!("{size} bytes is more than the {MAX_FILE_BYTES} bytes a {} file may have", format.kind),
        ));
    }
    if size < HEADER_LEN as u64 {
        return Err(too_short(format, size, path));
    }
    let mut header = [0; HEADER_LEN];
    file.read_exact(&mut header).map_err(io)?;
    let payload_len = size - HEADER_LEN as u64;
    let checksum = check_header(format, &header, payload_len, path)?;
    let mut payload = Vec::with_capacity(payload_len as usize);
    // One byte past the declared length, to notice a file that grew while it was read.
    file.take(payload_len + 1).read_to_end(&mut payload).map_err(io)?;
    if payload.len() as u64 != payload_len {
        return Err(Error::corrupt(path, "the file changed while it was read"));
    }
    decode_payload(format, checksum, &payload, path)
}

fn refuse_unless_regular(format: Format, metadata: &fs::Metadata, path: &Path) -> Result<()> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_dir() { "a directory" } else { "a device, FIFO or socket" };
    Err(Error::corrupt(path, format!("{what}, not a {} file", format.kind)))
}

/// Writes bytes durably: temporary file in the same folder, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| Error::invalid(path, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: Format = Format { magic: b"ONERECT1", version: 3, kind: "test" };

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.bin");
        let value = (vec![1.5f32, -2.0], "hello".to_string(), 7u64);
        save(FORMAT, &value, &path).unwrap();
        let back: (Vec<f32>, String, u64) = load(FORMAT, &path).unwrap();
        assert_eq!(back, value);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn refuses_truncation_corruption_and_other_versions() {
        let bytes = encode(FORMAT, &vec![1u32, 2, 3, 4]).unwrap();
        let p = Path::new("x.bin");
        let reason = |b: &[u8]| decode::<Vec<u32>>(FORMAT, b, p).unwrap_err().to_string();

        assert!(reason(&bytes[..10]).contains("too short"));
        assert!(reason(&bytes[..bytes.len() - 1]).contains("truncated"));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(reason(&flipped).contains("checksum mismatch"));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(reason(&magic).contains("wrong magic"));
        let newer = encode(Format { version: 4, ..FORMAT }, &vec![1u32]).unwrap();
        assert!(reason(&newer).contains("version 4, but this build reads version 3"));
        assert_eq!(decode::<Vec<u32>>(FORMAT, &bytes, p).unwrap(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn load_refuses_what_is_not_a_regular_file_before_reading_it() {
        let reason = |p: &Path| load::<Vec<u32>>(FORMAT, p).unwrap_err().to_string();
        // Reading /dev/zero would never end; the refusal must come from its kind alone.
        let zero = reason(Path::new("/dev/zero"));
        assert!(zero.contains("/dev/zero") && zero.contains("a device, FIFO or socket"), "{zero}");
        let dir = tempfile::tempdir().unwrap();
        assert!(reason(dir.path()).contains("a directory, not a test file"));
        // Opening a FIFO for reading would wait for a writer.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(reason(&fifo).contains("a device, FIFO or socket"));
    }

    #[test]
    fn load_checks_the_declared_length_and_size_bound_before_reading_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.bin");
        let reason = || load::<Vec<u32>>(FORMAT, &path).unwrap_err().to_string();

        let mut bytes = encode(FORMAT, &vec![1u32, 2, 3]).unwrap();
        bytes[12..20].copy_from_slice(&(1u64 << 40).to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert!(reason().contains("header says 1099511627776"), "{}", reason());

        fs::write(&path, b"short").unwrap();
        assert!(reason().contains("too short"));

        // Sparse, so the test writes nothing; it must be refused on its size alone.
        File::create(&path).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
        assert!(reason().contains("more than the 8589934592 bytes"), "{}", reason());
    }
}
