//! The flags push and pull share: how to reach the registry and who to be there.

use std::io::Read;

use anyhow::{Context, Result, bail};
use snapstore::{Connection, Credentials};

#[derive(Debug, clap::Args)]
pub(crate) struct RegistryArgs {
    /// Blobs transferred at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) jobs: u16,
    /// Speak plain HTTP to a registry that is not on loopback (loopback always is)
    #[arg(long)]
    insecure: bool,
    /// User name for the registry [default: from docker login's config.json]
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the password or token from stdin
    #[arg(long, requires = "username")]
    password_stdin: bool,
}

impl RegistryArgs {
    /// The connection the flags describe; the password is read from stdin now.
    pub(crate) fn connection(&self) -> Result<Connection> {
        let credentials = match &self.username {
            Some(user) => {
                let mut password = String::new();
                std::io::stdin()
                    .read_to_string(&mut password)
                    .context("cannot read the password from stdin")?;
                let password = password.trim_end_matches(['\n', '\r']);
                if password.is_empty() {
                    bail!("--password-stdin: stdin was empty");
                }
                Some(Credentials::new(user.clone(), password))
            }
            None => None,
        };
        Ok(Connection {
            insecure: self.insecure,
            credentials,
        })
    }
}
