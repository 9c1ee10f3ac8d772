//! The command line: every `hmctl` command, flag and its help text (clap derive).

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

/// hmctl controls a HyperMesh cluster: apply manifests, list, describe and delete objects,
/// read container logs and run commands in containers.
///
/// hmctl reads its config file (server, cluster CA, client certificate and key) from
/// --config, else the HYPERMESH_CONFIG environment variable, else
/// ~/.hypermesh/config.yaml. The apiserver is --server, else HYPERMESH_SERVER, else the
/// file's `server:`, else https://127.0.0.1:7443.
#[derive(Debug, Parser)]
#[command(
    name = "hmctl",
    version,
    propagate_version = true,
    after_help = "Examples:\n  \
        hmctl apply -f examples/           apply every manifest in a directory\n  \
        hmctl get workloads -o wide        list workloads with extra columns\n  \
        hmctl get inst -l app=web -w       watch the instances of app=web\n  \
        hmctl describe node host-1         show a node, its conditions and events\n  \
        hmctl delete wl web --wait         delete a workload and wait until it is gone\n  \
        hmctl scale wl web --replicas 5    change how many instances a workload keeps\n  \
        hmctl rollout status wl web        wait until a workload's update is rolled out\n  \
        hmctl logs -f workload/web         follow the output of one of web's containers\n  \
        hmctl exec -it web-7x2kq -- sh     a shell in a running container\n  \
        hmctl api-resources                list kinds and their short names"
)]
pub struct Cli {
    /// Apiserver URL, e.g. https://127.0.0.1:7443 [env: HYPERMESH_SERVER]; repeat it
    /// (or separate URLs with commas) for several apiservers of one cluster: hmctl
    /// uses the first that answers
    #[arg(long, global = true, value_name = "URL", value_delimiter = ',')]
    pub server: Vec<String>,

