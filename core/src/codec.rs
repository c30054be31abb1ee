//! The on-disk container of every onerec artefact (tokenizer, snapshot), and the only place that
//! knows the serialisation library, so that it can be swapped.
//!
//! Layout, little-endian: 8-byte magic, `u32` format version, `u64` payload length,
//! `u32` CRC-32 of the payload, then the payload (bincode 2, serde, standard config).
//! A reader refuses a file whose magic, version, length or checksum is wrong, with the reason.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

const HEADER_LEN: usize = 8 + 4 + 8 + 4;

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
    let refuse = |reason: String| Error::corrupt(origin, reason);
    if bytes.len() < HEADER_LEN {
        return Err(refuse(format!("too short to be a {} file ({} bytes)", format.kind, bytes.len())));
    }
    if &bytes[..8] != format.magic {
        return Err(refuse(format!("not a {} file (wrong magic bytes)", format.kind)));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != format.version {
        return Err(refuse(format!(
            "{} format version {version}, but this build reads version {}; rebuild the file with this version of onerec",
            format.kind, format.version
        )));
    }
    let declared = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != declared {
        return Err(refuse(format!("truncated or padded: payload is {} bytes, header says {declared}", payload.len())));
    }
    let checksum = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
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

/// Reads and checks a framed file written by [`save`].
pub fn load<T: DeserializeOwned>(format: Format, path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(format, &bytes, path)
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
}
