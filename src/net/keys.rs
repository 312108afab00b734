//! `marill keys generate`: one CURVE key pair per role, in one directory (in production each
//! process gets only its own secret key and its peers' public keys).

use anyhow::Result;
use clap::Args;
use marill_transport::KeyPair;
use std::path::PathBuf;

/// Arguments of `marill keys generate`.
#[derive(Args)]
pub struct KeysArgs {
    /// Directory for `<role>.key` (secret, mode 0600) and `<role>.pub`.
    #[arg(long)]
    out: PathBuf,
}

/// Writes fresh key pairs for client, provider, helper and dealer.
pub fn generate(a: KeysArgs) -> Result<()> {
    for role in super::ROLES {
        KeyPair::generate()?.save(&a.out, role)?;
    }
    eprintln!(
        "wrote key pairs for {:?} to {}",
        super::ROLES,
        a.out.display()
    );
    Ok(())
}