    /// Config file with the server and your identity [env: HYPERMESH_CONFIG]
    /// (default ~/.hypermesh/config.yaml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Namespace for namespaced kinds (default: "default")
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// One `hmctl` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from YAML/JSON manifests (files, directories or stdin)
    #[command(
        after_help = "Every document is parsed before anything is sent: one bad \
        document and nothing is applied.\nNamespaces are applied first.\n\nExamples:\n  \
        hmctl apply -f web.yaml\n  hmctl apply -f manifests/ -f extra.yaml\n  \
        cat web.yaml | hmctl apply -f -"
    )]
    Apply(ApplyArgs),
    /// Print Kubernetes manifests (Deployment, Pod, Service, Secret, Namespace) as
    /// HyperMesh manifests, warning on stderr about what cannot be honoured
    #[command(
        after_help = "`hmctl apply -f` converts the same way before sending.\n\n\
        Examples:\n  hmctl convert -f k8s/deployment.yaml\n  \
        hmctl convert -f k8s/ > hypermesh.yaml"
    )]
    Convert(ConvertArgs),
    /// List objects of one or more kinds, or show some by name
    #[command(after_help = "KIND is a kind name, its plural or a short name \
        (workload, workloads, wl); see `hmctl api-resources`. Several kinds are \
        separated by commas (one table each); `all` is workloads, instances and \
        routes.\n\nExamples:\n  \
        hmctl get wl\n  hmctl get wl web -o yaml\n  hmctl get inst -A -o wide\n  \
        hmctl get wl,inst\n  hmctl get all -L app --show-labels\n  \
        hmctl get inst --field-selector status.phase=RUNNING\n  hmctl get wl -w")]
    Get(GetArgs),
    /// Show one or more objects in detail, with their conditions and events
    Describe(DescribeArgs),
    /// Delete objects by name, by label selector, or those named in manifests
    #[command(after_help = "Examples:\n  hmctl delete wl web\n  \
        hmctl delete -f web.yaml --wait\n  hmctl delete inst -l app=web")]
    Delete(DeleteArgs),
    /// Set the number of instances of a workload
    #[command(after_help = "Examples:\n  hmctl scale workload web --replicas 5\n  \
        hmctl scale wl/web --replicas 0")]
    Scale(ScaleArgs),
    /// Follow, list or undo the rollouts of a workload
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// List the kinds of the API with their short names
    ApiResources,
    /// Print the client and server versions and whether the apiserver answers
    Version(VersionArgs),
    /// Show or change ~/.hypermesh/config.yaml
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mark a node unschedulable: no new Instances are placed on it
    Cordon(crate::cordon::NodeArgs),
    /// Mark a node schedulable again
    Uncordon(crate::cordon::NodeArgs),
    /// Cordon a node, then evict every Instance on it and wait until they are gone
    Drain(crate::drain::DrainArgs),
    /// Node administration: trust a Suspect node, revoke or rekey its certificate
    #[command(subcommand)]
    Node(crate::trust::NodeCommand),
    /// Bootstrap tokens nodes join with: `hmctl token create --ttl 1h --uses 1`
    #[command(subcommand)]
    Token(crate::access::TokenCommand),
    /// Users: `hmctl user create NAME --role viewer|editor|admin [-n NS] > NAME.config`
    #[command(subcommand)]
    User(crate::access::UserCommand),
    /// Print a container's output (from its node, through the apiserver)
    #[command(after_help = "Examples:\n  hmctl logs web-7x2kq\n  \
        hmctl logs web-7x2kq -f --tail 20\n  hmctl logs web-7x2kq --previous\n  \
        hmctl logs inst/job-1 -c sidecar --timestamps\n  hmctl logs workload/web")]
    Logs(crate::logs::LogsArgs),
    /// Run a command in a running container
    #[command(
        after_help = "The command runs in the container's environment, user and \
        working directory; hmctl exits with its exit code.\n\nExamples:\n  \
        hmctl exec web-7x2kq -- cat /etc/hostname\n  hmctl exec -it web-7x2kq -- sh\n  \
        echo hi | hmctl exec -i web-7x2kq -- wc -c"
    )]
    Exec(crate::exec::ExecArgs),
    /// Forward a local port to a port of an Instance or Route on any node (via hm-proxy)
    #[command(after_help = "Connections go through the SOCKS5 listener of the \
        hm-proxy on this machine (--proxy), which reaches Instances on any host, also \
        behind NAT.\n\nExamples:\n  hmctl port-forward instance/web-7x2kq 8080:80\n  \
        hmctl port-forward route/web 0:80\n  hmctl port-forward workload/web 9000")]
    PortForward(crate::port_forward::PortForwardArgs),
    /// Images on nodes: `hmctl image import FILE --node NODE`
    #[command(subcommand)]
    Image(crate::image::ImageCommand),
    /// Live cpu and memory of nodes or instances, as their agents report it
    Top(crate::top::TopArgs),
    /// A web dashboard on 127.0.0.1, with your own identity and permissions
    #[command(
        long_about = "Serves a web page about the cluster on 127.0.0.1 and opens it: \
        nodes with their assets and conditions, workloads and instances with their status \
        and events, usage over time, logs, and the actions your role allows (scale, delete, \
        cordon). Every API call is made with your config's identity. The URL carries a \
        secret token made for this launch; requests without it are refused.\n\nExamples:\n  \
        hmctl dashboard\n  hmctl dashboard -n team-a --port 8001 --no-open"
    )]
    Dashboard(crate::dashboard::DashboardArgs),
}

/// `hmctl apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for stdin;
    /// repeatable. HyperMesh manifests, or Kubernetes ones (apps/v1 Deployment, v1 Pod,
    /// Service, Secret, Namespace), converted
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,

    /// Then wait until each Workload is rolled out and each Instance runs
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, e.g. 30s, 2m
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// `hmctl convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Kubernetes manifest file, directory (recursive: *.yaml, *.yml, *.json) or - for
    /// stdin; repeatable
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
}

/// Output formats of `hmctl get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The table with extra columns.
    Wide,
    /// Manifests (several objects: one YAML document each).
    Yaml,
    /// Canonical JSON (several objects: a List).
    Json,
    /// kind.hypermesh.io/name per line.
    Name,
}

