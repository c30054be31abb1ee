//! Fetches MovieLens-100K exactly as RecBole 1.2.1 ships it, checked byte for byte.
//!
//! The quality protocol (DESIGN.md §3) is defined on the files inside the PyPI wheel
//! `recbole==1.2.1`. pip downloads the wheel (it already knows the user's index, proxy and
//! certificates) and Python's `zipfile` unpacks it, so no HTTP or zip code lives here; SHA-256
//! sums then make sure the files are the reference data and nothing else.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The folder, inside the data directory, that receives the files.
pub const ML100K_DIR: &str = "ml-100k";

/// The files we take from the wheel, with their SHA-256.
const ML100K_SHA256: &[(&str, &str)] = &[
    ("ml-100k.inter", "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
    ("ml-100k.item", "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"),
    ("ml-100k.user", "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972"),
];
const REQUIREMENT: &str = "recbole==1.2.1";
const WHEEL: &str = "recbole-1.2.1-py3-none-any.whl";
const MEMBER_DIR: &str = "recbole/dataset_example/ml-100k/";
const PYTHON: &str = "python3";
const ADVICE: &str =
    "install python3 and pip, or download recbole-1.2.1-py3-none-any.whl yourself and pass --wheel PATH";
/// How many lines of a failed command's error output are quoted.
const STDERR_TAIL_LINES: usize = 15;

/// Copies the named members of a wheel into a folder: `wheel out prefix name…`.
const EXTRACT: &str = r#"
import os, sys, zipfile
wheel, out, prefix, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    archive = zipfile.ZipFile(wheel)
except (OSError, zipfile.BadZipFile) as e:
    sys.exit(f"{wheel}: not a readable wheel: {e}")
with archive:
    for name in names:
        try:
            data = archive.read(prefix + name)
        except KeyError:
            sys.exit(f"{wheel} has no member {prefix}{name}: is it the recbole 1.2.1 wheel?")
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
"#;

/// Makes sure `dir/ml-100k` holds RecBole's MovieLens-100K (`.inter`, `.item`, `.user`) and
/// returns that folder. Verified files are reused; otherwise the files come from `wheel` or,
/// without one, from `pip download recbole==1.2.1`. The folder appears complete or not at all.
pub fn fetch_ml100k(dir: &Path, wheel: Option<&Path>) -> Result<PathBuf> {
    fetch_checked(dir, wheel, ML100K_SHA256)
}

/// [`fetch_ml100k`] against a given table of (file name, SHA-256), so tests can use a fake wheel.
fn fetch_checked(dir: &Path, wheel: Option<&Path>, expected: &[(&str, &str)]) -> Result<PathBuf> {
    let target = dir.join(ML100K_DIR);
    if holds_verified(&target, expected)? {
        return Ok(target);
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let scratch = Scratch::create(dir.join(format!(".{ML100K_DIR}.partial-{}", std::process::id())))?;
    let wheel = match wheel {
        Some(wheel) if wheel.is_file() => wheel.to_path_buf(),
        Some(wheel) => return Err(Error::External(format!("{}: no such wheel file; {ADVICE}", wheel.display()))),
        None => download(&scratch.0)?,
    };
    let files = scratch.0.join(ML100K_DIR);
    fs::create_dir(&files).map_err(|e| Error::io(&files, e))?;
    extract(&wheel, &files, expected)?;
    for &(name, sha256) in expected {
        let path = files.join(name);
        let actual = sha256_hex(&path).map_err(|e| Error::io(&path, e))?;
        if actual != sha256 {
            return Err(Error::External(format!(
                "checksum mismatch for {name} from {}: SHA-256 is {actual}, expected {sha256}; \
                 the wheel is damaged or not the recbole 1.2.1 release: {ADVICE}",
                wheel.display()
            )));
        }
    }
    install(&files, &target, &scratch.0)?;
    Ok(target)
}

/// Whether `folder` already holds every expected file with the right hash. A damaged file is
/// reported on stderr, since the caller only sees that it is fetched again.
fn holds_verified(folder: &Path, expected: &[(&str, &str)]) -> Result<bool> {
    for &(name, sha256) in expected {
        let path = folder.join(name);
        match sha256_hex(&path) {
            Ok(actual) if actual == sha256 => {}
            Ok(actual) => {
                eprintln!(
                    "warning: {}: SHA-256 is {actual}, expected {sha256}; fetching {ML100K_DIR} again",
                    path.display()
                );
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(true)
}

fn sha256_hex(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Downloads the wheel with pip into `scratch` and returns its path.
fn download(scratch: &Path) -> Result<PathBuf> {
    let into = scratch.join("download");
    let args = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"];
    let args = args.iter().map(OsStr::new).chain([OsStr::new(REQUIREMENT), OsStr::new("-d"), into.as_os_str()]);
    python(args, &format!("downloading {REQUIREMENT} with pip"))?;
    let wheel = into.join(WHEEL);
    if !wheel.is_file() {
        return Err(Error::External(format!("pip finished but {} is missing; {ADVICE}", wheel.display())));
    }
    Ok(wheel)
}

/// Copies the expected files out of the wheel into `files`.
fn extract(wheel: &Path, files: &Path, expected: &[(&str, &str)]) -> Result<()> {
    let args = [OsStr::new("-c"), OsStr::new(EXTRACT), wheel.as_os_str(), files.as_os_str(), OsStr::new(MEMBER_DIR)];
    let names = expected.iter().map(|(name, _)| OsStr::new(name));
    python(args.into_iter().chain(names), &format!("extracting {ML100K_DIR} from {}", wheel.display()))
}

/// Runs Python; a failure quotes the end of its error output and says what to do instead.
fn python<'a>(args: impl IntoIterator<Item = &'a OsStr>, what: &str) -> Result<()> {
    let output = Command::new(PYTHON).args(args).stdin(Stdio::null()).output().map_err(|e| {
        let reason = match e.kind() {
            io::ErrorKind::NotFound => format!("{PYTHON} was not found"),
            _ => format!("could not start {PYTHON}: {e}"),
        };
        Error::External(format!("{what}: {reason}; {ADVICE}"))
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
    Err(Error::External(format!("{what} failed ({}):\n{tail}\nTo fix it, {ADVICE}.", output.status)))
}

/// Moves the verified `files` to `target`, first moving any previous copy into `scratch`.
fn install(files: &Path, target: &Path, scratch: &Path) -> Result<()> {
    let previous = scratch.join("previous");
    let had_previous = target.symlink_metadata().is_ok();
    if had_previous {
        fs::rename(target, &previous).map_err(|e| Error::io(target, e))?;
    }
    fs::rename(files, target).map_err(|e| {
        if had_previous {
            // Best effort: put the old copy back rather than leave nothing.
            let _ = fs::rename(&previous, target);
        }
        Error::io(target, e)
    })
}

/// A working folder beside the target, removed however the fetch ends.
struct Scratch(PathBuf);

impl Scratch {
    fn create(path: PathBuf) -> Result<Self> {
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io(path, e)),
            _ => {}
        }
        fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [(&str, &str); 3] =
        [("ml-100k.inter", "user_id:token\n1\n"), ("ml-100k.item", "item_id:token\n2\n"), ("ml-100k.user", "x\n")];

    /// A zip holding `members` (name, text) under the wheel's data folder, made with Python as
    /// CI has no copy of the real wheel.
    fn fake_wheel(dir: &Path, members: &[(&str, &str)]) -> PathBuf {
        let wheel = dir.join("fake.whl");
        let script = "import sys, zipfile\n\
                      with zipfile.ZipFile(sys.argv[1], 'w') as z:\n    \
                          for name, text in zip(sys.argv[3::2], sys.argv[4::2]):\n        \
                              z.writestr(sys.argv[2] + name, text)";
        let status = Command::new(PYTHON)
            .args(["-c", script])
            .arg(&wheel)
            .arg(MEMBER_DIR)
            .args(members.iter().flat_map(|&(name, text)| [name, text]))
            .status()
            .unwrap();
        assert!(status.success());
        wheel
    }

    /// The hash table that the fake files satisfy.
    fn table() -> Vec<(&'static str, String)> {
        FILES.iter().map(|&(name, text)| (name, format!("{:x}", Sha256::digest(text)))).collect()
    }

    fn fetch(dir: &Path, wheel: &Path, table: &[(&str, String)]) -> Result<PathBuf> {
        let table: Vec<(&str, &str)> = table.iter().map(|(name, sha)| (*name, sha.as_str())).collect();
        fetch_checked(dir, Some(wheel), &table)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_matching_wheel_is_unpacked_and_the_folder_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = fake_wheel(tmp.path(), &FILES);
        let data = tmp.path().join("data");
        let folder = fetch(&data, &wheel, &table()).unwrap();
        assert_eq!(folder, data.join(ML100K_DIR));
        for (name, text) in FILES {
            assert_eq!(fs::read_to_string(folder.join(name)).unwrap(), text);
        }
        assert_eq!(entries(&data), [ML100K_DIR], "scratch folder left behind");
        // Reuse never opens the wheel: a path that does not exist would be an error otherwise.
        assert_eq!(fetch(&data, &tmp.path().join("absent.whl"), &table()).unwrap(), folder);
    }

    #[test]
    fn a_file_with_the_wrong_hash_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = fake_wheel(tmp.path(), &FILES);
        let mut table = table();
        let good = std::mem::replace(&mut table[1].1, "0".repeat(64));
        let err = fetch(tmp.path(), &wheel, &table).unwrap_err().to_string();
        assert!(err.contains("ml-100k.item") && err.contains(&good) && err.contains(&"0".repeat(64)), "{err}");
        assert_eq!(entries(tmp.path()), ["fake.whl"], "nothing may be installed");
    }

    #[test]
    fn a_damaged_copy_is_fetched_again() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = fake_wheel(tmp.path(), &FILES);
        let folder = fetch(tmp.path(), &wheel, &table()).unwrap();
        fs::write(folder.join("ml-100k.user"), "tampered").unwrap();
        fs::remove_file(folder.join("ml-100k.inter")).unwrap();
        fetch(tmp.path(), &wheel, &table()).unwrap();
        assert_eq!(fs::read_to_string(folder.join("ml-100k.user")).unwrap(), FILES[2].1);
        assert_eq!(fs::read_to_string(folder.join("ml-100k.inter")).unwrap(), FILES[0].1);
    }

    #[test]
    fn a_wrong_or_missing_wheel_says_what_to_do() {
        let tmp = tempfile::tempdir().unwrap();
        let wheel = fake_wheel(tmp.path(), &FILES[..2]);
        let err = fetch(tmp.path(), &wheel, &table()).unwrap_err().to_string();
        assert!(err.contains(&format!("has no member {MEMBER_DIR}ml-100k.user")) && err.contains(ADVICE), "{err}");
        let err = fetch(tmp.path(), &tmp.path().join("absent.whl"), &table()).unwrap_err().to_string();
        assert!(err.contains("absent.whl: no such wheel file") && err.contains("--wheel PATH"), "{err}");
        assert_eq!(entries(tmp.path()), ["fake.whl"]);
    }
}
