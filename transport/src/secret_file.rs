//! Secret key files (the CURVE `<name>.key` and the sealing `<name>.seal.key`): written with
//! mode 0600 from the moment they exist, never readable by other users even briefly, and
//! refused on load when other users may read or write them (like ssh's "UNPROTECTED PRIVATE
//! KEY FILE").
//!
//! Writing creates a fresh file beside the target (`O_CREAT | O_EXCL`, mode 0600), writes and
//! syncs it, then renames it over the target. The secret therefore never enters an existing
//! file: a previous file with a looser mode (say 0644), which someone may hold open already, is
//! replaced, not rewritten, and the new file has mode 0600 whatever that old one had.
//!
//! Loading refuses a file whose "other" permission bits (`mode & 0o007`) are set. Group bits
//! stay allowed: the Helm chart (charts/marill/templates/_helpers.tpl) mounts the key Secrets
//! with `defaultMode: 0440` and the pod's `fsGroup`, so a key arrives as a file of mode 0440
//! (the kubelet adds at most the read-only group mask 0440 for the fsGroup) reached through
//! the Secret volume's `..data` symlinks; the check looks at the opened file itself (`fstat`
//! follows the symlinks), so such a mount loads.

use crate::TransportError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The permission bits of a secret file as written.
pub(crate) const SECRET_MODE: u32 = 0o600;

fn key_err(path: &Path, why: impl ToString) -> TransportError {
    TransportError::Key {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Refuses permission bits `mode` of the secret file `path` when other users may read or write
/// it (any of `mode & 0o007`); owner and group bits are accepted.
pub(crate) fn check_mode(path: &Path, mode: u32) -> Result<(), TransportError> {
    if mode & 0o007 == 0 {
        return Ok(());
    }
    Err(key_err(
        path,
        format!(
            "UNPROTECTED PRIVATE KEY FILE: mode {:04o} lets other users read or write this \
             secret key, so it is refused; run `chmod 600 {}` (group read, as in 0440, is \
             fine)",
            mode & 0o7777,
            path.display()
        ),
    ))
}

/// Reads the secret file `path` (symlinks followed) after checking its mode with
/// [`check_mode`] on the opened file.
pub(crate) fn read(path: &Path) -> Result<String, TransportError> {
    let mut file = File::open(path).map_err(|e| key_err(path, e))?;
    let meta = file.metadata().map_err(|e| key_err(path, e))?;
    check_mode(path, meta.permissions().mode())?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| key_err(path, e))?;
    Ok(text)
}

/// A name beside `path` for the file being written (unique within this process).
fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
thread_local! {
    /// (mode, length) of the last secret file right after its creation, before any write.
    pub(crate) static CREATED: std::cell::Cell<Option<(u32, u64)>> =
        const { std::cell::Cell::new(None) };
}

/// Writes `contents` to the secret file `path` with mode 0600 (see the module comment):
/// created 0600 beside `path`, synced, and renamed over it.
pub(crate) fn write(path: &Path, contents: &[u8]) -> Result<(), TransportError> {
    let tmp = temp_beside(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(SECRET_MODE)
        .open(&tmp)
        .map_err(|e| key_err(&tmp, e))?;
    let written = (|| {
        #[cfg(test)]
        {
            let m = file.metadata()?;
            CREATED.with(|c| c.set(Some((m.permissions().mode(), m.len()))));
        }
        // exactly 0600 whatever the umask (it can only have removed bits)
        file.set_permissions(std::fs::Permissions::from_mode(SECRET_MODE))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(key_err(path, e));
    }
    // the rename survives a crash once the directory is synced (best effort)
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// The privacy checks every kind of secret key file passes (shared by the key types' tests):
/// saving over a 0644 file that a reader holds open never shows the reader the secret and
/// leaves mode 0600; loading refuses modes that others can read, naming `chmod 600`, and
/// accepts group read (the Helm chart's 0440 mounts).
#[cfg(test)]
pub(crate) fn assert_key_file_private(
    sk: &Path,
    save: impl Fn(),
    load: impl Fn() -> Result<(), TransportError>,
) {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(sk.parent().expect("a key file's folder")).unwrap();
    std::fs::write(sk, "old").unwrap();
    let chmod = |m: u32| std::fs::set_permissions(sk, std::fs::Permissions::from_mode(m)).unwrap();
    chmod(0o644);
    let mut snoop = std::fs::File::open(sk).unwrap();
    save();
    let mut seen = String::new();
    snoop.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "old", "the secret went into a 0644 file");
    let mode = std::fs::metadata(sk).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    for loose in [0o644, 0o604] {
        chmod(loose);
        let e = load().unwrap_err().to_string();
        assert!(
            e.contains("chmod 600") && e.contains(&format!("{loose:04o}")),
            "{e}"
        );
    }
    for fine in [0o640, 0o440] {
        chmod(fine);
        load().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("marill-secret-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A new secret file is 0600 from its creation, before a byte is written.
    #[test]
    fn a_new_secret_file_is_0600_from_the_start() {
        let d = dir("new");
        let p = d.join("a.key");
        CREATED.with(|c| c.set(None));
        write(&p, b"secret").unwrap();
        let (mode, len) = CREATED.with(|c| c.get()).expect("created");
        assert_eq!((mode & 0o077, len), (0, 0), "mode {mode:o} at creation");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(read(&p).unwrap(), "secret");
        // nothing left beside it
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Overwriting a world-readable file: the old file (which anyone could have opened) never
    /// sees the new secret, and the result is 0600.
    #[test]
    fn overwriting_a_loose_file_never_puts_the_secret_in_it() {
        let d = dir("loose");
        let p = d.join("a.key");
        std::fs::write(&p, "old").unwrap();
        chmod(&p, 0o644);
        let mut snoop = File::open(&p).unwrap(); // opened while it was readable
        write(&p, b"new secret").unwrap();
        let mut seen = String::new();
        snoop.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "old");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(read(&p).unwrap(), "new secret");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Other users' bits refuse the file (naming path, mode and `chmod 600`); group read,
    /// through a symlink as in a Kubernetes Secret volume, is accepted.
    #[test]
    fn loose_modes_are_refused_and_group_read_is_fine() {
        let d = dir("modes");
        let p = d.join("a.key");
        std::fs::write(&p, "s").unwrap();
        for mode in [0o644, 0o604, 0o602, 0o666] {
            chmod(&p, mode);
            let e = read(&p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{mode:04o}"))
                    && e.contains("chmod 600")
                    && e.contains(&p.display().to_string()),
                "{e}"
            );
        }
        std::fs::create_dir(d.join("..data")).unwrap();
        let real = d.join("..data").join("b.key");
        std::fs::write(&real, "s").unwrap();
        let link = d.join("b.key");
        std::os::unix::fs::symlink("..data/b.key", &link).unwrap();
        for mode in [0o600, 0o640, 0o440, 0o400] {
            chmod(&real, mode);
            assert_eq!(read(&link).unwrap(), "s", "mode {mode:o}");
        }
        chmod(&real, 0o444);
        assert!(read(&link).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
