//! `hmctl image import FILE --node NODE`: uploads an OCI image archive through the
//! apiserver to the node's agent, which imports it into its containerd
//! (`NodeService.ImportImage`).

use crate::progress::{Progress, Unit};
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use hypermesh_api::v1::{
    ImageImportRequest, ImageImportStart, image_import_request,
    node_service_client::NodeServiceClient,
};
use tokio::io::AsyncReadExt;

use crate::error::ServerError;
use crate::output::print;
use crate::{Context, Exit};

/// Bytes per uploaded message.
const CHUNK: usize = 1024 * 1024;

/// `hmctl image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI image archive (`docker save`/`buildah push oci-archive:`) into a node
    #[command(
        after_help = "The archive is streamed through the apiserver to the node's \
        agent, so this works for nodes behind NAT.\n\nExample:\n  \
        hmctl image import busybox.oci.tar --node host-1"
    )]
    Import(ImportArgs),
}

/// `hmctl image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The OCI image archive (a tar with oci-layout, index.json and blobs/)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The node whose containerd receives the image
    #[arg(long, value_name = "NODE")]
    pub node: String,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `hmctl image ...`.
pub async fn run(ctx: &Context, command: &ImageCommand) -> Result<Exit> {
    let ImageCommand::Import(args) = command;
    let mut file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file
        .metadata()
        .await
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let file_name = args
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let node = args.node.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let start = ImageImportRequest {
        part: Some(image_import_request::Part::Start(ImageImportStart {
            node_name: node.clone(),
            file_name: file_name.clone(),
            size,
        })),
    };
    tx.send(start).await.context("upload channel")?;
    let progress = Progress::new(&format!("uploading {file_name}"), size, Unit::Bytes);
    let reader = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            let chunk = ImageImportRequest {
                part: Some(image_import_request::Part::Chunk(buf[..n].to_vec())),
            };
            if tx.send(chunk).await.is_err() {
                break;
            }
            progress.update(sent, "");
        }
        progress.finish();
        Ok::<u64, std::io::Error>(sent)
    });
    let mut client = NodeServiceClient::new(ctx.connect().await?)
        .max_encoding_message_size(2 * CHUNK)
        .max_decoding_message_size(2 * CHUNK);
    let answer = client
        .import_image(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let sent = reader.await.context("upload task")?;
    let response = answer.map_err(|s| {
        ServerError::from_status(&s)
            .with_context(format!("error importing {file_name} on node {node:?}: "))
    })?;
    let sent = sent.with_context(|| format!("cannot read {}", args.file.display()))?;
    let images = response.into_inner().images;
    let mut out = String::new();
    for image in &images {
        out.push_str(&format!("image {image} imported on node {node}\n"));
    }
    if images.is_empty() {
        out.push_str(&format!(
            "{file_name} ({:.1} MiB) imported on node {node}: it named no image\n",
            mib(sent)
        ));
    }
    print(&out)?;
    Ok(Exit::Success)
}
