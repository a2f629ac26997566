//! Storage: the Kubernetes API, in Kubernetes mode (`serve --kubernetes`, or `--kubeconfig FILE`
//! outside a pod). This module makes the one client every watch and write goes through; what is
//! read and written with it lives beside it.

pub mod watch;

use std::path::PathBuf;

use anyhow::Context as _;

/// How to reach the Kubernetes API (`trustmesh serve`, `trustmesh identity`, `trustmesh ca`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeArgs {
    /// Kubernetes mode: read the registry from the cluster and keep shared state in the
    /// Kubernetes API, as the pod's ServiceAccount (or as --kubeconfig says).
    #[arg(long = "kubernetes", env = "TRUSTMESH_KUBERNETES")]
    pub kubernetes: bool,
    /// A kubeconfig file to reach the API with (outside a pod); implies --kubernetes.
    #[arg(long = "kubeconfig", env = "TRUSTMESH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The control plane's own namespace (its Secrets and ConfigMap); default: the pod's
    /// namespace in a pod, else the kubeconfig context's.
    #[arg(long = "kube-namespace", env = "TRUSTMESH_KUBE_NAMESPACE")]
    pub namespace: Option<String>,
}

/// A connected client and the namespace of the control plane's own objects.
#[derive(Clone)]
pub struct Kube {
    /// The API client (kube-rs).
    pub client: kube::Client,
    /// Where `trustmesh-ca`, `trustmesh-ca-rotation` and `trustmesh-blocklist` live.
    pub namespace: String,
}

impl KubeArgs {
    /// Whether Kubernetes mode is on.
    pub fn enabled(&self) -> bool {
        self.kubernetes || self.kubeconfig.is_some()
    }

    /// The client, when Kubernetes mode is on: from --kubeconfig, else the pod's ServiceAccount
    /// (in-cluster), else the default kubeconfig (`$KUBECONFIG`, `~/.kube/config`).
    pub async fn connect(&self) -> anyhow::Result<Option<Kube>> {
        if !self.enabled() {
            return Ok(None);
        }
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading --kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .with_context(|| format!("using --kubeconfig {}", path.display()))?
            }
            None => kube::Config::infer()
                .await
                .context("--kubernetes: no in-cluster ServiceAccount and no kubeconfig")?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).context("making the Kubernetes client")?;
        Ok(Some(Kube { client, namespace }))
    }
}
