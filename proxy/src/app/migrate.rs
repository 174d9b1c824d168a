//! `weir migrate`: reads Ingresses from the same sources weir serves from (manifests, or a
//! cluster) and prints what weir would make of those written for ingress-nginx
//! ([`weir_discovery::migrate`]): per Ingress, each `nginx.ingress.kubernetes.io/*`
//! annotation honoured, honoured with a difference, or not supported, and the Ingresses weir
//! would skip. Exit code 0: weir would serve them as ingress-nginx does; 1: something would
//! change; 2: the sources could not be read.
//!
//! Must not: write to the cluster, or start any listener.

use clap::Parser;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, ListParams};
use std::path::PathBuf;
use std::sync::Arc;
use weir_discovery::manifests::ManifestSource;
use weir_discovery::{ClusterObjects, TranslateOptions};

#[derive(Debug, Parser)]
#[command(
    name = "weir migrate",
    bin_name = "weir migrate",
    about = "Reports what weir would make of Ingresses written for ingress-nginx"
)]
pub struct MigrateCli {
    /// YAML files or directories to read (as `weir --manifests`). Without it, the cluster of
    /// `--kubeconfig` (or the in-cluster account, `KUBECONFIG`, `~/.kube/config`).
    #[arg(long = "manifests", value_delimiter = ',')]
    pub manifests: Vec<PathBuf>,

    /// Kubeconfig of the cluster to read.
    #[arg(long, conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// The class whose Ingresses are reported (ingress-nginx's by default).
    #[arg(long, default_value = "nginx")]
    pub ingress_class: String,

    /// The `spec.controller` of that class's IngressClass.
    #[arg(long, default_value = "k8s.io/ingress-nginx")]
    pub ingress_controller: String,

    /// Only this namespace.
    #[arg(long)]
    pub watch_namespace: Option<String>,
}

/// Runs `weir migrate` with `args` (the first being the program name); returns the exit code.
pub fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match MigrateCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let objects = match read_objects(&cli) {
        Ok(objects) => objects,
        Err(e) => {
            eprintln!("weir migrate: {}", e.lines().next().unwrap_or("failed"));
            return 2;
        }
    };
    let opts = TranslateOptions {
        ingress_class: cli.ingress_class,
        controller: cli.ingress_controller,
        watch_namespace: cli.watch_namespace,
        ..TranslateOptions::default()
    };
    let report = weir_discovery::migrate::report(&objects, &opts);
    print!("{}", report.to_text());
    i32::from(report.changes_behaviour())
}

fn read_objects(cli: &MigrateCli) -> Result<ClusterObjects, String> {
    if !cli.manifests.is_empty() {
        let source = ManifestSource::open(cli.manifests.clone()).map_err(|e| e.to_string())?;
        return Ok(source.objects());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = crate::routes::config::kube_client(cli.kubeconfig.as_deref()).await?;
        let ingresses: Api<Ingress> = match &cli.watch_namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let classes: Api<IngressClass> = Api::all(client);
        let list = ListParams::default();
        let ingresses = ingresses
            .list(&list)
            .await
            .map_err(|e| format!("listing Ingresses: {e}"))?;
        let classes = classes
            .list(&list)
            .await
            .map_err(|e| format!("listing IngressClasses: {e}"))?;
        Ok(ClusterObjects {
            ingresses: ingresses.items.into_iter().map(Arc::new).collect(),
            ingress_classes: classes.items.into_iter().map(Arc::new).collect(),
            ..ClusterObjects::default()
        })
    })
}