/// `hmctl get`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Kind: name, plural or short name (see `hmctl api-resources`); KIND/NAME also
    /// works; several kinds separated by commas (wl,inst); `all` for workloads,
    /// instances and routes
    #[arg(value_name = "KIND")]
    pub kind: String,

    /// Names of the objects to show (default: all)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Output format (default: table)
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Label selector, e.g. app=web,tier!=db,env in (a,b)
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Field selector, e.g. status.phase=RUNNING,spec.nodeName=host-1
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,

    /// List across all namespaces
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// After listing, keep printing objects as they change (reconnecting and resuming
    /// when the server restarts)
    #[arg(short = 'w', long)]
    pub watch: bool,

    /// With -w: say what each change was (ADDED, MODIFIED, DELETED)
    #[arg(long)]
    pub output_watch_events: bool,

    /// Print tables without their header line
    #[arg(long)]
    pub no_headers: bool,

    /// Add a LABELS column with every label of the object
    #[arg(long)]
    pub show_labels: bool,

    /// Add a column with the value of each of these labels, e.g. -L app,tier
    #[arg(
        short = 'L',
        long = "label-columns",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub label_columns: Vec<String>,

    /// Fetch lists in pages of this many objects (0: one request)
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub chunk_size: u32,

    /// With `get events`: only Events about this object, e.g. instance/web-1 or
    /// node/host-1 (Events about cluster-scoped objects are looked for in every
    /// namespace unless -n is given)
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,

    /// With `get secrets`: show the values too (without it only keys and sizes are
    /// shown); needs the `get secrets/data` permission (admins have it)
    #[arg(long)]
    pub reveal: bool,
}

/// `hmctl describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Kind: name, plural or short name; KIND/NAME also works
    #[arg(value_name = "KIND")]
    pub kind: String,

    /// Names of the objects (default: all that match the selector)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Label selector, when no names are given
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Describe objects in every namespace, when no names are given
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `hmctl delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind: name, plural or short name; KIND/NAME also works
    #[arg(value_name = "KIND", required_unless_present = "files")]
    pub kind: Option<String>,

    /// Names of the objects to delete
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Delete the objects named in these manifests (file, directory or -); repeatable
    #[arg(short = 'f', long = "filename", value_name = "FILE", conflicts_with_all = ["kind", "selector", "all"])]
    pub files: Vec<String>,

    /// Delete every object matching this label selector
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Delete every object of the kind in the namespace
    #[arg(long)]
    pub all: bool,

    /// Wait until the objects are gone (finalizers done)
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits, e.g. 30s, 2m, 500ms
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    /// Treat objects that do not exist as deleted
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// `hmctl scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Kind (workload, wl); KIND/NAME also works
    #[arg(value_name = "KIND")]
    pub kind: String,

    /// Names of the workloads to scale
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// The number of instances each workload should keep
    #[arg(long, value_name = "N")]
    pub replicas: u32,
}

/// The workload a `hmctl rollout` command is about.
#[derive(Debug, Args)]
pub struct RolloutTarget {
    /// Kind (workload, wl); KIND/NAME also works
    #[arg(value_name = "KIND")]
    pub kind: String,

    /// Name of the workload (unless given as KIND/NAME)
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

/// `hmctl rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the workload's latest template is rolled out, printing progress
    #[command(
        after_help = "Exits 0 once every instance runs the current template and is \
        available, 1 on --timeout.\n\nExamples:\n  hmctl rollout status workload web\n  \
        hmctl rollout status wl/web --timeout 2m"
    )]
    Status(RolloutStatusArgs),
    /// List the revisions of the workload's template (status.history)
    #[command(after_help = "Examples:\n  hmctl rollout history workload web\n  \
        hmctl rollout history wl web --revision 2")]
    History(RolloutHistoryArgs),
    /// Go back to an earlier template: the previous revision, or --to-revision N
    #[command(after_help = "Examples:\n  hmctl rollout undo workload web\n  \
        hmctl rollout undo wl web --to-revision 1")]
    Undo(RolloutUndoArgs),
}

/// `hmctl rollout status`.
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// The workload.
    #[command(flatten)]
    pub target: RolloutTarget,

    /// Give up after this long, e.g. 30s, 2m (0: wait forever)
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// `hmctl rollout history`.
#[derive(Debug, Args)]
pub struct RolloutHistoryArgs {
    /// The workload.
    #[command(flatten)]
    pub target: RolloutTarget,

    /// Show the template of this revision
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,
}

/// `hmctl rollout undo`.
#[derive(Debug, Args)]
pub struct RolloutUndoArgs {
    /// The workload.
    #[command(flatten)]
    pub target: RolloutTarget,

    /// The revision to go back to (default: the one before the current)
    #[arg(long, value_name = "N")]
    pub to_revision: Option<i64>,
}

/// `hmctl version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only print the client version; do not contact the apiserver
    #[arg(long)]
    pub client: bool,
}

/// `hmctl config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file and the server hmctl would use (and why)
    View,
    /// Store the apiserver URL in the config file
    SetServer {
        /// e.g. http://10.0.0.5:7443
        #[arg(value_name = "URL")]
        url: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
