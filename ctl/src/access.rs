//! Who may reach the cluster: `hmctl token create|list` (bootstrap tokens nodes join
//! with), `hmctl user create|revoke` (certificates and role bindings for people), and
//! the revocation behind `hmctl node revoke`.
//!
//! Token secrets are made here and only their SHA-256 is sent; a user's private key
//! is made here and never leaves this machine except in the config printed to stdout.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use hypermesh_api::v1::{
    Certificate, DeleteRequest, IssueRequest, JoinResponse, JoinToken, JoinTokenSpec, ListRequest,
    ObjectMeta, RoleBinding, RoleBindingSpec, Subject,
};
use hypermesh_api::{Api, Resource};
use hypermesh_trust::client_config::ClientConfigFile;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::error::ServerError;
use crate::output::print;
use crate::{Context, Exit};

/// `hmctl token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token nodes join with, and print the join command
    #[command(
        after_help = "The token is printed once; the cluster keeps only its hash.\n\n\
        Example:\n  hmctl token create --ttl 1h --uses 1\n  \
        hm-agent --server https://CP:7443 --join-token <token> --ca-cert-hash <hash>"
    )]
    Create(TokenCreateArgs),
    /// Delete a bootstrap token (by its name, the part before the dot)
    Delete {
        /// The token's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `hmctl token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid (90s, 30m, 1h, 24h)
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse_duration)]
    pub ttl: Duration,
    /// How many nodes may join with it (0: any number until it expires)
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// What the token is for
    #[arg(long, default_value = "")]
    pub description: String,
}

