//! `sluice users add|list|delete`: SCRAM credentials in a stopped broker's data dir, so the
//! first administrator exists before any client can log in. A running broker's credentials
//! are changed with AlterUserScramCredentials (`kafka-configs`, any AdminClient) instead.
//!
//! Credentials are stored salted and iterated (`DATA/meta/users.json`), never the password.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use sluice_proto::storage::Storage;
use sluice_sasl::{CredentialStore, ScramCredential, ScramMechanism};

const USERS_FILE: &str = "meta/users.json";

/// `sluice users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Adds (or replaces) a user's SCRAM credential; the password is read from stdin.
    Add(AddArgs),
    /// Lists users with their mechanisms and iteration counts (never a secret).
    List,
    /// Deletes a user's credentials (all mechanisms, or one).
    Delete(DeleteArgs),
}

/// `sluice users add` options.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// User name (the principal is User:NAME)
    pub name: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins are checked against either)
    #[arg(long, default_value = "SCRAM-SHA-512")]
    pub mechanism: String,
    /// PBKDF2 iterations, 4096 to 16384 [default: 4096, as kafka-configs]
    #[arg(long, default_value_t = 4096)]
    pub iterations: u32,
    /// Read the password from standard input (the only way: never on the command line)
    #[arg(long)]
    pub password_stdin: bool,
}

/// `sluice users delete` options.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// User name
    pub name: String,
    /// Only this mechanism's credential [default: all]
    #[arg(long)]
    pub mechanism: Option<String>,
}

/// `sluice users` options.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// What to do
    #[command(subcommand)]
    pub command: UsersCommand,
}

fn mechanism(name: &str) -> anyhow::Result<ScramMechanism> {
    ScramMechanism::from_name(name)
        .with_context(|| format!("--mechanism '{name}': use SCRAM-SHA-256 or SCRAM-SHA-512"))
}

fn load(fs: &dyn Storage) -> anyhow::Result<CredentialStore> {
    match fs.read_file(USERS_FILE)? {
        None => Ok(CredentialStore::default()),
        Some(raw) => {
            serde_json::from_slice(&raw).with_context(|| format!("{USERS_FILE} is corrupt"))
        }
    }
}

fn save(fs: &dyn Storage, store: &CredentialStore) -> anyhow::Result<()> {
    fs.create_dir_all("meta")?;
    fs.write_file_atomic(USERS_FILE, &serde_json::to_vec_pretty(store)?)
        .with_context(|| format!("writing {USERS_FILE}"))
}

/// Runs a `users` subcommand on `data_dir` (locked: the broker must be stopped).
pub fn run(args: UsersArgs, data_dir: &Path) -> anyhow::Result<()> {
    let fs = crate::disk::DiskStorage::open(data_dir).with_context(|| {
        format!(
            "users are edited on a stopped broker's data dir ({}); on a running one use AlterUserScramCredentials (kafka-configs --alter --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users --entity-name NAME)",
            data_dir.display()
        )
    })?;
    let mut store = load(&fs)?;
    match args.command {
        UsersCommand::Add(a) => {
            let mech = mechanism(&a.mechanism)?;
            if !a.password_stdin {
                bail!("give the password on standard input with --password-stdin");
            }
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("the password read from stdin is empty");
            }
            if a.name.is_empty() || a.name.contains(',') || a.name.contains('=') {
                bail!(
                    "user name '{}' is not allowed (empty, or contains ',' or '=')",
                    a.name
                );
            }
            let salt: [u8; 32] = rand::random();
            let cred =
                ScramCredential::from_password(mech, password.as_bytes(), &salt, a.iterations)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.upsert(&a.name, cred);
            save(&fs, &store)?;
            println!(
                "user {} has a {} credential ({} iterations)",
                a.name,
                mech.name(),
                a.iterations
            );
        }
        UsersCommand::List => {
            for (user, creds) in store.users() {
                let list: Vec<String> = creds
                    .iter()
                    .map(|(m, i)| format!("{}:{i}", m.name()))
                    .collect();
                println!("{user}\t{}", list.join(","));
            }
        }
        UsersCommand::Delete(d) => {
            let removed = match &d.mechanism {
                Some(m) => store.delete(&d.name, mechanism(m)?),
                None => store.delete_user(&d.name),
            };
            if !removed {
                bail!("user {} has no such credential", d.name);
            }
            save(&fs, &store)?;
            println!("deleted {}", d.name);
        }
    }
    Ok(())
}
