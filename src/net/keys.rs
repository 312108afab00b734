//! `marill keys generate`: one CURVE key pair per role, in one directory (in production each
//! process gets only its own secret key and its peers' public keys).

use anyhow::Result;
use clap::Args;
use marill_transport::{KeyPair, SealKeyPair};
use std::path::PathBuf;

/// Arguments of `marill keys generate`.
#[derive(Args)]
pub struct KeysArgs {
    /// Directory for `<role>.key` (secret, mode 0600) and `<role>.pub`.
    #[arg(long)]
    out: PathBuf,
}

/// Writes fresh CURVE key pairs for client, provider, helper, dealer and coordinator, and the
/// provider's and helper's trust-domain sealing keys (`<role>.seal.key`, `<role>.seal.pub`).
pub fn write_all(dir: &std::path::Path) -> Result<()> {
    for role in super::ROLES {
        KeyPair::generate()?.save(dir, role)?;
    }
    for domain in ["provider", "helper"] {
        SealKeyPair::generate().save(dir, domain)?;
    }
    Ok(())
}

/// Runs `marill keys generate`.
pub fn generate(a: KeysArgs) -> Result<()> {
    write_all(&a.out)?;
    eprintln!(
        "wrote key pairs for {:?} and sealing keys for the provider and helper domains to {}",
        super::ROLES,
        a.out.display()
    );
    Ok(())
}