/// `hmctl user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Issue a certificate for a user, bind a role, and print a ready config
    #[command(
        after_help = "The role applies cluster-wide, or only in the namespace \
        given with -n.\nRoles: viewer (read, no Secrets), editor (write workloads, \
        instances, routes, secrets), admin (everything), or any Role object.\n\n\
        Examples:\n  hmctl user create alice --role admin > alice.config\n  \
        hmctl user create bob --role editor -n team-a > bob.config\n  \
        HYPERMESH_CONFIG=bob.config hmctl get instances -n team-a"
    )]
    Create(UserCreateArgs),
    /// Revoke every certificate of a user: refused at once, open connections closed
    Revoke {
        /// The user's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `hmctl user create`.
#[derive(Debug, Args)]
pub struct UserCreateArgs {
    /// The user's name (the identity becomes user:NAME)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The role to bind: viewer, editor, admin, or a Role's name
    #[arg(long)]
    pub role: String,
    /// How long the certificate is valid
    #[arg(long, default_value = "8760h", value_parser = crate::duration::parse_duration)]
    pub validity: Duration,
}

/// Letters and digits for token names and secrets.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(len: usize) -> Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("reading /dev/urandom")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CA pin of the config hmctl uses.
fn ca_pin(ctx: &Context) -> Result<Option<String>> {
    let Some(pem) = &ctx.ca_pem else {
        return Ok(None);
    };
    let der = hypermesh_trust::pki::first_certificate(pem)?;
    Ok(Some(hypermesh_trust::pki::spki_pin(&der)?))
}

/// Runs `hmctl token ...`.
pub async fn token(ctx: &Context, command: &TokenCommand) -> Result<Exit> {
    let api = Api::<JoinToken>::new(ctx.connect().await?);
    match command {
        TokenCommand::Create(args) => {
            let name = random_string(6)?;
            let secret = random_string(16)?;
            let expires = SystemTime::now() + args.ttl;
            let token = JoinToken {
                metadata: Some(ObjectMeta {
                    name: name.clone(),
                    ..Default::default()
                }),
                spec: Some(JoinTokenSpec {
                    secret_hash: sha256_hex(secret.as_bytes()),
                    expires: Some(hypermesh_api::time::from_system_time(expires)),
                    uses: args.uses,
                    description: args.description.clone(),
                }),
                status: None,
            };
            api.create(&token)
                .await
                .map_err(|s| ServerError::from_status(&s).with_context("creating the token"))?;
            let pin = ca_pin(ctx)?;
            let uses = match args.uses {
                0 => "any number of joins".to_string(),
                1 => "1 join".to_string(),
                n => format!("{n} joins"),
            };
            let mut out = format!(
                "token: {name}.{secret}\nca-cert-hash: {}\n\n# valid for {uses} until {}\n",
                pin.as_deref()
                    .unwrap_or("<none: this server runs without TLS>"),
                hypermesh_api::time::rfc3339(expires, false),
            );
            if let Some(pin) = pin {
                out.push_str(&format!(
                    "# join a node with:\n#   hm-agent --server {} --join-token {name}.{secret} --ca-cert-hash {pin}\n",
                    ctx.server
                ));
            }
            print(&out)?;
            Ok(Exit::Success)
        }
        TokenCommand::Delete { name } => {
            api.delete(DeleteRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| ServerError::for_object(&s, "jointokens", name))?;
            print(&format!("jointoken.hypermesh.io/{name} deleted\n"))?;
            Ok(Exit::Success)
        }
    }
}

/// Runs `hmctl user ...`.
pub async fn user(ctx: &Context, command: &UserCommand) -> Result<Exit> {
    match command {
        UserCommand::Create(args) => {
            let config = create_user(ctx, args).await?;
            let text = serde_saphyr::to_string(&config).context("encoding the config")?;
            print(&text)?;
            Ok(Exit::Success)
        }
        UserCommand::Revoke { name } => {
            let revoked = revoke(ctx, &format!("user:{name}")).await?;
            print(&format!("user/{name}: {revoked} certificate(s) revoked\n"))?;
            Ok(Exit::Success)
        }
    }
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Binds the role and issues the certificate; returns the user's config.
pub async fn create_user(ctx: &Context, args: &UserCreateArgs) -> Result<ClientConfigFile> {
    if !valid_user_name(&args.name) {
        bail!(
            "user name {:?}: use lower-case letters, digits and '-' (at most 63)",
            args.name
        );
    }
    if ctx.ca_pem.is_none() {
        bail!("this config has no certificateAuthority: users exist only on a TLS server");
    }
    let channel = ctx.connect().await?;
    let bindings = Api::<RoleBinding>::new(channel.clone());
    let namespaces: Vec<String> = ctx.namespace.iter().cloned().collect();
    let binding_name = match namespaces.first() {
        Some(ns) => format!("user-{}-{}-{ns}", args.name, args.role),
        None => format!("user-{}-{}", args.name, args.role),
    };
    let binding = RoleBinding {
        metadata: Some(ObjectMeta {
            name: binding_name.clone(),
            labels: [("hypermesh.io/user".to_string(), args.name.clone())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        spec: Some(RoleBindingSpec {
            role: args.role.clone(),
            subjects: vec![Subject {
                kind: "User".into(),
                name: args.name.clone(),
            }],
            namespaces,
        }),
        status: None,
    };
    match bindings.create(&binding).await {
        Ok(_) => {}
        Err(s) if s.code() == Code::AlreadyExists => {}
        Err(s) => {
            return Err(ServerError::from_status(&s)
                .with_context(format!("creating rolebinding {binding_name}"))
                .into());
        }
    }
    let key = hypermesh_trust::pki::new_key()?;
    let csr = hypermesh_trust::pki::make_csr(&key, &format!("user:{}", args.name))?;
    let certificates = Api::<Certificate>::new(channel);
    let hours = u32::try_from(args.validity.as_secs().div_ceil(3600)).unwrap_or(u32::MAX);
    let issued: JoinResponse = certificates
        .call(
            "Issue",
            IssueRequest {
                identity: format!("user:{}", args.name),
                groups: Vec::new(),
                csr_pem: csr,
                validity_hours: hours.max(1),
            },
        )
        .await
        .map_err(|s| ServerError::from_status(&s).with_context("issuing the certificate"))?;
    Ok(ClientConfigFile {
        server: Some(ctx.server.clone()),
        certificate_authority: Some(issued.ca_pem),
        client_certificate: Some(issued.certificate_pem),
        client_key: Some(key.serialize_pem()),
        servers: Vec::new(),
    })
}

/// Marks every certificate of `identity` revoked; returns how many were.
pub async fn revoke(ctx: &Context, identity: &str) -> Result<usize> {
    let api = Api::<Certificate>::new(ctx.connect().await?);
    let (certs, _) = api
        .list_all(ListRequest {
            field_selector: format!("spec.identity={identity}"),
            ..Default::default()
        })
        .await
        .map_err(|s| ServerError::from_status(&s).with_context("listing certificates"))?;
    let mut revoked = 0;
    for mut cert in certs {
        let spec = cert.spec.get_or_insert_with(Default::default);
        if spec.revoked {
            continue;
        }
        spec.revoked = true;
        let name = cert.meta().name.clone();
        let mut updated = api
            .update(&cert)
            .await
            .map_err(|s| ServerError::for_object(&s, "certificates", &name))?;
        updated.status = Some(hypermesh_api::v1::CertificateStatus {
            revoked_at: Some(hypermesh_api::time::now()),
        });
        // The revocation is in force; the timestamp is for people reading it.
        let _ = api.update_status(&updated).await;
        revoked += 1;
    }
    Ok(revoked)
}
